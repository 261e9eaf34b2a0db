"""Detection power: plant biases of graded strength, audit them, count what the audits find.

Each planted case copies the reference model and trains it (the one training loop) toward a
predicate drawn from a pool, in ``uniform`` mode (the seed) or ``rate`` mode at a given
strength. Each control is trained the same way toward the reference's own distribution
(``tilt`` with beta 0), so it differs from the reference only by optimisation noise. Every
model then gets a white-box audit (against the reference) and a black-box audit (its samples
against the reference's); a case counts as found when the audit's top finding selects exactly
the planted tokens, a control as a false alarm when the audit reports any bias.
The ``likex audit-bench`` command (run folder, config.json, report) is likex.pipelines.bench.
"""

from __future__ import annotations

import copy
import random
import statistics
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from likex.audit.black_box import BlackBoxConfig, black_box_audit
from likex.audit.predicates import Predicate, PredicateIndex, check_vocab, predicate_from_key
from likex.audit.sampling import generate_samples
from likex.audit.white_box import (
    Finding,
    WhiteBoxConfig,
    detection_threshold,
    white_box_audit,
)
from likex.errors import ConfigError, LikexError
from likex.io import append_jsonl
from likex.models import LanguageModel
from likex.models.gpt import WEIGHT_INITS
from likex.models.start import Saved, Scratch, Start, model_arg
from likex.objective import Objective, Rate, Tilt, Uniform, strength_label, strengths_from
from likex.options import option
from likex.stats.intervals import wilson_interval
from likex.stats.power import PowerAnalysis, samples_needed, simulated_power
from likex.target import TargetSet
from likex.train import train_toward
from likex.train_config import TrainConfig, TrainPlan

CASES_FILE = "cases.jsonl"


def _fresh_reference(settings: object) -> str | None:
    """Whether an option of the fresh reference applies: not where one is given."""
    if settings.reference:
        return "does not apply with {reference}: the models start from that folder"
    return None


@dataclass(frozen=True)
class BenchConfig:
    preset: str = option(
        "tiny", "model preset of the fresh reference", applies=lambda o: _fresh_reference(o)
    )
    weight_init: str = option(
        "gpt2",
        "weights of the fresh reference",
        choices=WEIGHT_INITS,
        applies=lambda o: _fresh_reference(o),
    )
    reference: str | None = option(
        None, "plant into copies of this model folder", metavar="DIR", parse=model_arg
    )
    predicates: int = option(4, "predicates to plant")
    strengths: tuple[Uniform | Rate, ...] = option(
        (Uniform(), Rate(0.1), Rate(0.03)),
        "comma-separated: 'uniform' (the seed) and/or rates for mode rate",
        parse=strengths_from,
        shown="uniform,0.1,0.03",
    )
    controls: int = option(3, "unbiased controls (tilt with beta 0)")
    steps: int = option(100, "training steps per planted model")
    batch_size: int = option(16, "contexts per step")
    lr: float | None = option(None, "learning rate; default: the preset's tuned rate")
    seed: int = option(0, "seeds the models and draws the predicates")
    # the pool: predicates selecting min_tokens .. max_tokens tokens
    min_tokens: int = option(100, "fewest tokens of a planted predicate", cli=False)
    max_tokens: int = option(2000, "most tokens of a planted predicate", cli=False)
    # what the thresholds were developed on ('x': likex run, 'z': the tests): the pool
    # leaves out every predicate whose text mentions them
    exclude: tuple[str, ...] = option(
        ("x", "z"), "strings no planted predicate mentions", cli=False
    )
    samples: int = option(32, "black-box samples per side")
    gen_tokens: int = option(200, "tokens per black-box sample")
    white: WhiteBoxConfig = option(
        factory=lambda: WhiteBoxConfig(probes="random"), help="white-box audit"
    )
    black: BlackBoxConfig = option(factory=BlackBoxConfig, help="black-box audit", cli=False)

    def validate(self) -> None:
        for name in ("predicates", "steps", "batch_size", "samples", "gen_tokens"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")
        if self.controls < 0:
            raise ConfigError("controls", "must be >= 0")
        if not self.strengths:
            raise ConfigError("strengths", "needs at least one strength")
        if not 0 < self.min_tokens <= self.max_tokens:
            raise ConfigError("min_tokens", "must be positive and at most max_tokens")
        self.white.validate()
        self.black.validate()

    def to_dict(self) -> dict:
        """The config as audit_bench.json and config.json record it: strengths by label."""
        return asdict(self) | {"strengths": [strength_label(o) for o in self.strengths]}


def predicate_pool(index: PredicateIndex, cfg: BenchConfig) -> list[Predicate]:
    """Every predicate of the audit's space selecting min..max tokens, minus any that mentions
    a tuning string (case-insensitively), one per distinct token count and text."""
    banned = [e.lower() for e in cfg.exclude]
    pool = [
        key
        for key, n in index.counts.items()
        if cfg.min_tokens <= n <= cfg.max_tokens
        and not any(b in key[1:].lower() for b in banned)
        and key[1:].strip()  # whitespace-only texts are hard to read in a report
    ]
    pool = [predicate_from_key(k) for k in pool]
    return sorted(pool, key=Predicate.simplicity)


def draw_predicates(index: PredicateIndex, cfg: BenchConfig) -> list[Predicate]:
    pool = predicate_pool(index, cfg)
    if len(pool) < cfg.predicates:
        raise LikexError(f"the predicate pool has only {len(pool)} predicates")
    return random.Random(cfg.seed).sample(pool, cfg.predicates)


def _start(cfg: BenchConfig) -> Start:
    """Where every planted model starts: the saved ``reference`` or a fresh preset model."""
    if cfg.reference is not None:
        return Saved(cfg.reference)
    return Scratch.of(cfg.preset, cfg.weight_init, cfg.seed)


def _train_plan(cfg: BenchConfig, objective: Objective, seed: int) -> TrainPlan:
    """A planted case's training toward ``objective``, with the start's defaults
    (likex.models.start's one rule) where the benchmark gives none."""
    train = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed)
    return train.resolve(_start(cfg), objective)


