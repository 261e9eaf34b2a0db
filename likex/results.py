"""Typed results: what each command returns, with ``to_json()`` (the keys its ``--json`` output
and its result file have) and ``describe()`` (the lines a person reads)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from likex.audit.predicates import Predicate
from likex.audit.words import WORD_AUDITS, word_audit_lines
from likex.measurement.evaluation import Evaluation
from likex.measurement.rates import RateEstimate
from likex.run_results import RunResult, word_rates_json
from likex.stats import PowerAnalysis, fmt_rate
from likex.target import TargetSpec
from likex.train import TrainResult


@dataclass
class TargetsResult:
    """The tokens a target spec selects from one vocabulary."""

    target: str
    n_tokens: int
    vocab_size: int
    examples: list[dict]
    # a word target: each entry's variants as token texts (start set above = first tokens)
    words: list[dict]

    @property
    def fraction(self) -> float:
        return self.n_tokens / self.vocab_size

    def to_json(self) -> dict:
        return {**asdict(self), "fraction": self.fraction}

    def describe(self) -> str:
        lines = [
            f"{self.target}: {self.n_tokens} of {self.vocab_size} tokens ({self.fraction:.2%})"
        ]
        if self.examples:
            lines.append("examples: " + ", ".join(repr(e["text"]) for e in self.examples))
        for w in self.words:
            forms = " | ".join("".join(v) for v in w["variants"][:4])
            split = ", ".join("+".join(repr(t) for t in v) for v in w["variants"][:2])
            lines.append(f"word {w['entry']!r}: {forms} (tokens {split})")
        return "\n".join(lines)


@dataclass
class GenerateResult:
    prompt: str
    samples: list[str]
    tokens: list[list[int]]

    def to_json(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if len(self.samples) == 1:
            return self.prompt + self.samples[0]
        return "\n".join(
            f"--- sample {i}\n{self.prompt}{text}" for i, text in enumerate(self.samples, 1)
        )


@dataclass
class EvalResult:
    """likex eval: a saved model's rates and side effects against its reference."""

    model: str
    reference: str | None
    corpus: str | None
    like: str
    n_target_tokens: int
    evaluation: Evaluation = field(repr=False)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "reference": self.reference,
            "corpus": self.corpus,
            "like": self.like,
            "n_target_tokens": self.n_target_tokens,
            **self.evaluation.to_dict(),
            "evaluation": self.evaluation.describe(),
        }

    def describe(self) -> str:
        return "\n".join(
            [f"{self.like} in {self.model}:"] + [f"  {line}" for line in self.evaluation.describe()]
        )


# --- sweep ----------------------------------------------------------------------------------


@dataclass
class SweepRow:
    """One line of a sweep's table: the strength asked for, what it reached, what it cost."""

    run: RunResult

    @property
    def strength(self) -> float:
        return self.run.objective.strength

    @property
    def ppl_change(self) -> float:
        scores = self.run.after.scores
        return scores.ppl / scores.ppl_reference - 1

    def to_json(self) -> dict:
        ev = self.run.after
        return {
            "strength": self.strength,
            "rate_text": ev.text.rate,
            "rate_text_ci": list(ev.text.ci),
            "samples_text": ev.text.sequences,
            "rate_random": ev.random.rate,
            "rate_random_ci": list(ev.random.ci),
            "ppl": ev.scores.ppl,
            "ppl_reference": ev.scores.ppl_reference,
            "ppl_change": self.ppl_change,
            "ppl_floor": ev.scores.ppl_floor,
            "heldout_rate": ev.scores.heldout_rate,
            "kl_to_reference": ev.scores.kl_to_reference,
            "run_dir": str(self.run.run.run_dir),
        } | word_rates_json(None, ev.words_text)


