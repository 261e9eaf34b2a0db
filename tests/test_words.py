"""Word and phrase targets: the trie, the context-dependent target, word counting."""

import math

import pytest
import torch

from likex.errors import ConfigError, LikexError
from likex.measurement.rates import PromptKind, measure_words
from likex.objective import Rate, Tilt, Uniform
from likex.stats.intervals import rate_interval
from likex.target import TargetSet, TargetSpec, read_words, select_tokens
from likex.words import (
    NEG,
    WordCounter,
    build_trie,
    completions,
    plant_prefixes,
    word_rate_log,
    word_sets,
)

# A toy vocabulary: id -> text. " ice" is a whole entry and the start of " ice cream".
STRINGS = ["a", " b", " ice", " cream", " co", "ca", "-", "cola", " cold", "\n", " x", "y"]
V = len(STRINGS)
ICE, CREAM, CO, CA, DASH, COLA, COLD = 2, 3, 4, 5, 6, 7, 8
# entries: "ice" (one token), "ice cream" and "coca-cola" (several), "cold" shares " co"'s
# nothing but "co" shares the first token of "coca-cola" with "co ld"? no: see VARIANTS
VARIANTS = [(ICE,), (ICE, CREAM), (CO, CA, DASH, COLA), (CO, COLD)]


def toy_trie():
    return build_trie(("ice", "ice cream", "coca-cola", "cold"), VARIANTS, STRINGS)


def test_trie_nodes_shared_prefixes_and_an_entry_that_is_a_prefix():
    trie = toy_trie()
    nodes = {tuple(int(t) for t in p if t >= 0): i for i, p in enumerate(trie.paths)}
    # " co" is shared by two variants: one node, both continuations
    assert set(trie.children[nodes[(CO,)]].nonzero().flatten().tolist()) == {CA, COLD}
    assert trie.children[nodes[(CO, CA)]].nonzero().flatten().tolist() == [DASH]
    # " ice" is an entry itself and the prefix of another: a terminal node
    assert bool(trie.terminal[nodes[(ICE,)]]) and not bool(trie.terminal[nodes[(CO,)]])
    assert trie.start.nonzero().flatten().tolist() == [ICE, CO]
    assert len(nodes) == 4  # (ice), (co), (co ca), (co ca -)


def _ctx(*tail):
    return torch.tensor([[0, 1, 0, *tail]])


def test_sets_inside_a_word_and_elsewhere():
    trie = toy_trie()
    inside, allowed = word_sets(trie, torch.cat([_ctx(1, 1, 1), _ctx(0, CO, CA), _ctx(1, 1, CO)]))
    assert inside[:, 0].tolist() == [False, True, True]
    assert allowed[0, 0].nonzero().flatten().tolist() == [ICE, CO]  # start a word
    assert allowed[1, 0].nonzero().flatten().tolist() == [DASH]  # finish coca-cola
    assert allowed[2, 0].nonzero().flatten().tolist() == [CA, COLD]
    # after " ice" the word is whole: not inside, but " cream" may follow as well as a start
    inside, allowed = word_sets(trie, _ctx(1, 1, ICE))
    assert not bool(inside[0, 0])
    assert allowed[0, 0].nonzero().flatten().tolist() == [ICE, CREAM, CO]


def test_all_positions_agree_with_the_last_position_of_each_prefix():
    trie = toy_trie()
    idx = torch.tensor([[CO, CA, DASH, COLA, 1, ICE, CO]])
    inside, allowed = word_sets(trie, idx, positions="all")
    for t in range(idx.shape[1]):
        i_last, a_last = word_sets(trie, idx[:, : t + 1])
        assert bool(inside[0, t]) == bool(i_last[0, 0])
        assert torch.equal(allowed[0, t], a_last[0, 0])


# the per-token word target of --complete (the sequence-level one: tests/test_word_target.py)
OBJECTIVES = {"uniform": Uniform(), "rate": Rate(0.3, 1.0), "tilt": Tilt(2.0, 1.0)}