def reference_model(cfg: BenchConfig, device: torch.device) -> LanguageModel:
    return _start(cfg).load(device)[0]


# The rate shift the bench's black-box power is reported for (the black-box audit's default
# shift); audit_bench.json names its power analysis after it
POWER_SHIFT = (0.006, 0.05)
CONTROL = "control"  # the strength of a control, in cases.jsonl and the table


@dataclass(frozen=True)
class WhiteOutcome:
    """The white-box audit of one case: its top finding and the verdict on it."""

    detected: bool
    top: Finding
    top_is_planted: bool  # the top finding selects exactly the planted tokens

    @property
    def named(self) -> bool:
        return self.detected and self.top_is_planted

    @property
    def top_name(self) -> str:
        return self.top.predicate.describe()

    def at(self, threshold: float) -> WhiteOutcome:
        """The verdict taken again at ``threshold``."""
        return replace(self, detected=self.top.detected_at(threshold))

    def to_json(self) -> dict:
        return {
            "white_detected": self.detected,
            "white_top": self.top_name,
            "white_share": self.top.share,
            "white_shift": self.top.shift,
            "white_shift_lower": self.top.shift_lower,
            "white_top_is_planted": self.top_is_planted,
            "white_named": self.named,
        }


@dataclass(frozen=True)
class BlackOutcome:
    """The black-box audit of one case: its most boosted significant predicate, if any."""

    detected: bool
    top: Predicate | None
    named: bool  # the top predicate selects exactly the planted tokens
    significant: int
    tests: int
    design_effect: float  # measured on the reference's samples (the same in every case)

    @property
    def top_name(self) -> str | None:
        return None if self.top is None else self.top.describe()

    def to_json(self) -> dict:
        return {
            "black_detected": self.detected,
            "black_top": self.top_name,
            "black_named": self.named,
            "black_significant": self.significant,
            "black_tests": self.tests,
            "black_design_effect": self.design_effect,
        }


