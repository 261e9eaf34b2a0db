"""`likex audit`, `likex audit-bench` and `likex persist` end to end on the tiny preset."""

import re

import pytest

from likex.cli import main
from likex.models.checkpoint import save_model
from likex.models.gpt import build_model, preset_config
from likex.runs import read_metrics

TINY_RUN = [
    "--preset",
    "tiny",
    "--quiet",
    "--samples",
    "4",
    "--ci-width",
    "0",
    "--gen-tokens",
    "24",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "seed"
    assert main(["run", *TINY_RUN, "--steps", "60", "--like", "z", "--out", str(out)]) == 0
    return out


def test_white_box_audit_of_a_run_names_its_target(tiny_run, run_json, capsys, tmp_path):
    args = ["audit", "--model", str(tiny_run), "--n-probes", "8", "--quiet"]
    r = run_json([*args, "--probes", "random", "--out", str(tmp_path / "a")])
    assert r["audit"] == "white-box" and r["detected"]
    top = r["findings"][0]
    assert top["predicate"] == "contains 'z'" and top["n_tokens"] == 623 and top["share"] > 0.3
    assert r["evidence"]["shift"] >= r["evidence"]["threshold"] == r["threshold"]
    assert top["pattern"] == {"kind": "contains", "text": "z", "ignore_case": False}
    assert r["boosted_tokens"] and "z" in r["boosted_tokens"][0]["text"]
    assert {"audit.json", "audit.md", "audit.png"} <= {p.name for p in (tmp_path / "a").iterdir()}
    assert main([*args, "--probes", "both"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"1\. tokens containing 'z' \(623 tokens\): KL share \d+%, shift \+", text)


def test_black_box_audit_against_text(tiny_run, run_json, tmp_path):
    text = tmp_path / "plain.txt"
    text.write_text(
        "The quick brown fox jumps over the lazy dog. " * 30
        + "An ordinary sentence about the weather and the sea. " * 30
    )
    r = run_json(
        [
            "audit",
            "--model",
            str(tiny_run),
            "--baseline",
            str(text),
            "--samples",
            "12",
            "--gen-tokens",
            "40",
            "--quiet",
        ],
    )
    assert r["audit"] == "black-box" and r["suspect_samples"] == 12 and r["suspect_tokens"] == 480
    assert r["baseline_samples"] >= r["min_samples_per_side"] and r["n_tests"] > 0
    assert r["power"]["samples"] >= r["min_samples_per_side"] and r["power"]["design_effect"] >= 1
    assert r["findings"], "a black-box audit lists its best-ranked predicates"
    keys = {"predicate", "pattern", "rate_suspect", "rate_baseline", "t", "df", "p_value"}
    assert keys <= set(r["findings"][0])


def test_persist_records_the_rate_as_it_decays(tiny_run, run_json, tmp_path):
    out = tmp_path / "p"
    r = run_json(
        [
            "persist",
            "--model",
            str(tiny_run),
            "--steps",
            "4",
            "--eval-every",
            "2",
            "--samples",
            "2",
            "--gen-tokens",
            "16",
            "--batch-size",
            "4",
            "--quiet",
            "--out",
            str(out),
        ],
    )
    assert [row["step"] for row in r["timeline"]] == [0, 2, 4]
    first = r["timeline"][0]
    assert first["rate_random"]["prompts"] == "random tokens"
    assert first["rate_text"]["prompts"] == "real text"
    assert first["rate_random"]["ci"][0] <= first["rate_random"]["rate"]
    assert r["target"] == "tokens containing 'z'" and r["perplexity_after"] > 1
    names = {p.name for p in out.iterdir()}
    assert {"persist.json", "persist.md", "persistence.png", "model.safetensors"} <= names
    # The training loop's metrics carry every step's loss and each measurement on its step.
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert r["loss_first"] == metrics[0]["loss"] and r["loss_last"] == metrics[-1]["loss"]
    measured = [m for m in metrics if "perplexity" in m]
    assert [m["step"] for m in measured] == [2, 4]
    for m, row in zip(measured, r["timeline"][1:], strict=True):
        assert {k: m[k] for k in row} == row


def test_audit_bench_smallest(tmp_path, run_json):
    out = tmp_path / "bench"
    r = run_json(
        [
            "audit-bench",
            "--predicates",
            "1",
            "--strengths",
            "uniform",
            "--controls",
            "1",
            "--steps",
            "40",
            "--samples",
            "12",
            "--gen-tokens",
            "40",
            "--n-probes",
            "8",
            "--quiet",
            "--out",
            str(out),
        ],
    )
    strengths = [row["strength"] for row in r["table"]]
    assert strengths == ["uniform", "control"]
    assert r["table"][0]["white"]["n"] == 1 and r["power_0.006_to_0.05"]["samples"] > 0
    names = {p.name for p in out.iterdir()}
    assert {"audit_bench.json", "audit_bench.md", "audit_power.png", "cases.jsonl"} <= names


@pytest.fixture(scope="module")
def small_vocab_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    save_model(build_model(preset_config("tiny", vocab_size=1000), 0), d)
    return d


@pytest.mark.parametrize(
    "args, message",
    [
        (["audit", "--model", "/nonexistent/dir"], "not found"),
        (["audit", "--model", "{run}", "--reference", "/nonexistent/dir"], "not found"),
        (["audit", "--model", "{run}", "--baseline", "/nonexistent/file.txt"], "not found"),
        (["audit", "--model", "{run}", "--reference", "{small}"], "vocabulary of 1000"),
        (["audit", "--model", "{small}"], "not a run folder"),
        (["audit", "--model", "{run}", "--reference", "{run}", "--baseline", "{run}"], "not both"),
        (["audit", "--model", "{run}", "--n-probes", "0"], "must be positive"),
        (["audit", "--model", "{run}", "--baseline", "{run}", "--alpha", "2"], "--alpha"),
        (["persist", "--model", "{run}", "--corpus", "/nonexistent.txt"], "not found"),
        (["persist", "--model", "{run}", "--steps", "0"], "--steps must be in 1..10_000_000"),
        (["persist", "--model", "{small}"], "no target given"),
        (["audit-bench", "--strengths", "0.1,huge"], "strength"),
        (["audit-bench", "--reference", "/nonexistent/dir"], "not found"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    args, message, tiny_run, small_vocab_model, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    args = [a.format(run=tiny_run, small=small_vocab_model) for a in args]
    out = tmp_path / "out"
    assert main([*args, "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "runs").exists()