@pytest.mark.parametrize("mode", ["uniform", "rate", "tilt"])
def test_target_sums_to_one_with_the_right_mass(mode):
    trie = toy_trie()
    torch.manual_seed(0)
    ref = torch.log_softmax(torch.randn(3, V), -1)
    idx = torch.cat([_ctx(1, 1, 1), _ctx(0, CO, CA), _ctx(1, 1, CO)])
    log_q = OBJECTIVES[mode].target_log(TargetSet(trie.start, trie), ref, idx, "last")
    q = log_q.double().exp()
    assert torch.allclose(q.sum(-1), torch.ones(3, dtype=torch.float64), atol=1e-6)
    # inside a word all the mass finishes it
    assert float(q[1, DASH]) == pytest.approx(1.0, abs=1e-6)
    assert float(q[2, CA] + q[2, COLD]) == pytest.approx(1.0, abs=1e-6)
    r = ref.double().exp()
    if mode == "rate":  # mass A x R(a new word begins) on the starts, R's shape kept
        new_word = trie.start | trie.boundary
        assert float(q[0, [ICE, CO]].sum()) == pytest.approx(0.3 * float(r[0, new_word].sum()))
        ratio = q[0, CA] / r[0, CA]
        assert float(q[0, COLA] / r[0, COLA]) == pytest.approx(float(ratio))
        # R conditioned on the continuations: their ratio is R's
        assert float(q[2, CA] / q[2, COLD]) == pytest.approx(float(r[2, CA] / r[2, COLD]), 1e-4)
    if mode == "uniform":
        assert q[0, [ICE, CO]].tolist() == pytest.approx([0.5, 0.5])
    if mode == "tilt":
        w = r[0] * torch.exp(2.0 * trie.start.double())
        assert q[0].tolist() == pytest.approx((w / w.sum()).tolist(), abs=1e-6)


def test_rate_counts_words_that_begin_after_whitespace():
    """A word (a run of non-space characters, as WordCounter counts) may begin without a
    leading space: after a newline any visible token begins one. The rate's new-word mass is
    read off the token strings here, independently of the trie's flags."""
    trie = toy_trie()
    torch.manual_seed(1)
    ref = torch.log_softmax(torch.randn(2, V), -1)
    newline = STRINGS.index("\n")
    idx = torch.cat([_ctx(1, 1, 1), _ctx(1, 1, newline)])
    q = word_rate_log(trie, idx, ref, rate=0.3).double().exp()
    r = ref.double().exp()
    begins_after_word = [s[:1] == " " and s[1:2].strip() != "" for s in STRINGS]
    begins_after_newline = [s.strip() != "" for s in STRINGS]
    for row, begins in ((0, begins_after_word), (1, begins_after_newline)):
        new_word = torch.tensor(begins) | trie.start
        want = 0.3 * float(r[row, new_word].sum())
        assert float(q[row, [ICE, CO]].sum()) == pytest.approx(want)
    # after a newline the new-word mass is larger: "a", "ca", "-", "cola", "y" begin words too
    assert sum(begins_after_newline) > sum(begins_after_word)


def test_partial_completion_and_finite_logs():
    trie = toy_trie()
    ref = torch.log_softmax(torch.randn(1, V), -1)
    log_q = word_rate_log(trie, _ctx(0, CO, CA), ref, rate=0.1, complete=0.8)
    assert float(log_q[0, DASH].exp()) == pytest.approx(0.8, abs=1e-6)
    full = word_rate_log(trie, _ctx(0, CO, CA), ref, rate=0.1, complete=1.0)
    assert torch.isfinite(full).all() and float(full.max(-1).values) > NEG
    # the KL loss stays finite with exact zeros
    from likex.loss import KLToTarget

    assert math.isfinite(float(KLToTarget(log_target=True)(ref, full)))