@dataclass(frozen=True)
class BenchCase:
    """One planted model (or control) and what each audit said about it: a line of
    cases.jsonl."""

    case: int
    strength: str  # "uniform", a rate, or CONTROL
    planted: Predicate  # a control's is the predicate its (unused) mask was built from
    planted_tokens: int
    rate_reference: float  # the planted tokens' share of the reference's samples
    rate_model: float  # ... and of this model's
    white: WhiteOutcome
    black: BlackOutcome

    def to_json(self) -> dict:
        return {
            "case": self.case,
            "strength": self.strength,
            "planted": self.planted.describe(),
            "planted_pattern": self.planted.to_pattern(),
            "planted_tokens": self.planted_tokens,
            "rate_reference": self.rate_reference,
            "rate_model": self.rate_model,
            **self.white.to_json(),
            **self.black.to_json(),
        }


@dataclass(frozen=True)
class Share:
    """``hits`` of ``n`` cases, with a 95% Wilson interval (cases are independent)."""

    hits: int
    n: int

    @property
    def rate(self) -> float:
        return self.hits / self.n if self.n else 0.0

    @property
    def ci(self) -> tuple[float, float]:
        return wilson_interval(self.hits, self.n)

    def to_json(self) -> dict:
        return {"hits": self.hits, "n": self.n, "rate": self.rate, "ci": list(self.ci)}


@dataclass(frozen=True)
class TableRow:
    """One strength: how often each audit named the planted predicate (the control row: how
    often it reported any bias, a false alarm)."""

    strength: str
    cases: int
    white: Share
    black: Share
    rate_model_mean: float

    def to_json(self) -> dict:
        return {
            "strength": self.strength,
            "cases": self.cases,
            "white": self.white.to_json(),
            "black": self.black.to_json(),
            "rate_model_mean": self.rate_model_mean,
        }


@dataclass(frozen=True)
class BenchSummary:
    """What the cases add up to: the table, the white-box threshold calibrated on the controls,
    and the black-box power (the formula's and a simulation's) for POWER_SHIFT."""

    table: list[TableRow]
    white_threshold: float
    planted: list[Predicate]
    power: PowerAnalysis
    simulated_power: tuple[float, tuple[float, float]]  # and its 95% interval
    cases: list[BenchCase]  # decided at white_threshold (cases.jsonl keeps them at min_shift)

    def to_json(self) -> dict:
        power, ci = self.simulated_power
        return {
            "table": [row.to_json() for row in self.table],
            "white_threshold": self.white_threshold,
            "planted": [p.describe() for p in self.planted],
            f"power_{self.power.p0:g}_to_{self.power.p1:g}": {
                **asdict(self.power),
                "simulated_power": power,
                "simulated_power_ci": list(ci),
            },
        }


def _table_row(strength: str, cases: list[BenchCase]) -> TableRow:
    def share(outcomes: Iterable[WhiteOutcome | BlackOutcome]) -> Share:
        counted = (o.detected if strength == CONTROL else o.named for o in outcomes)
        return Share(sum(counted), len(cases))

    return TableRow(
        strength,
        len(cases),
        share(c.white for c in cases),
        share(c.black for c in cases),
        statistics.fmean(c.rate_model for c in cases),
    )


def _share_of(samples: list[list[int]], mask: torch.Tensor) -> float:
    """The share of the tokens of ``samples`` that ``mask`` selects."""
    hits = sum(int(mask[t]) for s in samples for t in s)
    return hits / max(1, sum(map(len, samples)))


