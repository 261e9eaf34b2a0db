"""Typed results: what each command returns, with ``to_json()`` (the keys its ``--json`` output
and its result file have) and ``describe()`` (the lines a person reads)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from likex.measurement.evaluation import Evaluation
from likex.measurement.rates import RateEstimate
from likex.run_results import RunResult, word_rates_json
from likex.stats.intervals import fmt_rate
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
        held = [] if self.corpus is None else [f"  held-out text of: {self.corpus}"]
        return "\n".join(
            [f"{self.like} in {self.model}:"]
            + [f"  {line}" for line in self.evaluation.describe()]
            + held
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
        return (
            {
                "step": self.step,
                "rate_random": ev.random.to_dict(),
                "rate_text": ev.text.to_dict(),
                "perplexity": ev.scores.ppl,
            }
            | word_rates_json(ev.words_random, ev.words_text)
            | self.domains_json()
        )

    def domains_json(self) -> dict:
        """Several corpora: each held-out text's rate and perplexity ("rate_text" pools them)."""
        domains = self.evaluation.domains
        if len(domains) < 2:
            return {}
        return {
            "domains": [
                {"corpus": d.name, "rate_text": d.text.to_dict(), "perplexity": d.scores.ppl}
                for d in domains
            ]
        }


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
            **self.domains_json(),
            "timeline": [point.to_json() for point in self.timeline],
            "run_dir": str(self.run_dir),
        }

    def domains_json(self) -> dict:
        """Several corpora: each domain's real-text rate and perplexity before and after."""
        first, last = self.timeline[0].evaluation.domains, self.timeline[-1].evaluation.domains
        if len(first) < 2:
            return {}
        return {
            "domains": [
                {
                    "corpus": a.name,
                    "rate_text_before": a.text.rate,
                    "rate_text_before_ci": list(a.text.ci),
                    "rate_text_after": b.text.rate,
                    "rate_text_after_ci": list(b.text.ci),
                    "perplexity_before": a.scores.ppl,
                    "perplexity_after": b.scores.ppl,
                }
                for a, b in zip(first, last, strict=True)
            ]
        }

    def domain_lines(self) -> list[str]:
        """Several corpora: each domain's real-text rate (95% CI) at every measurement."""
        if len(self.timeline[0].evaluation.domains) < 2:
            return []
        lines = ["  real-text rate by domain (each corpus's held-out text), step by step:"]
        for i, d in enumerate(self.timeline[0].evaluation.domains):
            steps = [p.evaluation.domains[i] for p in self.timeline]
            rates = " -> ".join(fmt_rate(s.text.rate, s.text.ci) for s in steps)
            lines.append(f"    {d.name}: {rates}")
        return lines

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
        lines += self.domain_lines()
        lines.append(f"  report    {self.run_dir / 'persist.md'}")
        return "\n".join(lines)
