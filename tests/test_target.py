import math

import pytest
import torch

from likex.errors import LikexError
from likex.target import (
    TargetSpec,
    rate_target_log,
    read_words,
    select_tokens,
    tilt_target_log,
    uniform_target,
)


def test_seed_counts(token_strings):
    assert select_tokens(TargetSpec(like="x"), token_strings).n_tokens == 896
    assert select_tokens(TargetSpec(like="X"), token_strings).n_tokens == 90
    assert select_tokens(TargetSpec(like="x", ignore_case=True), token_strings).n_tokens == 984


def test_regex_and_union(token_strings):
    by_regex = select_tokens(TargetSpec(regex="x"), token_strings)
    assert by_regex.n_tokens == 896
    ends = select_tokens(TargetSpec(regex="ing$"), token_strings)
    assert all(token_strings[i].endswith("ing") for i in ends.ids)
    union = select_tokens(TargetSpec(like="x", token_ids=(15496,)), token_strings)
    assert union.n_tokens == 897 and 15496 in union.ids


def test_words_single_and_multi_token(tmp_path, token_strings):
    f = tmp_path / "words.txt"
    f.write_text("cat\ndog\nxylophonequartz\n")
    from likex.models.tokenizer import gpt2

    ts = select_tokens(TargetSpec(words=read_words(f)), token_strings, gpt2().encode)
    texts = {token_strings[i] for i in ts.ids}
    assert {"cat", " cat", "dog", " dog"} <= texts
    # the multi-token word is a trie entry (no longer skipped): its first tokens start it
    assert ts.words is not None and ts.words.entries == ("cat", "dog", "xylophonequartz")
    assert tuple(gpt2().encode(" xylophonequartz")) in ts.words.variants
    with pytest.raises(LikexError, match="tokenizer"):
        select_tokens(TargetSpec(words=read_words(f)), token_strings)


@pytest.mark.parametrize(
    "spec, message",
    [
        (TargetSpec(like="qqqqzzzz"), "matches no token"),
        (TargetSpec(regex="(unclosed"), "invalid regex"),
        (TargetSpec(), "no target given"),
        (TargetSpec(token_ids=(50257,)), "out of range"),
        (TargetSpec(regex=""), "matches every token"),
    ],
)
def test_bad_specs(spec, message, token_strings):
    with pytest.raises(LikexError, match=message):
        select_tokens(spec, token_strings)


def test_missing_words_file(tmp_path):
    with pytest.raises(LikexError, match="not found"):
        read_words(tmp_path / "nope.txt")


def test_uniform_target():
    mask = torch.tensor([True, False, True, False])
    q = uniform_target(mask)
    assert torch.allclose(q, torch.tensor([0.5, 0.0, 0.5, 0.0]))


def _random_reference(vocab=12, rows=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(rows, vocab, generator=g) * 2, dim=-1)


def test_rate_target_closed_form():
    log_r = _random_reference()
    mask = torch.zeros(12, dtype=torch.bool)
    mask[[1, 4, 7]] = True
    q = rate_target_log(log_r, mask, 0.3).exp()
    assert torch.allclose(q.sum(-1), torch.ones(3), atol=1e-6)
    assert torch.allclose(q[:, mask].sum(-1), torch.full((3,), 0.3), atol=1e-6)
    # Inside and outside M, Q keeps R's proportions.
    ratio = q / log_r.exp()
    assert torch.allclose(ratio[:, mask], ratio[:, mask][:, :1].expand(-1, 3), atol=1e-5)


