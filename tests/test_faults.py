"""Bad and adversarial input at every edge: one line `likex: error: ...`, exit status 2, no
traceback, nothing half-written left behind; and the NaN/inf guard."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from likex.cli import main
from likex.errors import LikexError
from likex.models.checkpoint import (
    CHECKPOINTS_DIR,
    MODEL_FILE,
    TRAINER_STATE,
    load_optimizer,
    save_model,
)
from likex.models.gpt import build_model, preset_config
from likex.target import TargetSpec, select_tokens

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
        ["audit", "--model", str(model_dir), "--reference", str(model_dir), "--alpha", "2"],
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