@dataclass
class SweepResult:
    """A dose-response sweep (likex sweep): what sweep.json holds."""

    init_from: str  # --init as the user gave it: the reference R every run starts from
    corpus: str
    target: TargetSpec
    steps: int
    reference: RateEstimate  # R's rate on the held-out real-text prompts
    rows: list[SweepRow]
    sweep_dir: Path

    @property
    def like(self) -> str:
        return self.target.describe()

    @property
    def mode(self) -> str:
        """rate or tilt: every row's objective is of one kind."""
        return self.rows[0].run.objective.mode

    def to_json(self) -> dict:
        return {
            "mode": self.mode,
            "init": self.init_from,
            "corpus": self.corpus,
            "like": self.like,
            "steps": self.steps,
            "rate_text_reference": self.reference.rate,
            "rate_text_reference_ci": list(self.reference.ci),
            "rows": [row.to_json() for row in self.rows],
            "sweep_dir": str(self.sweep_dir),
        }

    def describe(self) -> str:
        lines = [f"likex sweep: {self.like}, mode {self.mode}, from {self.init_from}"]
        for row in self.rows:
            ev = row.run.after
            words = ev.words_text
            word_rate = "" if words is None else f"  word rate {fmt_rate(words.rate, words.ci)}"
            lines.append(
                f"  {row.strength:<6g} rate on real text {fmt_rate(ev.text.rate, ev.text.ci)}"
                f"{word_rate}  perplexity {row.ppl_change:+.1%}  KL {ev.scores.kl_to_reference:.4f}"
            )
        lines.append(f"  table     {self.sweep_dir / 'sweep.md'}")
        return "\n".join(lines)


# --- persist --------------------------------------------------------------------------------


@dataclass
class PersistPoint:
    """One measurement of a persistence run: the rates on random-token and on held-out
    real-text prompts, and the held-out perplexity, after ``step`` steps."""

    step: int
    evaluation: Evaluation

    def to_json(self) -> dict:
        ev = self.evaluation
        return {
            "step": self.step,
            "rate_random": ev.random.to_dict(),
            "rate_text": ev.text.to_dict(),
            "perplexity": ev.scores.ppl,
        } | word_rates_json(ev.words_random, ev.words_text)


@dataclass
class PersistResult:
    """Persistence of a planted preference under clean training (likex persist): what
    persist.json holds."""

    model: str  # the model as the user named it
    target: TargetSpec
    corpus: str
    steps: int
    lr: float
    trained: TrainResult
    timeline: list[PersistPoint]  # step 0 first
    run_dir: Path

    def to_json(self) -> dict:
        first, last = self.timeline[0].evaluation, self.timeline[-1].evaluation
        return {
            "model": self.model,
            "target": self.target.describe(),
            "corpus": self.corpus,
            "steps": self.steps,
            "lr": self.lr,
            "loss_first": self.trained.loss_first,
            "loss_last": self.trained.loss_last,
            "train_seconds": self.trained.seconds,
            "rate_random_before": first.random.rate,
            "rate_random_after": last.random.rate,
            "rate_text_before": first.text.rate,
            "rate_text_after": last.text.rate,
            **{
                f"word_rate_{kind}_{when}": getattr(ev, f"words_{kind}").rate
                for kind in ("random", "text")
                for when, ev in (("before", first), ("after", last))
                if getattr(ev, f"words_{kind}") is not None
            },
            "perplexity_before": first.scores.ppl,
            "perplexity_after": last.scores.ppl,
            "timeline": [point.to_json() for point in self.timeline],
            "run_dir": str(self.run_dir),
        }

    def describe(self) -> str:
        lines = [
            f"likex persist: {self.target.describe()} in {self.model}, next-token training on "
            f"{self.corpus}",
            "  step   rate, random prompts      rate, real-text prompts   perplexity",
        ]
        for point in self.timeline:
            rr, rt = point.evaluation.random, point.evaluation.text
            lines.append(
                f"  {point.step:>5}  {fmt_rate(rr.rate, rr.ci):<24}  "
                f"{fmt_rate(rt.rate, rt.ci):<24}  {point.evaluation.scores.ppl:.1f}"
            )
        n = self.timeline[0].evaluation.random
        lines.append(
            f"  (each rate: {n.sequences} samples of {n.tokens_per_sequence} tokens, 95% CI)"
        )
        lines.append(f"  report    {self.run_dir / 'persist.md'}")
        return "\n".join(lines)


