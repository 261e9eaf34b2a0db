"""Bad and adversarial input at every edge: one line `likex: error: ...`, exit status 2, no
traceback, nothing half-written left behind; and the NaN/inf guard."""

import errno
import json
import math
import os
import shutil
import stat
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from likex.cli import main
from likex.data import load_corpus_text
from likex.errors import LikexError, clip_path
from likex.models.checkpoint import (
    CHECKPOINTS_DIR,
    MODEL_FILE,
    TRAINER_STATE,
    latest_checkpoint,
    load_optimizer,
    save_checkpoint,
    save_model,
)
from likex.models.gpt import build_model, preset_config
from likex.runs import LOCK_FILE, RunLock, RunRecord
from likex.target import TargetSpec, read_words, select_tokens

TINY = [
    "--preset", "tiny", "--quiet", "--samples", "2", "--ci-width", "0", "--gen-tokens", "8",
    "--batch-size", "4", "--device", "cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    save_model(build_model(preset_config("tiny"), 0), d)
    return d


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "done"
    assert main(["run", *TINY, "--steps", "2", "--save-every", "1", "--out", str(out)]) == 0
    return out


def one_line_error(capsys, args, message) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("likex: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and message in err, err
    return err


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--seed", "-1"], "--seed must be an integer in 0..9223372036854775807"),
        (["run", "--seed", str(2**64)], "--seed must be an integer in 0..9223372036854775807"),
        (["run", "--batch-size", "100000000"], "--batch-size 100000000 needs at least"),
        (["run", "--steps", str(10**30)], "--steps must be in 1..10_000_000"),
        (["run", "--gen-tokens", str(10**11)], "--gen-tokens must be in 1..1_000_000"),
        (["train", "--rate", "0.2"], "--rate needs --mode rate (the mode is uniform)"),
        (["train", "--beta", "2"], "--beta needs --mode tilt (the mode is uniform)"),
        (["run", "--like", "\udcff"], "--like is not valid UTF-8 text (bytes b'\\xff' at 0)"),
        (["run", "--regex", "^(-|--)+(?=x)"], "took over 0.05 s on token"),
    ],
)
def test_bad_run_input_is_refused_before_anything_is_written(
    args, message, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    command, *flags = args  # the flags come last, so that they override TINY's
    one_line_error(capsys, [command, *TINY, *flags, "--out", str(out)], message)
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_out_through_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    one_line_error(
        capsys,
        ["run", *TINY, "--steps", "1", "--out", str(tmp_path / "file" / "run")],
        "cannot create output folder",
    )


def test_prompts_take_any_unicode_and_refuse_what_is_not(model_dir, capsys):
    base = ["generate", "--model", str(model_dir), "--tokens", "3", "--device", "cpu"]
    assert main([*base, "--prompt", "x \U0001f600 \u00e9\u4e2d \u202e"]) == 0
    assert "\U0001f600" in capsys.readouterr().out
    one_line_error(capsys, [*base, "--prompt", "a\udcffb"], "--prompt is not valid UTF-8")
    one_line_error(capsys, [*base, "--seed", "-1"], "--seed must be an integer")
    one_line_error(capsys, [*base, "--tokens", str(10**11)], "--tokens must be in 1..1_000_000")


def test_any_unicode_target_is_accepted(token_strings):
    assert select_tokens(TargetSpec(like="\u00e9"), token_strings).n_tokens > 0
    with pytest.raises(LikexError, match="matches no token"):
        select_tokens(TargetSpec(like="\U0001f600\u202e"), token_strings)


def test_regex_with_braces_is_quoted_not_formatted(capsys):
    one_line_error(capsys, ["targets", "--regex", "a{2}("], "--regex 'a{2}(': invalid regex")


def test_contradictions_are_refused(finished_run, model_dir, capsys, tmp_path):
    one_line_error(
        capsys,
        ["run", "--resume", str(finished_run), "--lr", "0.5"],
        "--lr is fixed by the run being resumed (only steps may change)",
    )
    one_line_error(
        capsys,
        ["persist", "--model", str(tmp_path / "missing"), "--device", "cpu"],
        "model directory not found",
    )
    one_line_error(
        capsys,
        ["audit", "--model", str(model_dir), "--baseline", str(model_dir), "--alpha", "2"],
        "--alpha must be in (0, 1), got 2.0",
    )


def test_finished_run_resumes_only_with_more_steps(finished_run, capsys):
    one_line_error(
        capsys, ["run", "--resume", str(finished_run)], "already has 2 steps; pass --steps N"
    )


def test_trainer_state_with_a_step_that_is_no_integer(finished_run, tmp_path, capsys):
    (ckpt,) = (finished_run / CHECKPOINTS_DIR).iterdir()
    state = json.loads((ckpt / TRAINER_STATE).read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / TRAINER_STATE).write_text(json.dumps({**state, "step": "two"}))
    (bad / "optimizer.safetensors").write_bytes((ckpt / "optimizer.safetensors").read_bytes())
    model = build_model(preset_config("tiny"), 0)
    with pytest.raises(LikexError, match="no integer step"):
        load_optimizer(torch.optim.AdamW(model.parameters()), bad)
    # in a run: the manifest's hash no longer matches, and resume refuses in one line
    copy = tmp_path / "run"
    import shutil

    shutil.copytree(finished_run, copy)
    (ckpt_copy,) = (copy / CHECKPOINTS_DIR).iterdir()
    (ckpt_copy / TRAINER_STATE).write_text(json.dumps({**state, "step": "two"}))
    one_line_error(
        capsys,
        ["run", "--resume", str(copy), "--steps", "4"],
        f"inconsistent: {TRAINER_STATE} is missing or differs from its manifest",
    )


def test_nan_guard_stops_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "nan"
    err = one_line_error(
        capsys,
        ["run", *TINY, "--steps", "6", "--save-every", "1", "--lr", "1e30", "--out", str(out)],
        "--lr 1e+30 is the likely cause: training diverged at step 2",
    )
    assert f"{out} is kept: --resume {out} continues from step 1" in err
    (ckpt,) = (out / CHECKPOINTS_DIR).iterdir()
    assert ckpt.name == "step-000000001"
    for name in (MODEL_FILE, "optimizer.safetensors"):
        assert all(bool(t.isfinite().all()) for t in load_file(str(ckpt / name)).values())
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1] and math.isfinite(rows[0]["loss"])
    assert not (out / "result.json").exists()


