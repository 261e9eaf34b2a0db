"""Every kind of run folder is one typed run record: eval reads each the same way, and
config.json keeps the keys it always had."""

import json
from dataclasses import replace

import pytest

from likex.cli import main
from likex.corpora import Corpora
from likex.models.start import Pretrained, Saved, Scratch, parse_start, start_from_record
from likex.objective import NextToken, Rate, Uniform
from likex.runs import RunRecord

QUIET = ["--quiet"]
MEASURE = ["--samples", "2", "--ci-width", "0", "--gen-tokens", "8"]
SMALL = [*MEASURE, "--score-tokens", "64"]  # likex run scores no held-out text: MEASURE
TRAIN_KEYS = {
    "steps", "batch_size", "context_len", "lr", "weight_decay", "optimizer", "seed", "mode",
    "rate", "beta", "complete", "word_contexts", "contexts", "positions", "save_every",
    "compile", "cuda_graph", "objective",
    "shares", "word_positions",  # since the sequence-level word target
}  # fmt: skip
RUN_KEYS = {
    "command", "init_from", "corpus", "block_size", "preset", "weight_init", "target", "train",
    "measure", "eval_every", "device", "model", "init", "world_size", "seed", "device_used",
    "versions", "created", "sample_batch", "run_id",
}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One folder of each kind, on the tiny preset, two steps each."""
    root = tmp_path_factory.mktemp("kinds")
    tiny = ["--preset", "tiny", "--steps", "2"]
    rate = ["--mode", "rate", "--rate", "0.3", "--like", "z", "--contexts", "corpus"]
    commands = {
        "run": ["run", *tiny, *MEASURE],
        "train": ["train", *tiny, *rate, "--corpus", "builtin", *SMALL],
        "pretrain": ["pretrain", *tiny, "--context-len", "32", "--batch-size", "4"]
        + ["--score-tokens", "64"],
        "sweep": ["sweep", "--init", "scratch", *tiny, "--mode", "rate", "--rates", "0.2"]
        + ["--like", "z", "--contexts", "corpus", *SMALL],
    }
    folders = {}
    for kind, args in commands.items():
        assert main([*args, "--out", str(root / kind), *QUIET]) == 0, kind
        folders[kind] = root / kind
    folders["sweep"] = root / "sweep" / "rate-0.2"
    persist = ["persist", "--model", str(folders["train"]), "--steps", "2", "--eval-every", "2"]
    persist += ["--samples", "2", "--gen-tokens", "8", "--out", str(root / "persist")]
    assert main([*persist, *QUIET]) == 0
    folders["persist"] = root / "persist"
    return folders


@pytest.mark.parametrize(
    ("kind", "like", "objective"),
    [
        ("run", "tokens containing 'x'", Uniform()),
        ("train", "tokens containing 'z'", Rate(0.3)),
        ("pretrain", "tokens containing 'x'", NextToken()),
        ("sweep", "tokens containing 'z'", Rate(0.2)),
        ("persist", "tokens containing 'z'", NextToken()),
    ],
)
def test_eval_reads_every_kind_of_run_folder(runs, run_json, kind, like, objective):
    record = RunRecord.load(runs[kind])
    assert record.train.objective == objective
    r = run_json(["eval", "--model", str(runs[kind]), *SMALL, *QUIET])
    assert r["like"] == like  # the run's own target, none given
    assert r["reference"] == "starting model" and "kl_to_reference" in r
    assert r["corpus"] == "builtin"
    assert ("floor_rate" in r) == isinstance(objective, Rate)


def test_a_persist_folder_records_its_start_and_target(runs):
    record = RunRecord.load(runs["persist"])
    assert record.command == "persist" and record.plan is None
    assert record.start == Saved(str(runs["train"].resolve()), record.start.sha256)
    assert record.target.like == "z"


@pytest.mark.parametrize("kind", ["run", "train", "pretrain", "sweep"])
def test_config_json_keeps_its_keys(runs, kind):
    config = json.loads((runs[kind] / "config.json").read_text())
    assert config.keys() == RUN_KEYS and config["train"].keys() == TRAIN_KEYS
    record = RunRecord.load(runs[kind])
    assert {k: config[k] for k in record.plan.to_dict()} == record.plan.to_dict()
    assert config["init"] == record.start.record()


def test_a_train_record_from_before_the_sequence_level_word_target_reads_as_it_ran(runs):
    """config.json written before ``shares`` and ``word_positions``: "complete" 1.0 was every
    run's, so a word run resumes with the per-token word target it trained toward."""
    from likex.train_config import TrainPlan

    train = json.loads((runs["train"] / "config.json").read_text())["train"]
    old = {k: v for k, v in train.items() if k not in ("shares", "word_positions")}
    plan = TrainPlan.from_dict(old | {"complete": 1.0})
    assert plan.objective == Rate(0.3, 1.0) and plan.objective.word_strength() is None
    assert TrainPlan.from_dict(train).objective.word_strength() is not None


def test_starts_parse_once_and_round_trip_through_their_records(runs, tmp_path):
    scratch = Scratch.of("tiny", "gpt2", seed=3)
    assert parse_start("scratch", scratch) is scratch
    assert parse_start("smollm2-135m") == Pretrained("smollm2-135m")
    assert parse_start("hf:gpt2") == Pretrained("hf:gpt2")
    assert parse_start(str(runs["run"])) == Saved(str(runs["run"]))
    assert start_from_record(scratch.record(), "x") == Scratch(scratch.config, 3)
    saved = Saved(str(runs["run"]))
    again = start_from_record(saved.record(), "x")
    assert again.sha256 is not None and again.load()[0].num_params() > 0
    # a recorded start whose weights changed since is refused, never silently used
    changed = Saved(str(runs["run"]), "0" * 64)
    with pytest.raises(Exception, match="has changed since"):
        changed.load()


def test_a_finished_run_says_where_its_report_is_and_what_to_run_next(runs):
    from likex.pipelines.run import resume_experiment

    done = resume_experiment(runs["run"], steps=3, progress=False).describe().splitlines()
    assert done[-2] == f"  report    {runs['run'] / 'report.html'}"
    assert done[-1] == f"  next      likex audit --model {runs['run']}"
    assert (runs["run"] / "report.html").is_file()
    pre = resume_experiment(runs["pretrain"], steps=3, progress=False)
    first_plant = f"  next      likex train --init {runs['pretrain']} --mode rate --rate 0.1"
    assert pre.describe().splitlines()[-1] == f"{first_plant} --corpus builtin"
    # a reference pretrained on several corpora: its first plant on the same text
    several = replace(pre.run, corpus=Corpora.of(["builtin", "notes.txt=2"]))
    assert several.closing_lines()[-1] == f"{first_plant} --corpus builtin --corpus notes.txt=2"