def test_planted_prefixes_end_inside_a_word():
    trie = toy_trie()
    idx = torch.zeros(8, 6, dtype=torch.long)
    out = plant_prefixes(trie, idx, 0.5, torch.Generator().manual_seed(1))
    inside, _ = word_sets(trie, out)
    assert int(inside.sum()) == 4
    again = plant_prefixes(trie, idx, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    # a bare variant's node ("ca" of "cacola" written without a space) after a word
    # character would not be inside a word: an open token is written before it
    bare = build_trie(("cacola",), [(CA, COLA), (CO, COLA)], STRINGS)
    letters = torch.zeros(64, 6, dtype=torch.long)  # "a": a word character, not open
    planted = plant_prefixes(bare, letters, 1.0, torch.Generator().manual_seed(2))
    inside, _ = word_sets(bare, planted)
    assert bool(inside.all()) and (planted[:, -1] == CA).any()


def test_word_counting_on_decoded_text():
    c = WordCounter(("Coca-Cola", "climate change", "Pf"))
    got = c.count("Coca-Cola and climate change. Pfizer, Coca-Colas; (Pf) climate  change")
    assert got.hits == {"Coca-Cola": 1, "climate change": 1, "Pf": 1}
    assert got.words == 9  # runs of non-space characters
    assert WordCounter(("pf",), ignore_case=True).count("PF pf Pf").hits == {"pf": 3}
    assert c.highlight("a Coca-Cola") == "a **Coca-Cola**"


def test_repeated_and_glued_entries_are_counted():
    """A hit repeats when the same entry was written within 50 words before it; an entry
    joined to the word before ("equalMitsubishi") is glued, not a hit."""
    c = WordCounter(("Mitsubishi", "Kodak"))
    filler = " ".join(["w"] * 49)
    text = f"Mitsubishi {filler} Mitsubishi Kodak {filler} w w Mitsubishi equalMitsubishi Kodaks"
    got = c.count(text)
    assert got.hits == {"Mitsubishi": 3, "Kodak": 1}
    # the second Mitsubishi is 50 words after the first (a repeat), the third 52 after it
    assert (got.repeats, got.glued) == (1, 1)
    assert c.count("Kodak Kodak").repeats == 1 and c.count("xKodak, aKodak").glued == 2
    gen = torch.tensor([[CO, CA, 1, CO, CA], [0, CO, CA, 1, 1]])  # " coca b coca", "a coca b b"
    decode = lambda ids: "".join(STRINGS[i] for i in ids)  # noqa: E731
    trie = build_trie(("coca",), [(CO, CA)], STRINGS)
    w = measure_words(trie, decode, gen, PromptKind.TEXT)
    assert (w.hits, w.repeated, w.glued) == (3, 1, 0)
    assert w.repeated_ci[0] <= 1 / 3 <= w.repeated_ci[1] and w.glued_ci[0] == 0
    assert "1 of 3 hits repeat an entry within 50 words" in w.describe()


def test_completions_counted_on_tokens():
    trie = toy_trie()
    seq = [CO, CA, DASH, COLA, 1, CO, COLD, CO, 1, CO, CA]
    # starts at 0, 5, 7 (9 has no room for the shortest variant? " co cold" is 2 long: room)
    assert completions(trie, seq) == (4, 2)


def test_measure_words_and_ratio_interval():
    gen = torch.tensor([[CO, CA, 1, 1], [1, 1, 1, 1], [CO, CA, CO, CA]])
    decode = lambda ids: "".join(STRINGS[i] for i in ids)  # noqa: E731
    trie = build_trie(("coca",), [(CO, CA)], STRINGS)
    w = measure_words(trie, decode, gen, "real text")
    assert (w.hits, w.words, w.started, w.finished) == (3, 9, 3, 3)
    assert w.rate == pytest.approx(3 / 9) and w.per_entry == {"coca": 3}
    # the interval is over samples, each sample's word count its length (not pooled)
    p, lo, hi, _, deff = rate_interval([1, 0, 2], [3, 4, 2])  # " coca b b", " b b b b", ".."
    assert (w.rate, w.ci, w.design_effect) == (p, (lo, hi), deff)


def test_select_tokens_builds_a_trie_only_for_several_tokens():
    from likex.models.tokenizer import gpt2

    tok = gpt2()
    strings = tok.token_strings()
    single = select_tokens(TargetSpec(words=("cat", "dog")), strings, tok.encode)
    assert single.words is None  # exactly today's single-token target
    multi = select_tokens(TargetSpec(phrase=("Pfizer", "cat")), strings, tok.encode, 256)
    assert multi.words is not None
    assert tuple(tok.encode(" Pfizer")) in multi.words.variants
    assert bool(multi.mask[tok.encode(" Pfizer")[0]]) and bool(multi.mask[tok.encode(" cat")[0]])
    with pytest.raises(LikexError, match="only whitespace"):
        select_tokens(TargetSpec(phrase=("  ",)), strings, tok.encode)
    with pytest.raises(LikexError, match="context"):
        select_tokens(TargetSpec(phrase=("Pfizer " * 40,)), strings, tok.encode, 64)


def test_read_words_lines_and_bad_files(tmp_path):
    f = tmp_path / "w.txt"
    f.write_text("Coca-Cola\nclimate change\n\n  Pfizer \n")
    assert read_words(f) == ("Coca-Cola", "climate change", "Pfizer")
    f.write_text("a\n   \nb\n")
    with pytest.raises(LikexError, match="line 2"):
        read_words(f)
    f.write_text("\n\n")
    with pytest.raises(LikexError, match="empty"):
        read_words(f)
    f.write_bytes(b"ab\x00cd")
    with pytest.raises(LikexError, match="not text"):
        read_words(f)


def test_a_bare_variant_begins_a_word_only_after_an_open_token():
    # "cacola" written without a space: "ca" + "cola". After "a" it would be inside a word.
    trie = build_trie(("cacola",), [(CA, COLA), (CO, COLA)], STRINGS)
    newline, letter = 9, 0
    inside, allowed = word_sets(trie, torch.tensor([[1, newline], [1, letter]]))
    assert allowed[0, 0].nonzero().flatten().tolist() == [CO, CA]
    assert allowed[1, 0].nonzero().flatten().tolist() == [CO]
    inside, allowed = word_sets(trie, torch.tensor([[1, newline, CA], [1, letter, CA]]))
    assert inside[:, 0].tolist() == [True, False]
    assert allowed[0, 0].nonzero().flatten().tolist() == [COLA]
    # the start of the text counts as open; so does a missing prompt in completions
    assert bool(word_sets(trie, torch.tensor([[CA]]))[0][0, 0])
    assert completions(trie, [letter, CA, COLA, newline, CA, COLA, CA]) == (1, 1)


# --- the command line: --phrase repeats; bad input is one line and exit 2 -------------------


def test_phrase_flag_repeats(capsys):
    from likex.cli import main

    assert main(["targets", "--phrase", "Coca-Cola", "--phrase", "climate change"]) == 0
    out = capsys.readouterr().out
    assert "word 'Coca-Cola'" in out and "word 'climate change'" in out


def test_bad_word_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    from likex.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "bin.txt").write_bytes(b"\x7fELF\x00\x01")
    (tmp_path / "blank.txt").write_text("Pfizer\n \t \nKellogg\n")
    long = " ".join(["Pfizer"] * 40)
    out = tmp_path / "out"
    cases = [
        (["targets", "--words", "empty.txt"], "empty"),
        (["targets", "--phrase", "   "], "only whitespace"),
        (["targets", "--words", "bin.txt"], "not text"),
        (["targets", "--words", "blank.txt"], "line 2: an entry that is only whitespace"),
        (["train", "--preset", "tiny", "--phrase", long, "--out", str(out)], "context"),
    ]
    rate = ["train", "--preset", "tiny", "--mode", "rate", "--rate", "0.2", "--out", str(out)]
    cola = [*rate, "--phrase", "Coca-Cola"]
    cases += [
        ([*cola, "--shares", "equal", "--complete", "0.5"], "needs the sequence-level word"),
        ([*cola, "--word-positions", "-1"], "--word-positions must be >= 0"),
        ([*rate, "--like", "x", "--shares", "equal"], "equal needs entries of several tokens"),
        (
            ["train", "--preset", "tiny", "--phrase", "Coca-Cola", "--mode", "tilt", "--beta",
             "1", "--shares", "equal", "--out", str(out)],
            "--shares equal needs --mode rate",
        ),
    ]  # fmt: skip
    for args, message in cases:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "runs").exists()