def test_failed_run_without_a_checkpoint_removes_its_folder(tmp_path, capsys):
    out = tmp_path / "nan"
    err = one_line_error(
        capsys,
        ["run", *TINY, "--steps", "6", "--lr", "1e30", "--out", str(out)],
        "training diverged at step 2",
    )
    assert f"removed the half-written {out}" in err and not out.exists()


def test_out_of_memory_in_a_run_is_one_line_and_cleans_up(tmp_path):
    from likex.errors import ConfigError
    from likex.pipelines.training import on_failure

    run_dir = tmp_path / "oom"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    with pytest.raises(ConfigError) as e, on_failure(run_dir, remove=True):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB\nmore")
    assert e.value.field == "batch_size" and "\n" not in str(e.value)
    assert "out of memory (CUDA out of memory. Tried to allocate 9.00 GiB)" in str(e.value)
    assert f"removed the half-written {run_dir}" in str(e.value) and not run_dir.exists()


# ---- The bad inputs of the trust rounds: one table, each case with the one line it must show.
#
# Placeholders in a case's arguments: {run} a copy of `finished_run` (two steps, a checkpoint
# at step 2) that the case's `damage` may change first, {model} a copy of `model_dir`, {tmp} a
# fresh folder, and the files FILES makes there. The files of the copied run folder are
# compared before and after: a refused command changes none of them.

ONE_MB = 1 << 20


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


FILES = {
    "big_words": lambda t: _write(t / "big.txt", b"cat\n" + b"a" * ONE_MB + b"\n"),
    "nul_words": lambda t: _write(t / "nul.txt", b"cat\x00dog\n"),
    "latin1": lambda t: _write(t / "latin1.txt", "caf\xe9\n".encode("latin-1")),
    "empty": lambda t: _write(t / "empty.txt", b"\n\n"),
    "bom_only": lambda t: _write(t / "bom.txt", b"\xef\xbb\xbf\n"),
    "text": lambda t: _write(t / "text.txt", b"some text\n"),
    "text2": lambda t: _write(t / "text2.txt", b"\n"),
    "fifo": lambda t: (os.mkfifo(t / "fifo"), str(t / "fifo"))[1],
    "broken_link": lambda t: (os.symlink(t / "nowhere", t / "broken"), str(t / "broken"))[1],
    "loop_link": lambda t: (os.symlink(t / "loop", t / "loop"), str(t / "loop"))[1],
    "long_missing": lambda t: str(t / ("d" * 250) / "words.txt"),
    "full_dir": lambda t: (_write(t / "full.txt", b"x"), str(t))[1],
}


