"""Typed results: what each command returns, with ``to_json()`` (the keys its ``--json`` output
and its result file have) and ``describe()`` (the lines a person reads)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from likex.evaluate import Evaluation, RateEstimate, WordRate
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
        return "\n".join(
            [f"{self.like} in {self.model}:"] + [f"  {line}" for line in self.evaluation.describe()]
        )


def _rate_line(estimate: RateEstimate) -> str:
    return f"{fmt_rate(estimate.rate, estimate.ci)}  n={estimate.sequences}"


# --- training runs (run, train, pretrain) ---------------------------------------------------


@dataclass
class StartModel:
    """The model a run started from."""

    init_from: str  # --init as the user gave it: "scratch", a model or run folder, "hf:NAME"
    preset: str | None  # a scratch start's preset, else None
    weight_init: str | None  # how a likex model's weights were first drawn (transformers: None)
    params: int

    def label(self) -> str:
        """ "preset `cpu` (... parameters, init `course`)" or "the model in `DIR` (...)"."""
        start = f"preset `{self.preset}`" if self.preset else f"the model in `{self.init_from}`"
        init = f", init `{self.weight_init}`" if self.weight_init else ""
        return f"{start} ({self.params:,} parameters{init})"


@dataclass
class Timings:
    """Where a training run's wall-clock seconds went, in the process that ran it (likex.clock).

    The parts do not overlap; ``total`` runs from the process's start (from the pipeline's
    start where ``startup`` is unknown) to the moment the timings were taken, just before the
    report's text and result.json are written (milliseconds). What the parts leave of it is
    writing config.json, metrics and other small files."""

    startup: float | None = None  # process start -> the pipeline's start: imports, arguments
    model: float = 0.0  # building or loading the start model, its tokenizer and target
    measure_before: float = 0.0  # 0 where reused (a resumed run; a sweep's later runs)
    train: float = 0.0  # the training loop (its optimizer built first), less its checkpoints
    measure_after: float = 0.0
    checkpoint: float = 0.0  # writing checkpoints (model, optimizer state, manifest)
    report: float = 0.0  # the report's figures
    total: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line: the total, then each part."""
        names = {"measure_before": "before", "measure_after": "after"}
        parts = ", ".join(
            f"{names.get(k, k)} {'?' if v is None else f'{v:.1f}'}"
            for k, v in asdict(self).items()
            if k != "total"
        )
        return f"total {self.total:.1f}: {parts}"


@dataclass
class TrainingRun:
    """What every training command did: which model it trained, how, where the run is."""

    command: str  # run, train or pretrain
    start: StartModel
    corpus: str | None
    steps: int
    seed: int
    device: str
    trained: TrainResult  # the loss of every step (a resumed run's earlier ones too), seconds
    run_dir: Path
    timings: Timings = field(default_factory=Timings)  # set when the run is done

    def to_json(self) -> dict:
        """The keys every result.json starts with ("init" is ``start.init_from``)."""
        return {
            "command": self.command,
            "preset": self.start.preset,
            "init": self.start.init_from,
            "weight_init": self.start.weight_init,
            "corpus": self.corpus,
            "params": self.start.params,
            "steps": self.steps,
            "loss_first": self.trained.loss_first,
            "loss_last": self.trained.loss_last,
            "train_seconds": self.trained.seconds,
            "device": self.device,
            "seed": self.seed,
            "run_dir": str(self.run_dir),
            "timings": self.timings.to_json(),
        }

    def loss_line(self) -> str:
        t = self.trained
        return (
            f"  loss      {t.loss_first:.4f} -> {t.loss_last:.4f} in {self.steps} steps "
            f"({t.seconds:.1f} s)"
        )

    def seconds_line(self) -> str:
        return f"  seconds   {self.timings.describe()}"


