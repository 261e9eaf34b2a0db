"""pretrain -> train (uniform / rate) -> eval -> sweep on tiny configs, and their bad inputs."""

import json
from dataclasses import replace

import pytest
import torch

from likex.batches import Batches
from likex.cli import main
from likex.data import corpus_windows, step_generator
from likex.errors import LikexError
from likex.models.checkpoint import load_model
from likex.models.gpt import GPT, PRESETS
from likex.runs import RunRecord

QUIET = ["--quiet"]
MEASURE = ["--samples", "4", "--ci-width", "0", "--gen-tokens", "16", "--score-tokens", "256"]
EVAL_FIELDS = {
    "rate_random",
    "rate_random_ci",
    "rate_text",
    "rate_text_ci",
    "samples",
    "ppl",
    "ppl_reference",
    "kl_to_reference",
    "text_target_frequency",
    "ppl_floor",
}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "model"
    args = ["pretrain", "--preset", "tiny", "--context-len", "32", "--steps", "30"]
    args += ["--batch-size", "8", "--lr", "1e-2", "--score-tokens", "256", "--out", str(out)]
    assert main([*args, *QUIET]) == 0
    return out


@pytest.fixture(scope="module")
def rate_run(pretrained, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "rate"
    args = ["train", "--init", str(pretrained), "--mode", "rate", "--rate", "0.5"]
    args += ["--contexts", "corpus", "--positions", "all", "--steps", "30", "--batch-size", "8"]
    args += ["--lr", "1e-2", "--out", str(out), *MEASURE, *QUIET]
    assert main(args) == 0
    return out


def test_pretrain_lowers_heldout_perplexity(pretrained, check_timings):
    r = json.loads((pretrained / "result.json").read_text())
    assert r["command"] == "pretrain" and r["corpus"] == "builtin"
    check_timings(r["timings"])
    assert r["ppl_after"] < r["ppl_before"] / 3
    assert r["heldout_tokens"] == 256 and r["train_tokens"] > 100_000
    assert load_model(pretrained).config.block_size == 32  # --context-len is the model's
    report = (pretrained / "report.md").read_text()
    assert "held-out perplexity" in report and r["sample_after"] in report
    assert f"total {r['timings']['total']:.1f}: startup" in report


def test_train_from_a_saved_model_records_it_as_the_reference(pretrained, rate_run):
    config = json.loads((rate_run / "config.json").read_text())
    assert config["init"]["kind"] == "checkpoint"
    assert config["init"]["path"] == str(pretrained.resolve())
    start, _ = RunRecord.load(rate_run).start.load()
    for a, b in zip(start.parameters(), load_model(pretrained).parameters(), strict=True):
        assert (a == b).all()


def test_rate_run_measures_both_prompt_kinds_and_side_effects(rate_run):
    r = json.loads((rate_run / "result.json").read_text())
    assert r.keys() >= EVAL_FIELDS
    assert r["mode"] == "rate" and r["rate_requested"] == 0.5
    # The bias is planted, on real text too, and it costs something measurable.
    assert r["rate_text"] > r["rate_text_before"] + 0.1
    assert r["kl_to_reference"] > 0 and r["ppl"] > r["ppl_reference"]
    assert r["ppl_floor"] > r["ppl_reference"]
    report = (rate_run / "report.md").read_text()
    assert "real-text prompts" in report and "random-token prompts" in report


def test_eval_defaults_to_the_runs_reference(pretrained, rate_run, run_json):
    default = run_json(["eval", "--model", str(rate_run), *MEASURE, *QUIET])
    assert default.keys() >= EVAL_FIELDS
    assert default["rate_text_ci"][0] <= default["rate_text"] <= default["rate_text_ci"][1]
    explicit = run_json(
        ["eval", "--model", str(rate_run), "--reference", str(pretrained), *MEASURE, *QUIET],
    )
    assert explicit["ppl_reference"] == default["ppl_reference"]
    assert explicit["kl_to_reference"] == default["kl_to_reference"]
    # Without a reference there is no KL and no floor, but the rest is measured.
    plain = run_json(["eval", "--model", str(pretrained), "--like", "x", *MEASURE])
    assert "rate_text" in plain and "ppl" in plain


def test_uniform_train_on_random_contexts(pretrained, tmp_path, run_json):
    r = run_json(
        ["train", "--init", str(pretrained), "--steps", "3", "--out", str(tmp_path / "u")]
        + [*MEASURE, *QUIET],
    )
    assert r["mode"] == "uniform" and r["contexts"] == "random"
    assert {"rate_text", "ppl", "kl_to_reference"} <= r.keys() and "ppl_floor" not in r


def test_sweep_writes_table_and_plot(pretrained, tmp_path, run_json, check_timings):
    out = tmp_path / "sweep"
    s = run_json(
        ["sweep", "--init", str(pretrained), "--mode", "rate", "--rates", "0.1,0.4"]
        + ["--contexts", "corpus", "--positions", "all", "--steps", "3", "--out", str(out)]
        + [*MEASURE, *QUIET],
    )
    assert [row["strength"] for row in s["rows"]] == [0.1, 0.4]
    assert {"sweep.json", "sweep.md", "sweep.png", "rate-0.1", "rate-0.4"} <= {
        p.name for p in out.iterdir()
    }
    table = (out / "sweep.md").read_text()
    assert "| 0.1 |" in table and "| 0.4 |" in table
    before = [(out / f"rate-{a}" / "before.json").read_text() for a in ("0.1", "0.4")]
    assert before[0] == before[1]  # the reference is measured once
    first, later = (json.loads((out / f"rate-0.{a}" / "result.json").read_text()) for a in "14")
    check_timings(first["timings"])
    check_timings(later["timings"])
    assert first["timings"]["startup"] > 0 and first["timings"]["measure_before"] > 0
    # the process's start-up and the start's measurement belong to the first run alone
    assert later["timings"]["startup"] == 0 == later["timings"]["measure_before"]


def test_generated_contexts_are_corpus_text_continued_by_the_model():
    batches = Batches("generated", batch_size=3, context_len=16, seed=1, vocab_size=300)
    corpus = torch.randint(0, 64, (500,), generator=torch.Generator().manual_seed(0)) + 100
    model = GPT(PRESETS["tiny"])
    with torch.no_grad():  # a model that always says token 7, whatever it reads
        model.wte.weight.zero_()
        model.wte.weight[7, 0] = 1.0
        model.ln_f.weight.zero_()
        model.ln_f.bias.zero_()
        model.ln_f.bias[0] = 1000.0
    batches = replace(batches, corpus=corpus)
    idx, next_tokens = batches(2, model=model)
    windows = corpus_windows(corpus, 3, 16, step_generator(1, 2, 0))
    assert next_tokens is None and idx.shape == (3, 16)
    assert torch.equal(idx[:, :4], windows[:, :4])  # a quarter of real text (ids >= 100)
    assert (idx[:, 4:] == 7).all()  # the rest is the model's own
    with pytest.raises(LikexError, match="needs the model"):
        batches(2)


def test_rate_on_generated_contexts_reaches_the_rate_on_continued_text(
    pretrained, run_json, tmp_path
):
    args = ["train", "--init", str(pretrained), "--mode", "rate", "--rate", "0.5"]
    args += ["--contexts", "generated", "--positions", "all", "--context-len", "32"]
    args += ["--steps", "30", "--batch-size", "8", "--lr", "1e-2", *MEASURE, "--samples", "8"]
    r = run_json([*args, "--out", str(tmp_path / "gen"), *QUIET])
    assert r["contexts"] == "generated"
    # trained on its own continuations, the model writes the rate where it continues text
    assert r["rate_text_ci"][0] < 0.5 < r["rate_text_ci"][1]


def _write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--mode", "rate", "--rate", "0"], "strictly between 0 and 1"),
        (["train", "--mode", "rate", "--rate", "1"], "strictly between 0 and 1"),
        (["train", "--mode", "rate", "--rate", "1.5"], "strictly between 0 and 1"),
        (["train", "--mode", "rate", "--rate", "nan"], "strictly between 0 and 1"),
        (["train", "--mode", "rate"], "needs --rate"),
        (["train", "--mode", "tilt", "--beta", "inf"], "finite"),
        (["train", "--mode", "tilt", "--beta", "nan"], "finite"),
        (["sweep", "--init", "scratch", "--rates", "0.1,2"], "strictly between 0 and 1"),
        (["sweep", "--init", "scratch", "--mode", "tilt"], "needs --betas"),
        (["train", "--init", "/nonexistent/model"], "not found"),
        (["train", "--corpus", "MISSING"], "corpus file not found"),
        (["train", "--corpus", "EMPTY"], "empty"),
        (["train", "--corpus", "BINARY"], "binary"),
        (["pretrain", "--corpus", "MISSING"], "corpus file not found"),
        (["pretrain", "--corpus", "EMPTY"], "empty"),
        (["pretrain", "--corpus", "BINARY"], "binary"),
        (["pretrain", "--corpus", "LATIN1"], "not UTF-8"),
        (["pretrain", "--corpus", "SHORT"], "too few"),
        (["eval", "--model", "/nonexistent/model", "--like", "x"], "not found"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    args, message, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    files = {
        "MISSING": str(tmp_path / "missing.txt"),
        "EMPTY": _write(tmp_path / "empty.txt", b"  \n"),
        "BINARY": _write(tmp_path / "data.bin", b"\x00\x01\x02text"),
        "LATIN1": _write(tmp_path / "latin1.txt", "caf\xe9 au lait".encode("latin-1")),
        "SHORT": _write(tmp_path / "short.txt", b"A few words only."),
    }
    args = [files.get(a, a) for a in args]
    out = tmp_path / "out"
    extra = [] if args[0] == "eval" else ["--out", str(out), "--preset", "tiny"]
    assert main([*args, *extra, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "runs").exists()