def _rewrite(path, text: str) -> None:
    """Replace a file with new content (a new inode: the copy's files are hard links)."""
    path.unlink()
    path.write_text(text)


def _edit_json(path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    _rewrite(path, json.dumps(doc))


def _ckpt(run):
    return next((run / CHECKPOINTS_DIR).iterdir())


def _replace_with_link(path) -> None:
    target = path.with_name(path.name + ".real")
    path.rename(target)
    os.symlink(target, path)


def _manifest(change):
    return lambda run: _edit_json(_ckpt(run) / "manifest.json", change)


def _config(change):
    return lambda run: _edit_json(run / "config.json", change)


def _model_json(change):
    return lambda model: _edit_json(model / "model.json", change)


RESUME = ["run", "--resume", "{run}", "--steps", "3"]
EVAL_MODEL = ["eval", "--model", "{model}", "--like", "x", "--device", "cpu"]
R = RESUME
# (id, arguments, the message it must show, what is done to {run} or {model} first)
BAD_INPUTS = [
    # -- the cases
    ("before-empty-object", R, "before.json is damaged: it has no 'rate_text'",
     lambda r: _rewrite(r / "before.json", "{}")),
    ("metrics-garbage-line", R, "metrics.jsonl, line 1: not a JSON line",
     lambda r: _rewrite(r / "metrics.jsonl", "garbage\n" + (r / "metrics.jsonl").read_text())),
    ("metrics-symlink", R, "metrics.jsonl is a symbolic link",
     lambda r: _replace_with_link(r / "metrics.jsonl")),
    ("manifest-lists-no-files", R, "inconsistent: its manifest lists no files",
     _manifest(lambda m: m.update(files={}))),
    ("checkpoint-of-another-run", R, "belongs to another run",
     _manifest(lambda m: m.update(run_id="0" * 32))),
    ("config-preset-edited", R, "was edited after the run started: preset is \"cpu\", not \"tiny\"",
     _config(lambda c: c.update(preset="cpu"))),
    ("model-json-vocab-2^40", EVAL_MODEL,
     "vocab_size must be in 1..4_194_304, got 1_099_511_627_776",
     _model_json(lambda m: m.update(vocab_size=2**40))),
    ("model-json-10^6-layers", EVAL_MODEL, "n_layer must be in 1..1_024, got 1_000_000",
     _model_json(lambda m: m.update(n_layer=10**6))),
    ("words-1MB-entry", ["targets", "--words", "{big_words}"],
     "line 2: an entry of 1,048,576 characters (at most 1,000): 'aaaa", None),
    ("eval-missing-corpus-named-model",
     ["eval", "--model", "smollm2-135m", "--corpus", "{tmp}/missing.txt"],
     "corpus file not found", None),
    ("words-directory", ["targets", "--words", "{tmp}"], "is a directory, not a file", None),
    ("words-fifo", ["targets", "--words", "{fifo}"], "is not a regular file (a FIFO)", None),
    ("candidates-directory",
     ["audit", "--model", "{run}", "--units", "words", "--candidates", "{tmp}"],
     "candidates file", None),
    ("corpus-device", ["train", "--corpus", "/dev/null"],
     "is not a regular file (a character device)", None),
    ("audit-text-side-is-no-corpus", ["audit", "--model", "{text}", "--baseline", "{text2}"],
     "text file is empty", None),
    ("sweep-rates-named", ["sweep", "--init", "scratch", "--rates", "0.2,2"],
     "--rates must be strictly between 0 and 1, got 2.0", None),
    ("sweep-mode-uniform", ["sweep", "--init", "scratch", "--mode", "uniform"],
     "--mode of a sweep is rate or tilt, not 'uniform'", None),
    ("complete-token-target", ["train", "--mode", "rate", "--rate", "0.1", "--complete", "0.5"],
     "--complete does not apply to a token target", None),
    ("complete-uniform", ["train", "--phrase", "New York", "--complete", "0.5"],
     "--complete does not apply to --mode uniform", None),
    ("word-contexts-no-words", ["train", "--word-contexts", "0.5"],
     "--word-contexts does not apply to a token target", None),
    ("candidates-without-units-words", ["audit", "--model", "{run}", "--candidates", "{text}"],
     "--candidates applies only to --units words", None),
    ("reference-random-only", ["eval", "--model", "{run}", "--reference", "{run}", "--random-only"],
     "--reference does not apply to --random-only", None),
    ("rate-with-rates", ["sweep", "--init", "scratch", "--rates", "0.1", "--rate", "0.2"],
     "--rate does not apply to likex sweep: give its strengths with --rates", None),
    ("examples-negative", ["targets", "--like", "x", "--examples", "-1"],
     "--examples must be in 0..1_000_000, got -1", None),
    ("device-cpu-7", ["eval", "--model", "{run}", "--device", "cpu:7"],
     "device 'cpu:7' does not exist", None),
    ("audit-out-not-empty", ["audit", "--model", "{run}", "--out", "{full_dir}"],
     "already exists and is not empty", None),
    # -- a new round: what a careful or a careless user tries
    ("out-is-a-file", ["run", "--out", "{text}"], "already exists and is not empty", None),
    ("out-broken-link", ["run", "--out", "{broken_link}"], "is a broken symbolic link", None),
    ("resume-a-file", ["run", "--resume", "{text}"], "is a file, not a folder", None),
    ("resume-empty-folder", ["run", "--resume", "{tmp}"], "run config not found", None),
    ("config-not-an-object", R,
     "is not a likex run config", lambda r: _rewrite(r / "config.json", "[]")),
    ("config-steps-a-string", R, "train.steps is '200', not an integer",
     _config(lambda c: c["train"].update(steps="200"))),
    ("config-command-unknown", R, "records no training run (command 'audit-bench')",
     _config(lambda c: c.update(command="audit-bench"))),
    ("config-truncated", R, "run config is corrupt",
     lambda r: _rewrite(r / "config.json", (r / "config.json").read_text()[:100])),
    ("config-symlink", R,
     "config.json is a symbolic link", lambda r: _replace_with_link(r / "config.json")),
    ("config-seed-bool", R, "seed is True, not an integer", _config(lambda c: c.update(seed=True))),
    ("config-run-id-number", R, "run_id is 5, not a string", _config(lambda c: c.update(run_id=5))),
    ("config-init-unknown-kind", R, "unknown starting-model kind 'martian'",
     _config(lambda c: c.update(init={"kind": "martian"}))),
    ("config-samples-zero", R, "samples must be in 1..100_000, got 0",
     _config(lambda c: c["measure"].update(samples=0))),
    ("config-words-a-string", R, "target.words is not a list",
     _config(lambda c: c["target"].update(words="cat"))),
    ("config-lr-edited", R, "was edited after the run started: train.lr is 0.5, not 0.01",
     _config(lambda c: c["train"].update(lr=0.5))),
    ("config-target-edited", R, "target.like is \"y\", not \"x\"",
     _config(lambda c: c["target"].update(like="y"))),
    ("before-a-list", R, "before.json is damaged: it is not a JSON object",
     lambda r: _rewrite(r / "before.json", "[]")),
    ("before-rate-a-number", R,
     "before.json is damaged", lambda r: _edit_json(r / "before.json", lambda b: b.update(rate=5))),
    ("before-symlink", R,
     "before.json is a symbolic link", lambda r: _replace_with_link(r / "before.json")),
    ("before-missing", R,
     "pre-training measurement not found", lambda r: (r / "before.json").unlink()),
    ("metrics-step-a-string", R, "line 1: step 'x' does not follow step 0",
     lambda r: _rewrite(r / "metrics.jsonl", '{"step": "x", "loss": 1, "seconds": 1}\n')),
    ("metrics-step-twice", R, "line 2: step 1 does not follow step 1",
     lambda r: _rewrite(r / "metrics.jsonl", '{"step": 1, "loss": 1, "seconds": 1}\n' * 2)),
    ("metrics-row-a-list", R,
     "line 1: not a JSON object", lambda r: _rewrite(r / "metrics.jsonl", "[1, 2]\n")),
    ("metrics-loss-a-string", R, "loss 'NaN' is not a number",
     lambda r: _rewrite(r / "metrics.jsonl", '{"step": 1, "loss": "NaN", "seconds": 1}\n')),
    ("metrics-a-directory", R, "metrics.jsonl: Is a directory",
     lambda r: ((r / "metrics.jsonl").unlink(), (r / "metrics.jsonl").mkdir())),
    ("manifest-negative-step", R,
     "its manifest names no step", _manifest(lambda m: m.update(step=-1))),
    ("checkpoint-extra-file", R,
     "notes.txt is not in its manifest", lambda r: _write(_ckpt(r) / "notes.txt", b"x")),
    ("checkpoint-file-symlink", R, "optimizer.safetensors is a symbolic link",
     lambda r: _replace_with_link(_ckpt(r) / "optimizer.safetensors")),
    ("checkpoints-dir-symlink", R, "checkpoints is a symbolic link",
     lambda r: _replace_with_link(r / CHECKPOINTS_DIR)),
    ("manifest-files-a-list", R,
     "its manifest lists no files", _manifest(lambda m: m.update(files=[]))),
    ("checkpoint-without-optimizer", R, "its manifest lists no optimizer.safetensors",
     lambda r: ((_ckpt(r) / "optimizer.safetensors").unlink(),
                _manifest(lambda m: m["files"].pop("optimizer.safetensors"))(r))),
    ("model-json-layers-bool", EVAL_MODEL, "n_layer must be an integer, got True",
     _model_json(lambda m: m.update(n_layer=True))),
    ("model-json-vocab-negative", EVAL_MODEL, "vocab_size must be in 1..4_194_304, got -5",
     _model_json(lambda m: m.update(vocab_size=-5))),
    ("model-json-context-2^30", EVAL_MODEL, "block_size must be in 1..1_048_576",
     _model_json(lambda m: m.update(block_size=2**30))),
    ("model-json-beyond-memory", EVAL_MODEL, "for its weights alone, more than the",
     _model_json(lambda m: m.update(vocab_size=2**22, n_embd=2**16, n_head=2**10))),
    ("model-json-unknown-field", EVAL_MODEL, "unknown fields: ['n_expert']",
     _model_json(lambda m: m.update(n_expert=8))),
    ("model-json-a-list", EVAL_MODEL, "not an object", lambda m: _rewrite(m / "model.json", "[]")),
    ("words-nul", ["targets", "--words", "{nul_words}"], "is not text", None),
    ("words-latin1", ["targets", "--words", "{latin1}"], "not UTF-8", None),
    ("words-empty", ["targets", "--words", "{empty}"], "words file is empty", None),
    ("words-bom-only", ["targets", "--words", "{bom_only}"], "words file is empty", None),
    ("candidates-fifo", ["audit", "--model", "{run}", "--units", "words", "--candidates", "{fifo}"],
     "candidates file", None),
    ("corpus-directory", ["persist", "--model", "{run}", "--corpus", "{tmp}"],
     "is a directory", None),
    ("words-link-loop", ["targets", "--words", "{loop_link}"], "cannot be read", None),
    ("words-long-missing-path", ["targets", "--words", "{long_missing}"],
     "words file not found: …" + "d" * 70 + "/words.txt", None),
    ("phrase-2000-chars", ["targets", "--phrase", "p" * 2000],
     "--phrase has 2,000 characters, more than 1,000", None),
    ("like-5000-chars", ["targets", "--like", "l" * 5000], "--like has 5,000 characters", None),
    ("regex-1200-chars", ["targets", "--regex", "r" * 1200], "--regex has 1,200 characters", None),
    ("rates-not-numbers", ["sweep", "--init", "scratch", "--rates", "0.1,abc"],
     "expected comma-separated numbers, got '0.1,abc'", None),
    ("rates-empty", ["sweep", "--init", "scratch", "--rates", ","],
     "expected comma-separated numbers", None),
    ("betas-with-mode-rate", ["sweep", "--init", "scratch", "--betas", "1"],
     "--betas needs --mode tilt (the mode is rate)", None),
    ("rates-with-mode-tilt", ["sweep", "--init", "scratch", "--mode", "tilt", "--rates", "0.1"],
     "--rates needs --mode rate (the mode is tilt)", None),
    ("beta-in-sweep",
     ["sweep", "--init", "scratch", "--mode", "tilt", "--betas", "1", "--beta", "2"],
     "--beta does not apply to likex sweep: give its strengths with --betas", None),
    ("preset-with-a-saved-start", ["train", "--init", "{run}", "--preset", "tiny"],
     "--preset applies only to --init scratch, not '", None),
    ("weight-init-with-a-named-model", ["train", "--init", "smollm2-135m", "--weight-init", "gpt2"],
     "--weight-init applies only to --init scratch, not 'smollm2-135m'", None),
    ("ignore-case-token-ids", ["targets", "--token-ids", "5", "--ignore-case"],
     "--ignore-case needs a text target", None),
    ("top-k-greedy", ["generate", "--model", "{run}", "--temperature", "0", "--top-k", "5"],
     "--top-k does not apply to --temperature 0", None),
    ("score-tokens-run", ["run", "--score-tokens", "100"],
     "--score-tokens does not apply to likex run", None),
    ("score-tokens-random-only",
     ["eval", "--model", "{run}", "--random-only", "--score-tokens", "9"],
     "--score-tokens does not apply to --random-only", None),
    ("alpha-white-box", ["audit", "--model", "{run}", "--alpha", "0.01"],
     "--alpha applies only to a black-box audit", None),
    ("samples-white-box", ["audit", "--model", "{run}", "--samples", "10"],
     "--samples applies only to a black-box audit", None),
    ("probes-black-box",
     ["audit", "--model", "{run}", "--baseline", "{text}", "--probes", "random"],
     "--probes does not apply to a black-box audit (--baseline)", None),
    ("audit-corpus-black-box",
     ["audit", "--model", "{run}", "--baseline", "{text}", "--corpus", "{text}"],
     "--corpus does not apply to a black-box audit", None),
    ("rescore-units-tokens", ["audit", "--model", "{run}", "--rescore", "10"],
     "--rescore applies only to --units words", None),
    ("bench-preset-with-reference", ["audit-bench", "--reference", "{run}", "--preset", "cpu"],
     "--preset does not apply with --reference", None),
    ("device-unknown", ["eval", "--model", "{run}", "--device", "gpu"],
     "unknown device 'gpu'", None),
    ("device-negative-index", ["eval", "--model", "{run}", "--device", "cpu:-1"],
     "device 'cpu:-1'", None),
    ("examples-ten-million", ["targets", "--like", "x", "--examples", "10000000"],
     "--examples must be in 0..1_000_000", None),
    ("eval-model-a-file", ["eval", "--model", "{text}"],
     "model directory {text} is a file, not a folder", None),
    ("init-a-file", ["train", "--init", "{text}"],
     "model directory {text} is a file, not a folder", None),
    ("audit-model-a-fifo", ["audit", "--model", "{fifo}", "--baseline", "{text}"],
     "text file", None),
    ("resume-with-out", ["run", "--resume", "{run}", "--out", "{tmp}/new"],
     "--out is fixed by the run being resumed", None),
    ("lr-negative-parses", ["train", "--lr", "-1e-3"],
     "--lr must be a positive number, got -0.001", None),
    ("rates-negative-parses", ["sweep", "--init", "scratch", "--rates", "-0.1,0.2"],
     "--rates must be strictly between 0 and 1, got -0.1", None),
    ("beta-minus-inf-parses", ["train", "--mode", "tilt", "--beta", "-inf"],
     "--beta must be a finite number, got -inf", None),
]  # fmt: skip


@pytest.fixture
def place(tmp_path, finished_run, model_dir):
    """The placeholders of a case: copies of the run and the model (hard links, so cheap),
    and its files."""
    run, model = tmp_path / "run", tmp_path / "model"
    shutil.copytree(finished_run, run, copy_function=os.link)
    shutil.copytree(model_dir, model, copy_function=os.link)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    names = {"run": str(run), "model": str(model), "tmp": str(scratch)}
    names |= {name: make(scratch) for name, make in FILES.items()}
    return names


def _state(folder) -> dict:
    """Every file of a folder with its inode, size and time of change: a write shows. (Its
    lock file records the pid of the last process that locked it.)"""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.name == LOCK_FILE:
            continue
        st = p.lstat()
        out[str(p.relative_to(folder))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize(
    "args, message, damage", [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_inputs_get_one_line_and_change_nothing(
    args, message, damage, place, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    if damage is not None:
        damage(tmp_path / ("model" if "{model}" in args else "run"))
    before = _state(run)
    err = one_line_error(capsys, [a.format(**place) for a in args], message.format(**place))
    assert len(err) < 400, err  # user text is quoted in part, never whole
    assert _state(run) == before
    assert not (tmp_path / "runs").exists()


# ---- System errors: one line naming the path, and nothing damaged.


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    """safetensors' own error on a full disk, mid-save of step 2's optimizer state (no real
    full disk is needed): step 1's checkpoint stays whole, step 2's partial files go."""
    from safetensors import SafetensorError

    import likex.models.checkpoint as checkpoint

    real, calls = checkpoint.save_file, []

    def full_disk(tensors, path):
        calls.append(path)
        if len(calls) == 2:
            raise SafetensorError(
                "Error while serializing: I/O error: No space left on device (os error 28) at "
                f'path "{path}"'
            )
        real(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    out = tmp_path / "full"
    err = one_line_error(
        capsys,
        ["run", *TINY, "--steps", "3", "--save-every", "1", "--out", str(out)],
        "cannot write the checkpoint of step 2 in",
    )
    assert "No space left on device; its partial files are removed" in err
    assert f"{out} is kept: --resume {out} continues from step 1" in err
    assert [p.name for p in (out / CHECKPOINTS_DIR).iterdir()] == ["step-000000001"]
    assert latest_checkpoint(out)[1] == 1


def test_a_failed_save_names_the_system_error_and_removes_its_files(tmp_path, monkeypatch):
    """The same for an OSError (the manifest's write): the message is the system's reason."""
    import likex.models.checkpoint as checkpoint

    model = build_model(preset_config("tiny"), 0)
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(model, optimizer, 1, tmp_path)
    real = checkpoint.atomic_write_json

    def full(path, doc):
        if path.name == "manifest.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, doc)

    monkeypatch.setattr(checkpoint, "atomic_write_json", full)
    removed = "of step 2 in .*manifest.json.*: No space left on device; its partial files are re"
    with pytest.raises(LikexError, match=removed):
        save_checkpoint(model, optimizer, 2, tmp_path)
    assert [p.name for p in (tmp_path / CHECKPOINTS_DIR).iterdir()] == ["step-000000001"]
    assert latest_checkpoint(tmp_path)[1] == 1


def test_a_run_folder_that_cannot_be_written_is_one_line(
    finished_run, tmp_path, capsys, monkeypatch
):
    """--resume into a folder without write permission. Tests run as root here, and root
    writes anywhere whatever the mode, so chmod cannot show it: the lock file's creation
    (the first write of a resume) fails as the system would."""
    import likex.runs

    real = likex.runs.os.open

    def denied(path, *args, **kwargs):
        if str(path).endswith(LOCK_FILE):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(likex.runs.os, "open", denied)
    one_line_error(
        capsys,
        ["run", "--resume", str(finished_run), "--steps", "3"],
        f"cannot write into the run folder {finished_run}: Permission denied",
    )


def test_any_system_error_is_one_line_naming_its_path(capsys, monkeypatch):
    """A read-only file system met anywhere in a command: the CLI's one place for them."""
    import likex.pipelines.targets

    def read_only(cfg, progress=True):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/ro/out/config.json")

    monkeypatch.setattr(likex.pipelines.targets, "list_targets", read_only)
    one_line_error(
        capsys, ["targets", "--like", "x"], "/mnt/ro/out/config.json: Read-only file system"
    )


def test_a_system_error_in_a_run_keeps_its_checkpoint_or_removes_it(tmp_path):
    from likex.pipelines.training import on_failure

    run_dir = tmp_path / "full"
    run_dir.mkdir()
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run_dir / "metrics.jsonl"))
    with pytest.raises(LikexError) as e, on_failure(run_dir, remove=True):
        raise full
    assert str(e.value) == (
        f"{clip_path(run_dir / 'metrics.jsonl')}: No space left on device; "
        f"removed the half-written {run_dir}"
    )
    assert not run_dir.exists()


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    """`likex targets ... | head -1`: status 141 (128 + SIGPIPE, what the shell shows for
    any Unix tool SIGPIPE ends), no traceback, not even at the interpreter's exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "likex", "targets", "--like", "e", "--examples", "20000", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout.readline().strip() == b"{"
    proc.stdout.close()
    assert proc.wait() == 141
    assert proc.stderr.read() == b""


def test_checkpoint_files_have_the_usual_modes(finished_run):
    """0644 files, 0755 folders under the usual umask: what every other file of a run has
    (mkstemp, mkdtemp and safetensors make 0600 and 0700)."""
    mask = os.umask(0)
    os.umask(mask)
    for p in [finished_run, *finished_run.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o777 if p.is_dir() else 0o666) & ~mask, (p, oct(mode))


def test_a_run_folder_is_locked_while_in_use(tmp_path):
    busy = rf"in use by another likex process \(pid {os.getpid()}\)"
    with RunLock(tmp_path), pytest.raises(LikexError, match=busy):
        RunLock(tmp_path).__enter__()
    with RunLock(tmp_path):  # released when its holder is done
        pass


# ---- Inputs read as the README says, and values argparse alone would take for flags.


def test_a_byte_order_mark_is_no_part_of_the_first_entry(tmp_path):
    words = tmp_path / "words.txt"
    words.write_bytes("\ufeffcat\ndog\n".encode())
    assert read_words(words) == ("cat", "dog")
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes("\ufeffSome text.".encode())
    assert load_corpus_text(str(corpus)) == "Some text."


@pytest.mark.parametrize(
    "args, path, value",
    [
        (["train", "--mode", "tilt", "--beta", "-1e6"], ("run", "train", "beta"), -1e6),
        (["train", "--mode", "tilt", "--beta", "-2"], ("run", "train", "beta"), -2.0),
        (
            ["sweep", "--init", "scratch", "--mode", "tilt", "--betas", "-1,-0.5"],
            ("betas",),
            (-1, -0.5),
        ),
        (["targets", "--like", "x", "--examples", "-5"], ("examples",), -5),
        (
            ["audit", "--model", ".", "--baseline", ".", "--shift", "-.1", "0.2"],
            ("black", "shift"),
            (-0.1, 0.2),
        ),
    ],
)
def test_negative_numbers_are_values_not_flags(args, path, value):
    from likex.cli import _table, build_config, build_parser

    parser, flags = build_parser()
    cfg = build_config(_table()[args[0]], parser.parse_args(args), flags[args[0]])
    for name in path:
        cfg = getattr(cfg, name)
    assert cfg == value


def test_a_run_folder_from_before_run_ids_still_resumes(finished_run, tmp_path, capsys):
    """No "run_id" in config.json nor in the manifest, no settings in the manifest: written
    by an earlier likex. Not checked against an id, and resumed as before."""
    old = tmp_path / "old"
    shutil.copytree(finished_run, old)
    _config(lambda c: c.pop("run_id"))(old)
    _manifest(lambda m: (m.pop("run_id"), m.pop("settings")))(old)
    assert RunRecord.load(old).run_id is None
    assert main(["run", "--resume", str(old), "--steps", "3", "--quiet"]) == 0, capsys.readouterr()
    steps = [json.loads(r)["step"] for r in (old / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3] and "run_id" not in json.loads((old / "config.json").read_text())


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "--model", "smollm2-135m", "--corpus", "{tmp}/missing.txt"], "not found"),
        (["eval", "--model", "{run}", "--reference", "{tmp}/gone"], "not found"),
        (["train", "--corpus", "{tmp}"], "is a directory"),
        (["persist", "--model", "{run}", "--corpus", "{fifo}"], "(a FIFO)"),
        (["run", "--out", "{full_dir}"], "already exists and is not empty"),
        (["audit", "--model", "{run}", "--baseline", "{text}", "--out", "{full_dir}"], "not empty"),
        (["targets", "--model", "{run}", "--words", "{tmp}"], "is a directory"),
    ],
)
def test_paths_are_checked_before_any_model_is_loaded(args, message, place, capsys, monkeypatch):
    """Every kind of start refuses to load here: a path is checked as the command line is
    read, not after a model took seconds to load (SmolLM2: 7-16 s)."""
    import likex.models.start as start

    def no_load(self, device="cpu"):
        raise AssertionError("a model was loaded before the paths were checked")

    for kind in (start.Scratch, start.Saved, start.Pretrained):
        monkeypatch.setattr(kind, "load", no_load)
    one_line_error(capsys, [a.format(**place) for a in args], message)