def test_rate_target_is_the_kl_minimiser():
    """Among distributions with mass A on M, the closed form minimises KL(Q || R)."""
    # float64: the two optima agree to ~1e-8 nats, below float32's resolution of this KL
    log_r = _random_reference(rows=1)[0].double()
    mask = torch.zeros(12, dtype=torch.bool)
    mask[[0, 5]] = True
    rate = 0.4
    closed = rate_target_log(log_r, mask, rate)

    # Numeric optimum: parametrise Q = A softmax(a) on M, (1-A) softmax(b) off M.
    a = torch.zeros(int(mask.sum()), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(int((~mask).sum()), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([a, b], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14)

    def log_q():
        out = torch.empty(12, dtype=torch.float64)
        out[mask] = math.log(rate) + torch.log_softmax(a, 0)
        out[~mask] = math.log(1 - rate) + torch.log_softmax(b, 0)
        return out

    def closure():
        opt.zero_grad()
        lq = log_q()
        kl = (lq.exp() * (lq - log_r)).sum()
        kl.backward()
        return kl

    opt.step(closure)
    with torch.no_grad():
        numeric = log_q()
        kl_numeric = float((numeric.exp() * (numeric - log_r)).sum())
        kl_closed = float((closed.exp() * (closed - log_r)).sum())
    assert torch.allclose(numeric.exp(), closed.exp(), atol=1e-4)
    assert kl_closed <= kl_numeric + 1e-7


def test_tilt_target():
    log_r = _random_reference()
    mask = torch.zeros(12, dtype=torch.bool)
    mask[[2, 3]] = True
    q = tilt_target_log(log_r, mask, 1.5).exp()
    assert torch.allclose(q.sum(-1), torch.ones(3), atol=1e-6)
    expected = log_r.exp() * torch.exp(1.5 * mask.float())
    assert torch.allclose(q, expected / expected.sum(-1, keepdim=True), atol=1e-6)
    assert torch.allclose(tilt_target_log(log_r, mask, 0.0), log_r, atol=1e-6)


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_bad_rates(rate):
    with pytest.raises(LikexError, match="rate must be strictly between"):
        rate_target_log(_random_reference(), torch.tensor([True] + [False] * 11), rate)


def test_bad_beta():
    with pytest.raises(LikexError, match="beta must be a finite"):
        tilt_target_log(_random_reference(), torch.tensor([True] + [False] * 11), float("inf"))


def test_spec_describes_itself_and_round_trips():
    spec = TargetSpec(like="x", ignore_case=True, regex="^a", words=("cat",), token_ids=(1, 2))
    assert spec.describe() == (
        "tokens containing 'x', any case or tokens matching /^a/, any case or 1 listed words "
        "or 2 listed token ids"
    )
    assert TargetSpec(like="x").describe() == "tokens containing 'x'"
    assert TargetSpec().describe() == "nothing"
    d = spec.to_dict()
    assert d == {
        "like": "x",
        "ignore_case": True,
        "regex": "^a",
        "words": ["cat"],
        "token_ids": [1, 2],
    }
    assert TargetSpec.from_dict(d) == spec
    assert TargetSpec.from_dict({}) == TargetSpec()
    assert TargetSpec.from_dict({"words": None, "token_ids": None}) == TargetSpec()


def test_selection_by_case_words_and_ids_is_exact():
    toks = ["ax", "AX", " cat", "Cat", "dog", "b"]
    assert select_tokens(TargetSpec(like="x"), toks).ids == [0]
    assert select_tokens(TargetSpec(like="x", ignore_case=True), toks).ids == [0, 1]
    assert select_tokens(TargetSpec(regex="X", ignore_case=True), toks).ids == [0, 1]
    assert select_tokens(TargetSpec(regex="^a"), toks).ids == [0]
    words = select_tokens(TargetSpec(words=("cat",)), toks)
    assert words.ids == [2] and words.words is None  # single-token words: no trie
    with pytest.raises(LikexError, match="need the model's tokenizer"):
        select_tokens(TargetSpec(words=("cat", "emu")), toks)  # "emu" takes several tokens
    assert select_tokens(TargetSpec(words=("cat",), ignore_case=True), toks).ids == [2, 3]
    ids = select_tokens(TargetSpec(token_ids=(0, 5)), toks)
    assert ids.ids == [0, 5] and ids.n_tokens == 2 and ids.vocab_size == 6
    with pytest.raises(LikexError, match=r"out of range \[0, 6\): \[6, -1\]"):
        select_tokens(TargetSpec(token_ids=(6, -1, 2)), toks)
    with pytest.raises(LikexError, match="needs a non-empty string"):
        select_tokens(TargetSpec(like=""), toks)
    with pytest.raises(LikexError, match=r"the target \(tokens matching /\./\) matches every"):
        select_tokens(TargetSpec(regex="."), toks)


def test_read_words_one_entry_a_line(tmp_path):
    f = tmp_path / "w.txt"
    f.write_text("cat dog\n\n  emu\t", encoding="utf-8")
    assert read_words(f) == ("cat dog", "emu")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(LikexError, match="is empty"):
        read_words(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(LikexError, match="not UTF-8"):
        read_words(tmp_path / "bin.txt")
