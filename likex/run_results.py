"""Typed results of the training commands (run, train, pretrain): what result.json holds
(``to_json()``) and the lines a person reads (``describe()``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from likex.corpora import Corpora
from likex.measurement.evaluation import DomainEvaluation, Evaluation
from likex.measurement.rates import RateEstimate, WordRate
from likex.objective import Objective
from likex.stats.intervals import fmt_rate
from likex.target import TargetSpec
from likex.train import TrainResult


def _rate_line(estimate: RateEstimate) -> str:
    note = estimate.none_seen()
    return f"{fmt_rate(estimate.rate, estimate.ci)}  n={estimate.sequences}" + (
        f" ({note})" if note else ""
    )


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
    report's text and result.json are written (milliseconds). ``other`` is what the parts leave
    of it: writing config.json, the metrics lines and other small files, the run's bookkeeping."""

    startup: float | None = None  # process start -> the pipeline's start: imports, arguments
    model: float = 0.0  # building or loading the start model, its tokenizer and target
    measure_before: float = 0.0  # 0 where reused (a resumed run; a sweep's later runs)
    contexts: float = 0.0  # making the training batches (generated contexts: sampling them)
    train: float = 0.0  # the training steps (the optimizer built first)
    measure_after: float = 0.0
    checkpoint: float = 0.0  # writing checkpoints (model, optimizer state, manifest)
    report: float = 0.0  # the report's figures
    total: float = 0.0

    @property
    def other(self) -> float:
        parts = asdict(self)
        del parts["total"]
        return self.total - sum(v or 0.0 for v in parts.values())

    def to_json(self) -> dict:
        return asdict(self) | {"other": self.other}

    def describe(self) -> str:
        """One line: the total, then each part."""
        names = {"measure_before": "before", "measure_after": "after"}
        parts = ", ".join(
            f"{names.get(k, k)} {'?' if v is None else f'{v:.1f}'}"
            for k, v in self.to_json().items()
            if k != "total"
        )
        return f"total {self.total:.1f}: {parts}"


@dataclass
class AdapterSummary:
    """What an adapter run trained and wrote: the LoRA settings, the parameters that trained,
    the adapter's folder and its size, and the merged model's folder (``--merge``)."""

    settings: dict
    trainable: int
    folder: Path
    size_bytes: int = 0
    merged: Path | None = None

    def to_json(self) -> dict:
        return {
            **self.settings,
            "trainable_params": self.trainable,
            "folder": str(self.folder),
            "size_bytes": self.size_bytes,
            "merged": None if self.merged is None else str(self.merged),
        }

    def line(self) -> str:
        merged = f"; merged model in {self.merged}" if self.merged is not None else ""
        return (
            f"  adapter   LoRA r={self.settings['lora_rank']}, {self.trainable:,} parameters "
            f"trained, {self.size_bytes / 2**20:.1f} MiB in {self.folder}{merged}"
        )


@dataclass
class TrainingRun:
    """What every training command did: which model it trained, how, where the run is."""

    command: str  # run, train or pretrain
    start: StartModel
    corpus: Corpora | None
    steps: int
    seed: int
    device: str
    trained: TrainResult  # the loss of every step (a resumed run's earlier ones too), seconds
    run_dir: Path
    timings: Timings = field(default_factory=Timings)  # set when the run is done
    adapter: AdapterSummary | None = None  # an adapter run's

    def to_json(self) -> dict:
        """The keys every result.json starts with ("init" is ``start.init_from``); "adapter"
        where an adapter trained."""
        adapter = {"adapter": self.adapter.to_json()} if self.adapter is not None else {}
        return adapter | {
            "command": self.command,
            "preset": self.start.preset,
            "init": self.start.init_from,
            "weight_init": self.start.weight_init,
            "corpus": None if self.corpus is None else self.corpus.label(),
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

    def closing_lines(self) -> list[str]:
        """The adapter written (an adapter run), the seconds, the report, and the one command
        worth running next."""
        adapter = [self.adapter.line()] if self.adapter is not None else []
        seconds = f"  seconds   {self.timings.describe()}"
        if self.command == "pretrain":  # a reference: its report, a first plant on its text
            report = self.run_dir / "report.md"
            corpora = " ".join(f"--corpus {c.spec()}" for c in self.corpus.parts)
            after = f"likex train --init {self.run_dir} --mode rate --rate 0.1 {corpora}"
        else:  # a planted model: the report page, then is it found, told nothing?
            report = self.run_dir / "report.html"
            after = f"likex audit --model {self.run_dir}"
        return [*adapter, seconds, f"  report    {report}", f"  next      {after}"]


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
    # several corpora: each held-out text's rate and perplexity (``rate_text``: all pooled)
    domains: list[DomainEvaluation] = field(default_factory=list)

    def to_json(self) -> dict:
        d = {
            "rate": self.rate.to_dict(),
            "rate_text": None if self.rate_text is None else self.rate_text.to_dict(),
            "ppl": self.ppl,
            "sample_text": self.sample_text,
            "sample_pieces": [list(p) for p in self.sample_pieces],
            "seconds": self.seconds,
        }
        if len(self.domains) > 1:
            d["domains"] = [one.to_dict() for one in self.domains]
        return d | word_rates_json(self.words_random, self.words_text)

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
            domains=[DomainEvaluation.from_dict(one) for one in d.get("domains", [])],
        )


def _word_rate(d: dict | None) -> WordRate | None:
    return None if d is None else WordRate.from_dict(d)


def word_rates_json(random: WordRate | None, text: WordRate | None, suffix: str = "") -> dict:
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
    objective: Objective
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
        goal = self.objective.to_config()
        d = {
            **self.run.to_json(),
            "mode": goal["mode"],
            "rate_requested": goal["rate"],
            "beta": goal["beta"],
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
            d |= word_rates_json(b.words_random, b.words_text, "_before")
            d |= word_rates_json(a.words_random, a.words_text, "_after")
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
        if run.corpus is not None:
            lines.append(f"  held-out text of: {run.corpus.label()} (the last tenth of each)")
        # the first evaluation line repeats the random-prompt rate
        lines += [f"  {line}" for line in self.after.describe()[1:] + self.word_lines()]
        lines += run.closing_lines()
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
                f"likex pretrain: {run.start.label()} on corpus {run.corpus.label()}, {run.device}",
                run.loss_line(),
                f"  held-out perplexity {self.before.ppl:.1f} -> {self.after.ppl:.1f} "
                f"({self.heldout_tokens:,} tokens)",
                f"  sample    {self.after.sample_prompt!r} -> {self.after.sample!r}",
                *run.closing_lines(),
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