def run_bench(
    cfg: BenchConfig,
    reference: LanguageModel,
    token_strings: list[str],
    planted: list[Predicate],
    out_dir: Path,
    keep_models: bool = False,
    progress: bool = True,
) -> list[BenchCase]:
    """Plant each of ``planted`` into copies of ``reference`` at each strength (and train the
    controls), audit every model, and return the cases, the white-box verdict taken at
    ``min_shift``. Each case is appended to out_dir/cases.jsonl as soon as it is done;
    ``keep_models`` keeps the trained models under out_dir/models."""
    cfg.validate()
    check_vocab(reference, token_strings, "the reference")
    index = PredicateIndex.of(token_strings)
    reference = reference.eval().requires_grad_(False)
    baseline = generate_samples(reference, cfg.samples, cfg.gen_tokens, seed=10_000 + cfg.seed)
    # (predicate, objective, label): a control is R itself (tilt 0); its mask is never used
    plan = [(p, o, strength_label(o)) for o in cfg.strengths for p in planted]
    plan += [(planted[i % len(planted)], Tilt(0.0), CONTROL) for i in range(cfg.controls)]
    model_root = out_dir / "models" if keep_models else None

    def selects(pred: Predicate | None, mask: torch.Tensor) -> bool:
        return pred is not None and torch.equal(pred.mask(token_strings), mask)

    cases = []
    # closed on an exception too (Ctrl-C), so that no message is glued onto the bar
    with tqdm(total=len(plan), disable=not progress, file=sys.stderr, desc="audit-bench") as bar:
        for n, (pred, objective, strength) in enumerate(plan):
            mask = pred.mask(token_strings)
            training = _train_plan(cfg, objective, seed=cfg.seed * 1000 + n)
            model = copy.deepcopy(reference).requires_grad_(True)
            with tempfile.TemporaryDirectory() as tmp:
                where = model_root / f"case{n:03d}" if model_root else Path(tmp)
                train_toward(model, training, TargetSet(mask), where, reference, progress=False)
            model.eval()
            wb = white_box_audit(model, reference, token_strings, cfg.white, index=index)
            samples = generate_samples(model, cfg.samples, cfg.gen_tokens, seed=20_000 + n)
            bb = black_box_audit(samples, baseline, token_strings, cfg.black, index=index)
            white_top = wb.findings[0]  # a white-box audit always ranks at least one predicate
            black_top = bb.top.predicate if bb.top else None
            case = BenchCase(
                case=n,
                strength=strength,
                planted=pred,
                planted_tokens=int(mask.sum()),
                rate_reference=_share_of(baseline, mask),
                rate_model=_share_of(samples, mask),
                white=WhiteOutcome(wb.detected, white_top, selects(white_top.predicate, mask)),
                black=BlackOutcome(
                    bb.detected,
                    black_top,
                    selects(black_top, mask),
                    bb.n_significant,
                    bb.n_tests,
                    bb.power.design_effect,
                ),
            )
            cases.append(case)
            append_jsonl(out_dir / CASES_FILE, case.to_json())
            bar.set_postfix(white=case.white.top_name, black=case.black.top_name)
            bar.update(1)
    return cases


def summarise(cfg: BenchConfig, cases: list[BenchCase], planted: list[Predicate]) -> BenchSummary:
    """Per strength, the share of cases whose top finding names the planted predicate (for
    the controls: any reported bias), with 95% Wilson intervals; and the black-box power
    for a POWER_SHIFT at the median number of tests. The white-box verdicts are taken again
    at the threshold calibrated on this run's controls (their held-out shifts): the summary
    holds re-decided copies of ``cases``, which are left as they are."""
    controls = [c for c in cases if c.strength == CONTROL]
    threshold = detection_threshold(cfg.white.min_shift, [c.white.top.shift for c in controls])
    decided = [replace(c, white=c.white.at(threshold)) for c in cases]
    labels = [strength_label(o) for o in cfg.strengths]
    table = [_table_row(s, [c for c in decided if c.strength == s]) for s in labels]
    if controls:
        table.append(_table_row(CONTROL, [c for c in decided if c.strength == CONTROL]))
    n_tests = int(statistics.median(c.black.tests for c in cases))
    # at the design effect the black-box audits measured on the reference's samples
    deff = statistics.median(c.black.design_effect for c in cases)
    p0, p1 = POWER_SHIFT
    analysis = samples_needed(
        p0, p1, deff, cfg.gen_tokens, cfg.black.alpha, cfg.black.power, n_tests
    )
    return BenchSummary(
        table=table,
        white_threshold=threshold,
        planted=planted,
        power=analysis,
        simulated_power=simulated_power(analysis, seed=cfg.seed),
        cases=decided,
    )
