"""The first minutes of use: what a training command will cost, --quick, progress bars with
the time left, what was probably meant by a misspelled name or flag, and what a rate of 0
with an upper bound means."""

import re
import sys

import numpy as np
import pytest
import torch

from likex.cli import _unknown_word, build_parser, main
from likex.config import QUICK_GEN_TOKENS, QUICK_SAMPLES, QUICK_STEPS, RunCommand, RunConfig
from likex.estimate import Estimate, Speed, Work
from likex.measurement.rates import MeasureConfig, PromptKind, WordRate, rate_from_hits
from likex.measurement.scores import score_text
from likex.models import hf
from likex.models.gpt import build_model, preset_config
from likex.pipelines.run import run_experiment
from likex.stats.intervals import rate_interval
from likex.train_config import TrainConfig

SMALL = ["--preset", "tiny", "--steps", "3", "--samples", "2", "--gen-tokens", "8"]
SMALL += ["--ci-width", "0", "--batch-size", "4"]


def _estimate_lines(err: str) -> list[str]:
    return [line for line in err.replace("\r", "\n").splitlines() if line.startswith("likex:")]


def test_a_training_command_says_what_it_will_cost_before_it_starts(tmp_path, capsys):
    assert main(["run", *SMALL, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    (line,) = _estimate_lines(err)
    assert re.fullmatch(
        r"likex: about [\d.-]+ (s|min|h)( to [\d.]+ (min|h))? on this machine "
        r"\(3 steps x ~[\d.]+ s, measuring 2 x 2 samples\); --quick for a first look",
        line,
    ), line
    assert err.index(line) < err.index("measure:")  # before the work, not after it
    # --quick given: no hint; --quiet and --json: no line at all
    assert main(["run", *SMALL, "--quick", "--out", str(tmp_path / "b")]) == 0
    (line,) = _estimate_lines(capsys.readouterr().err)
    assert "3 steps" in line and "--quick" not in line
    for flag in ("--quiet", "--json"):
        assert main(["run", *SMALL, flag, "--out", str(tmp_path / flag)]) == 0
        assert _estimate_lines(capsys.readouterr().err) == []


def test_the_estimate_is_timed_on_the_run_and_changes_nothing(tmp_path):
    """The estimate counts the run's own work at speeds timed on its model; the run that
    timed it draws exactly what a run without an estimate draws."""
    cfg = RunConfig(
        preset="tiny",
        command="train",
        corpus="builtin",
        eval_every=2,
        train=TrainConfig(steps=3, batch_size=4, mode="rate", rate=0.2),
        measure=MeasureConfig(samples=4, gen_tokens=8, ci_half_width=None, score_tokens=64),
    )
    seen: list[Estimate] = []
    timed = run_experiment(cfg, tmp_path / "a", progress=False, on_estimate=seen.append)
    plain = run_experiment(cfg, tmp_path / "b", progress=False)
    assert timed.to_json()["rate_after"] == plain.to_json()["rate_after"]
    assert timed.run.trained.losses == plain.run.trained.losses
    (estimate,) = seen
    # before: random + text rates, text scored; after: both rates, scored with R (twice);
    # every 2 steps and at the last: one more rate (steps 2 and 3)
    assert estimate.work == Work(steps=3, measurements=6, scorings=3)
    assert estimate.samples == (4, 4) and estimate.score_tokens == 64
    s = estimate.speed
    assert s.step > 0 and s.sequence > 0 and s.scoring > 0
    low, high = estimate.seconds()
    assert low == high == pytest.approx(3 * s.step + 6 * 4 * s.sequence + 3 * s.scoring)


def test_an_estimate_scales_with_the_work_and_says_so():
    speed = Speed(step=0.2, sequence=0.5, scoring=3.0)
    e = Estimate(Work(200, 2), speed, samples=(16, 64), score_tokens=4096)
    assert e.seconds() == pytest.approx((40 + 16, 40 + 64))
    assert e.describe() == (
        "about 1-2 min on this machine (200 steps x ~0.2 s, measuring 2 x up to 64 samples)"
    )
    longer = Estimate(Work(2000, 2, 3), speed, samples=(64, 64), score_tokens=4096)
    assert longer.seconds()[0] == pytest.approx(400 + 64 + 9)
    assert longer.describe() == (
        "about 8 min on this machine (2000 steps x ~0.2 s, measuring 2 x 64 samples, "
        "scoring 3 x 4,096 held-out tokens)"
    )
    assert Estimate(Work(20, 4), speed, (16, 64), 0).describe().startswith("about 35 s to 2 min")
    assert (Work(3, 1, 2) + Work(5, 1) * 2) == Work(13, 3, 2)


def test_quick_is_a_first_look_that_keeps_the_flags_given():
    quick = RunCommand(quick=True, given=frozenset({"quick"})).config()
    assert quick.train.steps == QUICK_STEPS
    assert (quick.measure.samples, quick.measure.gen_tokens) == (QUICK_SAMPLES, QUICK_GEN_TOKENS)
    default = RunCommand().config()
    assert default.train.steps > QUICK_STEPS and default.measure.samples > QUICK_SAMPLES
    given = RunCommand(
        RunConfig(train=TrainConfig(steps=7)), quick=True, given=frozenset({"quick", "steps"})
    ).config()
    assert given.train.steps == 7 and given.measure.samples == QUICK_SAMPLES


def test_quick_runs_from_the_command_line(tmp_path, run_json):
    args = ["--preset", "tiny", "--quick", "--steps", "2", "--samples", "2", "--quiet"]
    result = run_json(["run", *args, "--out", str(tmp_path / "q")])
    assert result["steps"] == 2 and result["gen_tokens"] == QUICK_GEN_TOKENS
    assert result["samples"] <= QUICK_SAMPLES


@pytest.mark.parametrize("progress", [True, False])
def test_scoring_shows_the_time_left_unless_quiet(progress, capsys):
    model = build_model(preset_config("tiny"), seed=0)
    windows = torch.randint(0, 50257, (6, 65), generator=torch.Generator().manual_seed(0))
    score_text(model, windows, progress=progress)
    err = capsys.readouterr().err
    # tqdm's [elapsed<remaining] (a bar that vanishes when done may show only its start)
    assert bool(re.search(r"score: .*\d/6 \[\d\d:\d\d<", err)) is progress, err


@pytest.mark.parametrize("progress", [True, False])
def test_a_models_loading_bar_is_shown_unless_quiet(progress, tiny_llama, monkeypatch, capsys):
    """transformers draws a bar over the weights it loads (a GGUF's: as it dequantizes them)
    behind its own switch, which likex turns on while a model loads where progress is on;
    the tokenizer's reading of a GGUF, which draws past the switch, stays quiet."""
    transformers = hf._transformers()
    model_load = transformers.AutoModelForCausalLM.from_pretrained
    tokenizer_load = transformers.AutoTokenizer.from_pretrained

    def load_model(name, gguf_file, **kwargs):
        for _ in transformers.utils.logging.tqdm(range(30), desc="Loading weights"):
            pass
        return model_load(name, **kwargs)

    def load_tokenizer(name, gguf_file, **kwargs):
        sys.stderr.write("tokenizer: 100%|##| 30/30 [00:01<00:00]\n")
        return tokenizer_load(name, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", load_model)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", load_tokenizer)
    hf.load_hf(str(tiny_llama), gguf_file="model.gguf", progress=progress)
    err = capsys.readouterr().err
    shown = re.search(r"Loading weights: 100%.*30/30 \[\d\d:\d\d<\d\d:\d\d", err)
    assert bool(shown) is progress and "tokenizer" not in err, err
    assert not transformers.utils.logging.is_progress_bar_enabled()  # off again after


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--init", "smollm2-135"], "no folder or named model 'smollm2-135'; did you mean "
         "smollm2-135m? (named models: smollm2-135m; a transformers model: hf:NAME)"),
        (["eval", "--model", "smolm2-135m"], "did you mean smollm2-135m? (named models: "),
        (["eval", "--model", "gpt5"], "no folder or named model 'gpt5' (named models: "),
        (["eval", "--steps", "3"], "--steps is an option of likex run, train, pretrain, sweep, "
         "persist, audit-bench and zoo build, not of likex eval"),
        (["run", "--baseline", "x"], "--baseline is an option of likex audit, not of likex run"),
        (["run", "--mode", "rate"], "--mode is an option of likex train and sweep, not of likex"),
        (["run", "--stesp", "3"], "likex run has no option '--stesp'; did you mean --steps?"),
        (["audit", "--model", "m", "--shfit=1"], "has no option '--shfit'; did you mean --shift?"),
        (["run", "--zzz"], "likex run has no option '--zzz'; see likex run --help"),
        (["rn"], "unknown command 'rn'; did you mean run?"),
    ],
)  # fmt: skip
def test_a_misspelling_is_refused_with_what_was_meant(args, message, capsys):
    try:
        status = main(args)  # a name is refused as its flag is read
    except SystemExit as e:  # a flag by the parser
        status = e.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("likex: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err, err


def test_only_words_in_a_flags_place_are_checked():
    """Negative numbers and what follows ``--`` are values; an abbreviation argparse takes is
    the flag; what argparse says itself (a missing command) is left to it."""
    commands = build_parser()[0].commands
    assert _unknown_word(["run", "--ste", "2", "--lr=-1e6", "-h", "--", "--x"], commands) is None
    assert _unknown_word(["--version"], commands) is None
    assert _unknown_word(["run", "--lr", "3", "--bogus"], commands) == (
        "likex run has no option '--bogus'; see likex run --help"
    )


def test_a_rate_of_zero_says_what_its_upper_bound_means():
    words = np.array([95] * 15 + [102])  # 1,527 words in 16 samples, no entry among them
    p, lo, hi, _, deff = rate_interval(np.zeros(16), words)
    rate = WordRate(p, (lo, hi), 0, 1527, 16, deff, 0, 0, {"Pfizer": 0}, PromptKind.TEXT)
    assert rate.describe().startswith("word rate 0.000 [0.000, 0.206]")
    assert "none seen in 1,527 words: 16 samples rule out only rates above 0.206" in (
        rate.describe()
    )
    tokens = rate_from_hits(torch.zeros(16), 200, PromptKind.RANDOM)
    assert "none seen in 3,200 tokens: 16 samples rule out only rates above 0.206" in (
        tokens.describe()
    )
    seen = rate_from_hits(torch.tensor([1.0] + [0.0] * 15), 200, PromptKind.RANDOM)
    assert "none seen" not in seen.describe()


def test_the_zero_note_is_printed_with_a_runs_rates(tmp_path, capsys):
    args = [*SMALL, "--token-ids", "12345", "--quiet", "--out", str(tmp_path / "r")]
    assert main(["run", *args]) == 0
    out = capsys.readouterr().out
    assert "before 0.000 [0.000, 0.842]  n=2 (none seen in 16 tokens: 2 samples rule out " in out