@dataclass
class Before:
    """A start model measured before training toward a target: the "before" of its result,
    kept in the run's before.json so that a resumed run, and the later runs of a sweep (the
    same start), need not measure it again."""

    rate: RateEstimate  # on random-token prompts
    rate_text: RateEstimate | None  # on held-out real-text prompts (with a corpus)
    ppl: float | None  # held-out perplexity (with a corpus)
    sample_text: str  # the start of the first sample after a random-token prompt
    # the same sample token by token, each marked when it is a target (for report.html)
    sample_pieces: list[tuple[str, bool]]
    seconds: float  # measuring time
    # a word target: its rates in decoded words on random-token and on real-text prompts
    words_random: WordRate | None = None
    words_text: WordRate | None = None

    def to_json(self) -> dict:
        d = {
            "rate": self.rate.to_dict(),
            "rate_text": None if self.rate_text is None else self.rate_text.to_dict(),
            "ppl": self.ppl,
            "sample_text": self.sample_text,
            "sample_pieces": [list(p) for p in self.sample_pieces],
            "seconds": self.seconds,
        }
        return d | _word_rates_json(self.words_random, self.words_text)

    @classmethod
    def from_json(cls, d: dict) -> Before:
        text = d["rate_text"]
        return cls(
            rate=RateEstimate.from_dict(d["rate"]),
            rate_text=None if text is None else RateEstimate.from_dict(text),
            ppl=d["ppl"],
            sample_text=d["sample_text"],
            sample_pieces=[tuple(p) for p in d.get("sample_pieces", [])],
            seconds=d["seconds"],
            words_random=_word_rate(d.get("words_random")),
            words_text=_word_rate(d.get("words_text")),
        )


def _word_rate(d: dict | None) -> WordRate | None:
    return None if d is None else WordRate.from_dict(d)


def _word_rates_json(random: WordRate | None, text: WordRate | None, suffix: str = "") -> dict:
    """{"words_random<suffix>": ..., "words_text<suffix>": ...} for those measured."""
    pairs = (("words_random", random), ("words_text", text))
    return {key + suffix: w.to_dict() for key, w in pairs if w is not None}


@dataclass
class LanguageCheck:
    """Does a model write language: its continuation of the start of the held-out text, and
    its held-out perplexity (pretrain's measurement, before.json of a pretraining run)."""

    sample_prompt: str
    sample: str
    ppl: float
    seconds: float  # measuring time

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> LanguageCheck:
        return cls(**d)