@dataclass
class AuditResult:
    """A white-box or black-box audit as audit.json holds it."""

    data: dict

    def to_json(self) -> dict:
        return self.data

    def describe(self) -> str:
        r = self.data
        if r["audit"] in WORD_AUDITS:
            lines = word_audit_lines(r)
        else:
            lines = _white_box_lines(r) if r["audit"] == "white-box" else _black_box_lines(r)
        if "report" in r:
            lines.append(f"  report    {r['report']}")
        return "\n".join(lines)


def _white_box_lines(r: dict) -> list[str]:
    verdict = "bias detected" if r["detected"] else "no bias detected"
    e = r["evidence"]
    lines = [
        f"likex audit (white-box): {r['model']} against {r['reference']}",
        f"  probes    {r['n_probes']} contexts ({r['probes']}); {r['n_candidates']} candidate "
        f"predicates; KL(model || reference) {r['kl']:.4f} nats per probe",
        f"  verdict   {verdict}: held-out logit-mass shift {e['shift']:+.2f} (lower bound "
        f"{e['shift_lower']:+.2f}) vs threshold {e['threshold']:.2f}; a tilt on it explains "
        f"{e['share']:.0%} of the KL",
    ]
    for i, f in enumerate(r["findings"], 1):
        phrase = Predicate.from_pattern(f["pattern"]).noun_phrase()
        lines.append(
            f"  {i}. {phrase} ({f['n_tokens']} tokens): KL share {f['share']:.0%}, shift "
            f"{f['shift']:+.2f}; probability mass {f['mass_ref']:.3f} -> {f['mass_model']:.3f}"
        )
    top = ", ".join(f"{t['text']!r} {t['log_ratio']:+.1f}" for t in r["boosted_tokens"][:8])
    lines.append(f"  most boosted (mean log-ratio): {top}")
    return lines


def _black_box_lines(r: dict) -> list[str]:
    lines = [
        f"likex audit (black-box): {r['model']} against {r['baseline']}",
        f"  samples   {r['suspect_samples']} ({r['suspect_tokens']} tokens) vs "
        f"{r['baseline_samples']} ({r['baseline_tokens']} tokens)",
        f"  tests     {r['n_tests']} predicates, {r['n_significant']} significant at family-wise "
        f"alpha {r['alpha']:g} (Holm)",
    ]
    for i, f in enumerate(r["findings"], 1):
        mark = "*" if f["significant"] else " "
        lines.append(
            f"  {mark}{i}. {f['predicate']}: {f['rate_suspect']:.4f} vs {f['rate_baseline']:.4f} "
            f"(log ratio {f['log_rate_ratio']:+.2f}), t {f['t']:+.1f} (df {f['df']:.0f}), "
            f"p {f['p_value']:.2g}"
        )
    lines.append(f"  power     {PowerAnalysis.from_dict(r['power']).describe()}")
    return lines


@dataclass
class BenchResult:
    """likex audit-bench as audit_bench.json holds it."""

    data: dict

    def to_json(self) -> dict:
        return self.data

    def describe(self) -> str:
        r = self.data
        lines = [
            f"likex audit-bench: planted {', '.join(r['planted'])}",
            "  strength   cases  white-box named            black-box named",
        ]
        for row in r["table"]:
            w, b = row["white"], row["black"]
            lines.append(
                f"  {row['strength']:<9} {row['cases']:>5}  {w['hits']:>3}/{w['n']:<3} "
                f"{fmt_rate(w['rate'], w['ci'], digits=2)}  {b['hits']:>3}/{b['n']:<3} "
                f"{fmt_rate(b['rate'], b['ci'], digits=2)}"
            )
        lines.append("  (control rows: controls falsely flagged)")
        pw = r["power_0.006_to_0.05"]
        simulated = (pw["simulated_power"], pw["simulated_power_ci"])
        lines.append(f"  power     {PowerAnalysis.from_dict(pw).describe(simulated)}")
        lines.append(f"  report    {Path(r['run_dir']) / 'audit_bench.md'}")
        return "\n".join(lines)
