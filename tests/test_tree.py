"""Tree attention (likex.models.tree): one pass of a window and its branches gives what plain
forward passes of "window prefix + branch" give, on the built-in GPT and on a transformers
Llama."""

import pytest
import torch

from likex.models.gpt import build_model, preset_config
from likex.models.tree import NEG, Tree, tree_forward

# A tree of 5 nodes below a position: a -> b -> c, a -> d, e (tokens 3, 5, 7, 9, 11)
PATHS = [(3,), (3, 5), (3, 5, 7), (3, 9), (11,)]


def _tree() -> Tree:
    tokens = torch.tensor([p[-1] for p in PATHS])
    depth = torch.tensor([len(p) for p in PATHS])
    anc = torch.tensor(
        [[PATHS[i][: len(PATHS[j])] == PATHS[j] for j in range(5)] for i in range(5)]
    )
    return Tree(tokens, depth, anc)


def _check(model, vocab: int) -> None:
    torch.manual_seed(0)
    idx = torch.randint(0, vocab, (2, 9))
    at = torch.tensor([[0, 4, 8], [6, 2, -1]])
    include = torch.ones(2, 3, 5, dtype=torch.bool)
    include[1, 0, [1, 2]] = False  # a node left out with its descendant
    pick = torch.tensor([[1, 2], [4, -1], [0, 6], [8, 10], [12, 13]])
    window, picked = tree_forward(model, idx, at, include, _tree(), pick)
    with torch.no_grad():
        assert torch.allclose(window, model(idx, positions="all"), atol=1e-5)
        for b in range(2):
            for m in range(3):
                t = int(at[b, m])
                if t < 0:
                    assert (picked[b, m] == NEG).all()
                    continue
                for n, path in enumerate(PATHS):
                    seq = torch.cat([idx[b, : t + 1], torch.tensor(path)])[None]
                    plain = model(seq, positions="last")[0]
                    got = picked[b, m, n]
                    if not include[b, m, n]:
                        assert (got == NEG).all()
                        continue
                    for c, tok in enumerate(pick[n].tolist()):
                        want = NEG if tok < 0 else float(plain[tok])
                        assert float(got[c]) == pytest.approx(want, abs=1e-4)


def test_tree_forward_equals_plain_passes_on_the_builtin_gpt():
    model = build_model(preset_config("tiny", vocab_size=17, block_size=16), 0).eval()
    _check(model, 17)


def test_tree_forward_splits_a_long_row_into_passes(monkeypatch):
    """A budget smaller than a row's branches: the nodes of each position stay together."""
    import likex.models.tree as tree

    monkeypatch.setattr(tree, "ROW_BUDGET", 17 * 12)  # 12 tokens a pass: window + one slot
    model = build_model(preset_config("tiny", vocab_size=17, block_size=16), 1).eval()
    _check(model, 17)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_tree_forward_equals_plain_passes_on_a_transformers_llama(tiny_llama, attention):
    from likex.models.hf import load_hf

    model = load_hf(str(tiny_llama)).eval()
    model.hf.config._attn_implementation = attention
    _check(model, model.config.vocab_size)


def test_positions_beyond_the_context_are_refused():
    model = build_model(preset_config("tiny", vocab_size=17, block_size=16), 0).eval()
    idx = torch.randint(0, 17, (1, 14))
    at = torch.tensor([[13]])
    with pytest.raises(ValueError, match="beyond the context"):
        tree_forward(
            model,
            idx,
            at,
            torch.ones(1, 1, 5, dtype=torch.bool),
            _tree(),
            torch.zeros(5, 1, dtype=torch.long),
        )