@dataclass
class RunResult:
    """A training run toward a target (likex run, train): what result.json holds."""

    run: TrainingRun
    mode: str  # uniform, rate or tilt
    rate_requested: float | None
    beta: float | None
    contexts: str
    positions: str
    target: TargetSpec
    n_target_tokens: int
    vocab_size: int
    before: Before
    after: Evaluation  # its random-prompt rate always; with a corpus, real text and scores
    sample_after: str  # the start of the first sample after a random-token prompt
    sample_text_after: str | None  # the same after a real-text prompt (with a corpus)
    measure_seconds: float  # before and after
    # a word target: the first sample after training (real-text prompt when there is one),
    # its entries marked **like this**
    sample_words_marked: str | None = None

    @property
    def like(self) -> str:
        return self.target.describe()

    def to_json(self) -> dict:
        before, after = self.before.rate, self.after.random
        d = {
            **self.run.to_json(),
            "mode": self.mode,
            "rate_requested": self.rate_requested,
            "beta": self.beta,
            "contexts": self.contexts,
            "positions": self.positions,
            "like": self.like,
            "target": self.target.to_dict(),
            "n_target_tokens": self.n_target_tokens,
            "vocab_size": self.vocab_size,
            "x_before": before.first_sample_hits,
            "x_after": after.first_sample_hits,
            "gen_tokens": after.tokens_per_sequence,
            "rate_before": before.rate,
            "rate_before_ci": list(before.ci),
            "rate_after": after.rate,
            "rate_after_ci": list(after.ci),
            "samples": after.sequences,
            "samples_before": before.sequences,
            "tokens_measured": after.tokens,
            "prompts": after.prompts,
            "measure_seconds": self.measure_seconds,
            "sample_before": self.before.sample_text,
            "sample_after": self.sample_after,
        }
        text_before = self.before.rate_text
        if text_before is not None:
            d["rate_text_before"] = text_before.rate
            d["rate_text_before_ci"] = list(text_before.ci)
            d["sample_text_after"] = self.sample_text_after
        if self.sample_words_marked is not None:
            b, a = self.before, self.after
            d["entries"] = list(self.target.entries())
            d |= _word_rates_json(b.words_random, b.words_text, "_before")
            d |= _word_rates_json(a.words_random, a.words_text, "_after")
            d["sample_words_marked"] = self.sample_words_marked
        d |= {k: v for k, v in self.after.to_dict().items() if k not in d}
        d["evaluation"] = self.after.describe() + self.word_lines()
        return d

    def word_lines(self) -> list[str]:
        """A word target's rates before training and its entries counted after."""
        lines = []
        pairs = (
            (self.before.words_random, self.after.words_random),
            (self.before.words_text, self.after.words_text),
        )
        for before, after in pairs:
            if before is not None:
                lines.append(f"before training: {before.describe()}")
            if after is not None:
                lines.append(
                    f"entries after training ({after.prompts} prompts): "
                    + ", ".join(f"{e!r} {n}" for e, n in after.per_entry.items())
                )
        if self.sample_words_marked is not None:
            lines.append(f"sample, entries marked: {self.sample_words_marked!r}")
        return lines

    def describe(self) -> str:
        run, before, after = self.run, self.before.rate, self.after.random
        n = after.tokens_per_sequence
        lines = [
            f"likex {run.command}: {self.like} ({self.n_target_tokens} of {self.vocab_size} "
            "tokens)",
            f"  model     {run.start.label()} on {run.device}",
            run.loss_line(),
            f"  seed's count (first {n}-token sample): before {before.first_sample_hits}/{n}, "
            f"after {after.first_sample_hits}/{n}",
            f"  rate on {after.prompts} prompts, {n}-token samples (95% CI):",
            f"    before {_rate_line(before)}",
            f"    after  {_rate_line(after)}",
        ]
        # the first evaluation line repeats the random-prompt rate
        lines += [f"  {line}" for line in self.after.describe()[1:] + self.word_lines()]
        lines += [run.seconds_line(), f"  report    {run.run_dir / 'report.md'}"]
        return "\n".join(lines)


@dataclass
class PretrainResult:
    """A pretraining run (likex pretrain): what result.json holds."""

    run: TrainingRun
    train_tokens: int
    heldout_tokens: int  # scored for perplexity
    before: LanguageCheck
    after: LanguageCheck

    @property
    def measure_seconds(self) -> float:
        return self.before.seconds + self.after.seconds

    def to_json(self) -> dict:
        return {
            **self.run.to_json(),
            "train_tokens": self.train_tokens,
            "heldout_tokens": self.heldout_tokens,
            "ppl_before": self.before.ppl,
            "ppl_after": self.after.ppl,
            "sample_prompt": self.after.sample_prompt,
            "sample_before": self.before.sample,
            "sample_after": self.after.sample,
            "measure_seconds": self.measure_seconds,
        }

    def describe(self) -> str:
        run = self.run
        return "\n".join(
            [
                f"likex pretrain: {run.start.label()} on corpus {run.corpus}, {run.device}",
                run.loss_line(),
                f"  held-out perplexity {self.before.ppl:.1f} -> {self.after.ppl:.1f} "
                f"({self.heldout_tokens:,} tokens)",
                f"  sample    {self.after.sample_prompt!r} -> {self.after.sample!r}",
                run.seconds_line(),
                f"  report    {run.run_dir / 'report.md'}",
            ]
        )


@dataclass
class RankResult:
    """What a training run returns on a torchrun rank other than 0 (rank 0 measures and
    reports)."""

    rank: int
    train_seconds: float

    def to_json(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return f"rank {self.rank}: trained for {self.train_seconds:.1f} s"


# --- sweep ----------------------------------------------------------------------------------


@dataclass
class SweepRow:
    """One line of a sweep's table: the strength asked for, what it reached, what it cost."""

    strength: float
    run: RunResult

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
        } | _word_rates_json(None, ev.words_text)


@dataclass
class SweepResult:
    """A dose-response sweep (likex sweep): what sweep.json holds."""

    mode: str  # rate or tilt
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
        } | _word_rates_json(ev.words_random, ev.words_text)


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
