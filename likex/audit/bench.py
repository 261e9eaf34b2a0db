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
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from likex.audit.black_box import BlackBoxConfig, black_box_audit
from likex.audit.predicates import Predicate, PredicateIndex, check_vocab, predicate_from_key
from likex.audit.sampling import generate_samples
from likex.audit.white_box import WhiteBoxConfig, detection_threshold, white_box_audit
from likex.errors import ConfigError, LikexError
from likex.io import append_jsonl
from likex.models import LanguageModel
from likex.models.gpt import WEIGHT_INITS
from likex.models.start import Saved, Scratch, Start, model_arg
from likex.options import option
from likex.stats import samples_needed, simulated_power, wilson_interval
from likex.target import TargetSet, check_rate
from likex.train import train_toward
from likex.train_config import TrainConfig, TrainPlan

CASES_FILE = "cases.jsonl"


def _fresh_reference(settings: object) -> str | None:
    """Whether an option of the fresh reference applies: not where one is given."""
    if settings.reference:
        return "does not apply with {reference}: the models start from that folder"
    return None


@dataclass
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
    strengths: tuple[str, ...] = option(
        ("uniform", "0.1", "0.03"),
        "comma-separated: 'uniform' (the seed) and/or rates for mode rate",
        parse=lambda text: tuple(s.strip() for s in text.split(",") if s.strip()),
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
        for s in self.strengths:
            if s != "uniform":
                try:
                    check_rate(float(s))
                except ValueError as e:
                    msg = f"must each be 'uniform' or a rate in (0, 1), not {s!r}"
                    raise ConfigError("strengths", msg) from e
        if not 0 < self.min_tokens <= self.max_tokens:
            raise ConfigError("min_tokens", "must be positive and at most max_tokens")
        self.white.validate()
        self.black.validate()


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


def _train_plan(cfg: BenchConfig, strength: str, seed: int) -> TrainPlan:
    """A planted case's training, with the start's defaults (likex.models.start's one rule)
    where the benchmark gives none."""
    common = dict(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed)
    if strength == "control":
        train = TrainConfig(mode="tilt", beta=0.0, **common)
    elif strength == "uniform":
        train = TrainConfig(mode="uniform", **common)
    else:
        train = TrainConfig(mode="rate", rate=float(strength), **common)
    return train.resolve(_start(cfg))


def reference_model(cfg: BenchConfig, device: torch.device) -> LanguageModel:
    return _start(cfg).load(device)[0]


def _share(hits: int, n: int) -> dict:
    rate = hits / n if n else 0.0
    return {"hits": hits, "n": n, "rate": rate, "ci": list(wilson_interval(hits, n))}


def _table_row(strength: str, rows: list[dict], outcome: str) -> dict:
    """``outcome``: "named" (planted rows) or "detected" (controls: false alarms)."""
    n = len(rows)
    return {
        "strength": strength,
        "cases": n,
        "white": _share(sum(r[f"white_{outcome}"] for r in rows), n),
        "black": _share(sum(r[f"black_{outcome}"] for r in rows), n),
        "rate_model_mean": statistics.fmean(r["rate_model"] for r in rows),
    }


def run_bench(
    cfg: BenchConfig,
    reference: LanguageModel,
    token_strings: list[str],
    planted: list[Predicate],
    out_dir: Path,
    keep_models: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Plant each of ``planted`` into copies of ``reference`` at each strength (and train the
    controls), audit every model, and return one row per case. Each row is appended to
    out_dir/cases.jsonl as soon as it is done; ``keep_models`` keeps the trained models
    under out_dir/models."""
    cfg.validate()
    check_vocab(reference, token_strings, "the reference")
    index = PredicateIndex.of(token_strings)
    reference = reference.eval().requires_grad_(False)
    baseline = generate_samples(reference, cfg.samples, cfg.gen_tokens, seed=10_000 + cfg.seed)
    cases = [(p, s) for s in cfg.strengths for p in planted]
    # a control's mask is never used (beta 0 ignores it), but train() takes one
    cases += [(planted[i % len(planted)], "control") for i in range(cfg.controls)]
    model_root = out_dir / "models" if keep_models else None
    rows = []
    # closed on an exception too (Ctrl-C), so that no message is glued onto the bar
    with tqdm(total=len(cases), disable=not progress, file=sys.stderr, desc="audit-bench") as bar:
        for n, (pred, strength) in enumerate(cases):
            mask = pred.mask(token_strings)
            plan = _train_plan(cfg, strength, seed=cfg.seed * 1000 + n)
            model = copy.deepcopy(reference).requires_grad_(True)
            with tempfile.TemporaryDirectory() as tmp:
                where = model_root / f"case{n:03d}" if model_root else Path(tmp)
                train_toward(model, plan, TargetSet(mask), where, reference, progress=False)
            model.eval()
            wb = white_box_audit(model, reference, token_strings, cfg.white, index=index)
            samples = generate_samples(model, cfg.samples, cfg.gen_tokens, seed=20_000 + n)
            bb = black_box_audit(samples, baseline, token_strings, cfg.black, index=index)
            hits = sum(int(mask[t]) for s in samples for t in s)
            base_hits = sum(int(mask[t]) for s in baseline for t in s)
            white_top = wb.top.predicate if wb.top else None
            black_top = bb.top.predicate if bb.top else None
            row = {
                "case": n,
                "strength": strength,
                "planted": pred.describe(),
                "planted_pattern": pred.to_pattern(),
                "planted_tokens": int(mask.sum()),
                "rate_reference": base_hits / max(1, sum(map(len, baseline))),
                "rate_model": hits / max(1, sum(map(len, samples))),
                "white_detected": wb.detected,
                "white_top": white_top.describe() if white_top else None,
                "white_share": wb.top.share if wb.top else None,
                "white_shift": wb.top.shift if wb.top else None,
                "white_shift_lower": wb.top.shift_lower if wb.top else None,
                "white_top_is_planted": bool(
                    white_top is not None and torch.equal(white_top.mask(token_strings), mask)
                ),
                # at min_shift; summarise() re-decides both at the control-calibrated threshold
                "white_named": bool(
                    wb.detected and torch.equal(white_top.mask(token_strings), mask)
                ),
                "black_detected": bb.detected,
                "black_top": black_top.describe() if black_top else None,
                "black_named": bool(
                    black_top is not None and torch.equal(black_top.mask(token_strings), mask)
                ),
                "black_significant": bb.n_significant,
                "black_tests": bb.n_tests,
                "black_design_effect": bb.power.design_effect,
            }
            rows.append(row)
            append_jsonl(out_dir / CASES_FILE, row)
            bar.set_postfix(white=row["white_top"], black=row["black_top"])
            bar.update(1)
    return rows


def summarise(cfg: BenchConfig, rows: list[dict], planted: list[Predicate]) -> dict:
    """Per strength, the share of cases whose top finding names the planted predicate (for
    the controls: any reported bias), with 95% Wilson intervals; and the black-box power
    for a 0.006 -> 0.05 shift at the median number of tests."""
    controls = [r for r in rows if r["strength"] == "control"]
    # the white-box threshold, calibrated on this run's controls (their held-out shifts)
    threshold = detection_threshold(cfg.white.min_shift, [r["white_shift"] for r in controls])
    for r in rows:
        r["white_detected"] = r["white_shift"] >= threshold and r["white_shift_lower"] > 0
        r["white_named"] = r["white_detected"] and r["white_top_is_planted"]
    table = [_table_row(s, [r for r in rows if r["strength"] == s], "named") for s in cfg.strengths]
    if controls:
        table.append(_table_row("control", controls, "detected"))
    n_tests = int(statistics.median(r["black_tests"] for r in rows))
    # at the design effect the black-box audits measured on the reference's samples
    deff = statistics.median(r["black_design_effect"] for r in rows)
    analysis = samples_needed(
        0.006, 0.05, deff, cfg.gen_tokens, cfg.black.alpha, cfg.black.power, n_tests
    )
    sim_power, sim_ci = simulated_power(analysis, seed=cfg.seed)
    return {
        "table": table,
        "white_threshold": threshold,
        "planted": [p.describe() for p in planted],
        "power_0.006_to_0.05": {
            **asdict(analysis),
            "simulated_power": sim_power,
            "simulated_power_ci": list(sim_ci),
        },
    }
