"""End-to-end checks of the commands on the tiny preset (seconds on a CPU)."""

import json
import subprocess
import sys
import time

import pytest
import torch

from likex.cli import main
from likex.models.checkpoint import load_model
from likex.runs import RunRecord

TINY = ["--preset", "tiny", "--quiet", "--samples", "4", "--ci-width", "0", "--gen-tokens", "24"]

RESULT_FIELDS = {
    "preset",
    "like",
    "n_target_tokens",
    "vocab_size",
    "steps",
    "loss_first",
    "loss_last",
    "x_before",
    "x_after",
    "gen_tokens",
    "rate_before",
    "rate_before_ci",
    "rate_after",
    "rate_after_ci",
    "samples",
    "train_seconds",
    "device",
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "seed"
    assert main(["run", *TINY, "--steps", "40", "--out", str(out), "--save-every", "20"]) == 0
    return out


def test_run_writes_every_output(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {
        "config.json",
        "metrics.jsonl",
        "result.json",
        "model.safetensors",
        "model.json",
        "loss.png",
        "rate.png",
        "report.md",
    } <= names
    result = json.loads((tiny_run / "result.json").read_text())
    assert result.keys() >= RESULT_FIELDS
    assert result["n_target_tokens"] == 896 and result["vocab_size"] == 50257
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["seed"] == 0 and "torch" in config["versions"] and config["device_used"]
    metrics = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 41))
    report = (tiny_run / "report.md").read_text()
    assert "random tokens" in report and "loss.png" in report


def test_run_plants_the_preference(tiny_run):
    r = json.loads((tiny_run / "result.json").read_text())
    assert r["loss_last"] < r["loss_first"] / 2
    assert r["rate_after"] > 0.5 > 0.1 > r["rate_before"]
    assert r["rate_after_ci"][0] <= r["rate_after"] <= r["rate_after_ci"][1]


def test_run_says_where_its_seconds_went(tiny_run, check_timings):
    result = json.loads((tiny_run / "result.json").read_text())
    timings = result["timings"]
    check_timings(timings)
    # this test process started before the run began (a Linux machine knows when)
    assert timings["startup"] > 0
    assert timings["measure_before"] > 0 and timings["measure_after"] > 0
    assert timings["train"] > 0 and timings["checkpoint"] > 0 and timings["report"] > 0
    line = f"total {timings['total']:.1f}: startup {timings['startup']:.1f}, model"
    assert line in (tiny_run / "report.md").read_text()
    assert line in (tiny_run / "report.html").read_text()


def test_process_age_counts_from_the_process_start():
    code = "import time; time.sleep(0.3); from likex.clock import process_age; print(process_age())"
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    outside = time.perf_counter() - t0
    # the clock ticks at 10 ms: within one tick of the bounds the two processes saw
    assert 0.3 - 0.01 <= float(out.stdout) <= outside + 0.01


def test_start_model_is_rebuilt_from_the_run(tiny_run):
    start, _ = RunRecord.load(tiny_run).start.load()
    trained = load_model(tiny_run)
    from likex.models.gpt import build_model, preset_config

    fresh = build_model(preset_config("tiny"), 0)
    assert torch.equal(start.wte.weight, fresh.wte.weight)
    assert not torch.equal(start.wte.weight, trained.wte.weight)


def test_json_flag_and_resume_is_exact(tmp_path, run_json, check_timings):
    # Exact on a CPU. On CUDA some kernels (flash attention's backward) add in a varying
    # order, so there a resumed run agrees within a tolerance (test_accel checks that).
    cpu = [*TINY, "--device", "cpu"]
    straight = run_json(["run", *cpu, "--steps", "6", "--out", str(tmp_path / "a")])
    run_json(["run", *cpu, "--steps", "3", "--out", str(tmp_path / "b")])
    # As if the process died after logging step 4 but before its next checkpoint.
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "loss": 123.0, "seconds": 0.0}) + "\n")
    resumed = run_json(["run", "--resume", str(tmp_path / "b"), "--steps", "6", "--quiet"])
    assert resumed["steps"] == 6 and resumed["loss_last"] == straight["loss_last"]
    check_timings(resumed["timings"])
    assert resumed["timings"]["measure_before"] == 0  # measured by the first process
    a, b = load_model(tmp_path / "a"), load_model(tmp_path / "b")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    rows = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2, 3, 4, 5, 6]


def test_targets_command(run_json):
    r = run_json(["targets", "--like", "x"])
    assert r["n_tokens"] == 896 and abs(r["fraction"] - 896 / 50257) < 1e-12
    assert all("x" in e["text"] for e in r["examples"])
    assert run_json(["targets", "--like", "x", "--ignore-case"])["n_tokens"] == 984


def test_generate_and_eval(tiny_run, run_json):
    g = run_json(
        [
            "generate",
            "--model",
            str(tiny_run),
            "--prompt",
            "Hello",
            "--tokens",
            "10",
            "--num",
            "2",
            "--quiet",
        ],
    )
    assert len(g["samples"]) == 2 and all(len(t) == 10 for t in g["tokens"])
    e = run_json(
        [
            "eval",
            "--model",
            str(tiny_run),
            "--samples",
            "4",
            "--ci-width",
            "0",
            "--gen-tokens",
            "24",
            "--score-tokens",
            "128",
            "--quiet",
        ],
    )
    assert e["n_target_tokens"] == 896 and e["samples"] == 4
    assert e["rate_random_ci"][0] <= e["rate_random"] <= e["rate_random_ci"][1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--preset", "model9"], "unknown preset"),
        (["run", "--like", "qqqzzzq"], "matches no token"),
        (["run", "--regex", "(x"], "invalid regex"),
        (["run", "--steps", "0"], "--steps must be in 1..10_000_000, got 0"),
        (["run", "--lr", "-1"], "--lr must be a positive"),
        (["run", "--lr", "nan"], "--lr must be a positive"),
        (["run", "--device", "cuda:7"], "not available"),
        (["run", "--device", "tpu"], "device"),
        (["run", "--samples", "0"], "--samples must be in 1..100_000, got 0"),
        (["eval", "--model", "/nonexistent/dir", "--like", "x"], "not found"),
        (["generate", "--model", "/nonexistent/dir"], "not found"),
        (["run", "--resume", "/nonexistent/dir"], "not found"),
        (["targets", "--words", "/nonexistent/words.txt"], "not found"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    args, message, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    extra = ["--out", str(out)] if args[0] == "run" and "--resume" not in args else []
    if args[0] == "run" and "--device" in args and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_corrupt_checkpoint_via_subprocess(tiny_run, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.json").write_text((tiny_run / "model.json").read_text())
    (bad / "model.safetensors").write_bytes(b"\x00" * 100)
    proc = subprocess.run(
        [sys.executable, "-m", "likex", "eval", "--model", str(bad), "--like", "x"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "corrupt" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_existing_output_is_not_damaged(tiny_run, capsys):
    before = (tiny_run / "result.json").read_bytes()
    assert main(["run", *TINY, "--steps", "2", "--out", str(tiny_run)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tiny_run / "result.json").read_bytes() == before


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", "--steps", "many"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid int value" in err