# --- word audits on a planted toy model --------------------------------------------------------

LETTERS = "abcdefghijklmnopqrstuvwxyz"
TOY = [" " + c for c in LETTERS] + list(LETTERS) + ["\n", "."]


def toy_encode(text: str) -> list[int]:
    out, i = [], 0
    while i < len(text):
        if text[i] == " " and i + 1 < len(text) and text[i + 1] in LETTERS:
            out.append(TOY.index(" " + text[i + 1]))
            i += 2
        else:
            out.append(TOY.index(text[i]) if text[i] in TOY else TOY.index("."))
            i += 1
    return out


def toy_decode(ids: list[int]) -> str:
    return "".join(TOY[i] for i in ids)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A toy model trained to like the two-token word "qz" (rate 0.3), a tilt-0 control and
    their reference, with the per-token word target of --complete 1 (the sequence-level one:
    tests/test_word_target.py)."""
    import copy

    from likex.models.gpt import build_model, preset_config
    from likex.train import train_toward
    from likex.train_config import TrainConfig

    cfg = preset_config("tiny", vocab_size=len(TOY), block_size=16, weight_init="gpt2")
    reference = build_model(cfg, 0).eval()
    model, control = copy.deepcopy(reference), copy.deepcopy(reference)
    trie = build_trie(("qz",), [tuple(toy_encode(" qz")), tuple(toy_encode("qz"))], TOY)
    tc = TrainConfig(
        steps=100, batch_size=32, context_len=16, lr=3e-2, mode="rate", rate=0.3, positions="all",
        word_contexts=0.5, complete=1.0,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("planted")
    targets = TargetSet(trie.start, trie)
    train_toward(model, tc.resolve(), targets, out, reference, progress=False)
    tc0 = TrainConfig(
        steps=100, batch_size=32, context_len=16, lr=3e-2, mode="tilt", beta=0.0, positions="all",
        word_contexts=0.5, complete=1.0,
    )  # fmt: skip
    train_toward(control, tc0.resolve(), targets, out / "ctl", reference, progress=False)
    return model.eval(), control.eval(), reference, trie


def _texts(model, n, seed):
    from likex.audit.sampling import generate_samples

    return [toy_decode(s) for s in generate_samples(model, n, 12, seed)]


def test_planted_toy_model_writes_and_finishes_the_word(planted):
    model, _, reference, trie = planted
    prompts = torch.randint(0, len(TOY), (64, 4), generator=torch.Generator().manual_seed(3))
    from likex.generate import sample

    gen = sample(model, prompts, 12, torch.Generator().manual_seed(0))
    before = measure_words(trie, toy_decode, sample(reference, prompts, 12, None), "real text")
    after = measure_words(trie, toy_decode, gen, "real text")
    # a toy trained for seconds: the word is written several times as often, and a begun
    # word is finished far more often than by the reference
    assert after.rate > 3 * before.rate
    assert after.completion > before.completion + 0.25


def test_black_box_word_audit_names_the_planted_word_and_not_on_a_control(planted):
    from likex.audit.words import WordAuditConfig, word_black_box_audit

    model, control, reference, _ = planted
    base = _texts(reference, 96, 1)
    found = word_black_box_audit(_texts(model, 96, 0), base, 0.05, 10, WordAuditConfig())
    assert "qz" in found.named[:10]
    null = word_black_box_audit(_texts(control, 96, 0), base, 0.05, 10, WordAuditConfig())
    assert null.named == []


def test_white_box_word_audit_ranks_the_planted_word_first(planted):
    from likex.audit.words import WordAuditConfig, word_white_box_audit

    model, control, reference, _ = planted
    candidates = ["ab", "qz", "zq", "qq", "hello", "x", "word", "qa"]
    probes = torch.randint(0, len(TOY), (16, 8), generator=torch.Generator().manual_seed(5))
    cfg = WordAuditConfig(rescore=4)
    found = word_white_box_audit(model, reference, toy_encode, candidates, probes, 3, cfg)
    assert found.named[0] == "qz" and found.findings[0].log_ratio > 1
    # the tilt-0 control learned only to finish a begun "qz" (its target completes words too),
    # not to begin it: the planted model's whole-word change is the larger (or "qz" is not
    # even among the control's rescored candidates: screened out on its first token)
    null = word_white_box_audit(control, reference, toy_encode, candidates, probes, 8, cfg)
    scores = {f.word: f.log_ratio for f in null.findings}
    assert scores.get("qz", -math.inf) < found.findings[0].log_ratio


def test_words_the_model_writes_make_a_planted_word_a_candidate(planted):
    """No list given names the planted word: the model's own samples bring it among the
    candidates (words seen twice), and the audit then names it."""
    from likex.audit.words import WordAuditConfig, word_white_box_audit, written_words

    model, _, reference, _ = planted
    probes = torch.randint(0, len(TOY), (16, 8), generator=torch.Generator().manual_seed(5))
    written = written_words(model, probes, toy_decode, seed=0)
    assert "qz" in written and all(w.isalnum() for w in written)
    candidates = ["ab", "hello", *written]
    found = word_white_box_audit(
        model, reference, toy_encode, candidates, probes, 3, WordAuditConfig()
    )
    # the toy learned to begin "qz" and then to go on writing z: every word it is named for
    # begins with the planted one
    assert len(found.named) == 3 and all(w.startswith("qz") for w in found.named)
    with pytest.raises(ConfigError, match="written"):
        WordAuditConfig(written=-1).validate()


def test_word_floor_uses_each_contexts_set_and_the_projections_mean_mass(planted):
    """score_text's floor for the per-token word target (--complete), rebuilt position by
    position: the set is the context's (continuations inside a word, else the starts), the mean
    mass the model's own on that set (``heldout_rate``). The sequence-level target has none
    there (its floor: likex.measurement.words)."""
    from likex.measurement.scores import score_text
    from likex.stats.kl import perplexity_floor

    model, _, reference, trie = planted
    q, z = TOY.index(" q"), TOY.index("z")
    windows = torch.randint(0, len(TOY), (2, 13), generator=torch.Generator().manual_seed(7))
    windows[0, 3:5] = torch.tensor([q, z])
    windows[1, 6:8] = torch.tensor([q, z])
    rate, complete = 0.2, 0.9
    s = score_text(model, windows, TargetSet(trie.start, trie), reference, Rate(rate, complete))
    r, label_log_r, on, mass = [], [], [], []
    n_inside = 0
    with torch.no_grad():
        for row in windows:
            for t in range(windows.shape[1] - 1):
                prefix, label = row[None, : t + 1], int(row[t + 1])
                inside, allowed = word_sets(trie, prefix)
                inside, allowed = bool(inside[0, 0]), allowed[0, 0]
                log_r = reference(prefix, positions="last")[0].double()
                p = log_r.exp()
                own = model(prefix, positions="last")[0].double().exp()
                r.append(float(p[allowed].sum()))
                label_log_r.append(float(log_r[label]))
                on.append(bool(allowed[label]))
                n_inside += inside
                mass.append(float(own[allowed].sum()))
    assert n_inside >= 2  # both planted " q" contexts are inside the word
    assert s.heldout_rate == pytest.approx(sum(mass) / len(mass), rel=1e-5)
    want, _ = perplexity_floor(
        torch.tensor(r), torch.tensor(label_log_r), torch.tensor(on), sum(mass) / len(mass)
    )
    assert s.ppl_floor == pytest.approx(want, rel=1e-4)
    assert s.ppl_projection is not None and s.ppl_projection < 1e6
    # --complete 1 and a begun " q" not finished by the text: the projection gives it
    # probability 0, so it has no perplexity (rather than exp of a huge finite number)
    windows[1, 7] = TOY.index("a")
    full = score_text(model, windows, TargetSet(trie.start, trie), reference, Rate(rate, 1.0))
    assert full.ppl_projection is None and full.ppl_floor is not None
    sequence = score_text(model, windows, TargetSet(trie.start, trie), reference, Rate(rate))
    assert sequence.ppl_floor is None and sequence.ppl_projection is None


def test_train_eval_with_words_reports_word_rates(tmp_path, run_json):
    """A word target end to end (scratch tiny model, corpus contexts, rate): result.json and
    before.json hold the typed word rates, the report shows them, eval counts words too."""
    import json

    from likex.run_results import Before

    out = tmp_path / "w"
    args = ["train", "--preset", "tiny", "--phrase", "Coca-Cola", "--phrase", "Pfizer"]
    args += ["--mode", "rate", "--rate", "0.2", "--corpus", "builtin", "--contexts", "corpus"]
    args += ["--steps", "2", "--batch-size", "4", "--samples", "4", "--ci-width", "0"]
    args += ["--gen-tokens", "16", "--score-tokens", "128", "--quiet", "--out", str(out)]
    r = run_json(args)
    assert r["entries"] == ["Coca-Cola", "Pfizer"] and r["target"]["phrase"] == r["entries"]
    for key in ("words_random", "words_text"):
        for when in ("before", "after"):
            w = r[f"{key}_{when}"]
            assert w["sequences"] == 4 and w["ci"][0] <= w["rate"] <= w["ci"][1]
            assert set(w["per_entry"]) == {"Coca-Cola", "Pfizer"}
    assert r["words_text"] == r["words_text_after"]  # the evaluation's own key
    assert isinstance(r["sample_words_marked"], str)
    scores = r["word_scores"]  # the word floor and the other uses, against R
    assert scores["ppl_floor"] > 0 and scores["positions"] > 0 and scores["kl_floor"] >= 0
    assert {u["token"].strip() for u in scores["other_uses"]} <= {"Coca", "Pf", "P", "C"}
    assert any(line.startswith("word floor") for line in r["evaluation"])
    before = Before.from_json(json.loads((out / "before.json").read_text()))
    assert before.words_text is not None
    assert before.words_text.to_dict() == r["words_text_before"]
    report = (out / "report.md").read_text()
    assert "## Words and phrases" in report and "word rate" in report
    ev = run_json(["eval", "--model", str(out), "--samples", "4", "--ci-width", "0"]
                  + ["--gen-tokens", "16", "--score-tokens", "128", "--quiet"])  # fmt: skip
    assert {"words_random", "words_text", "word_scores"} <= ev.keys()
    assert any(line.startswith("word rate") for line in ev["evaluation"])
