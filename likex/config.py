"""User-facing configs: one dataclass per command, each validating itself.

Fields are declared with ``likex.options.option``, so the help text lives on the field and the
CLI generates every flag from these classes (a nested config becomes a group of flags). The
library raises ``ConfigError`` naming a field; only the CLI knows which flag that is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from likex.corpora import Corpora, corpus_arg
from likex.data import check_seed
from likex.device import device_option
from likex.errors import ConfigError, LikexError, clip
from likex.io import folder_arg
from likex.measurement.rates import MAX_GEN_TOKENS, MeasureConfig
from likex.models.adapter import AdapterConfig
from likex.models.gpt import PRESETS, WEIGHT_INITS
from likex.models.named import NAMED_MODELS
from likex.models.start import (
    SCRATCH,
    Saved,
    Scratch,
    Start,
    init_arg,
    model_arg,
    parse_start,
)
from likex.objective import NEXT_TOKEN, Objective, Uniform
from likex.options import option, out_option
from likex.plans import PersistPlan, RunPlan
from likex.target import TargetSpec, check_text
from likex.train_config import TrainConfig

CORPUS_HELP = (
    "real text, repeatable: builtin (Python's pydoc topics), builtin:code, builtin:legal, "
    "builtin:docs (what installed packages ship), mix (all four) or a UTF-8 file, "
    "NAME=WEIGHT to weight it; each corpus's last tenth is held out and measured on its own"
)
COMMANDS = ("run", "train", "pretrain")
MAX_EXAMPLES = 1_000_000  # more than any vocabulary
# --quick, a first look: on the default cpu preset the seed's rate goes from 0.018 to about
# 0.5 in 60 steps (0.98 in 200), and 16 samples of 100 tokens still show it clearly
# (docs/getting-started.md); a flag the user gives sets its own value.
QUICK_STEPS, QUICK_SAMPLES, QUICK_GEN_TOKENS = 60, 16, 100


def parse_floats(text: str) -> tuple[float, ...]:
    """ "0.02,0.05,0.1" -> (0.02, 0.05, 0.1): a flag's comma-separated numbers."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise LikexError(f"expected comma-separated numbers, got {clip(text)}") from e
    if not values:
        raise LikexError(f"expected comma-separated numbers, got {clip(text)}")
    return values


def _tuples(d: dict) -> dict:
    """A record's lists as the tuples its config's fields are."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


# Path and device arguments are checked as the command line is read (each flag's ``parse``:
# likex.data.corpus_arg, likex.models.start.model_arg, ...), so a missing file or an absent
# device is refused before any model is loaded.


def _scratch_only(settings: object) -> str | None:
    """Whether an option of a scratch start applies: only where training starts from one."""
    if settings.init in (None, SCRATCH):
        return None
    return f"applies only to {{init}} scratch, not {clip(settings.init)}"


def _text_eval(settings: object) -> str | None:
    if settings.random_only:
        return "does not apply to {random_only}: nothing is measured on text"
    return None


@dataclass(frozen=True)
class RunConfig:
    """the starting model and the experiment"""

    init: str = option(
        SCRATCH,
        "starting model: 'scratch' (a fresh preset model), a saved model or run folder, "
        f"a named real model ({', '.join(NAMED_MODELS)}), or hf:NAME_OR_PATH (a transformers "
        "causal LM)",
        metavar="DIR|scratch|NAME|hf:NAME",
        parse=init_arg,
    )
    preset: str = option(
        "cpu", f"model preset of a scratch start: {', '.join(PRESETS)}", applies=_scratch_only
    )
    weight_init: str = option(
        "course",
        "how a scratch model's weights are drawn: course (PyTorch's defaults, as the seed did) "
        "or gpt2 (GPT-2's N(0, 0.02))",
        choices=WEIGHT_INITS,
        applies=_scratch_only,
    )
    corpus: tuple[str, ...] | str | None = option(
        None,
        CORPUS_HELP + "; windows are drawn in proportion to the weights",
        metavar="NAME[=WEIGHT]",
        append=True,
        parse=corpus_arg,
    )
    target: TargetSpec = option(
        factory=lambda: TargetSpec(like="x"), help="target (the union of what is given)", whole=True
    )
    train: TrainConfig = option(factory=TrainConfig, help="training")
    adapter: AdapterConfig = option(factory=AdapterConfig, help="adapter")
    measure: MeasureConfig = option(factory=MeasureConfig, help="rate measurement")
    eval_every: int = option(0, "measure the rate every N steps")
    device: str = device_option()
    command: str = option("run", "which pipeline", choices=COMMANDS, cli=False)
    block_size: int | None = option(
        None, "a scratch model's context; None: the preset's", cli=False
    )

    def resolve(self, start: Start | None = None, objective: Objective | None = None) -> RunPlan:
        """The run's plan: the start parsed (or ``start``, a run's recorded one), defaults
        filled, and everything checked that can be before a model exists. ``objective``: in
        place of the mode flags (a sweep's strengths)."""
        if self.command not in COMMANDS:
            raise LikexError(f"unknown command {self.command!r}")
        if self.eval_every < 0:
            raise ConfigError("eval_every", f"must be >= 0, got {self.eval_every}")
        check_seed(self.train.seed)  # it seeds the model, built before the training is checked
        if start is None:
            try:
                seed, block = self.train.seed, self.block_size
                scratch = Scratch.of(self.preset, self.weight_init, seed, block)
            except LikexError as e:  # a pretraining window is the new model's context
                if self.block_size is None:
                    raise
                raise ConfigError("context_len", f"{self.block_size}: {e}") from e
            start = parse_start(self.init, scratch)
        self.adapter.check()
        train = self.train.resolve(start, objective, self.adapter.enabled)
        if self.command == "run" and (train.objective != Uniform() or isinstance(start, Saved)):
            raise LikexError(
                "likex run is the seed experiment: a uniform target on a scratch model or an "
                "hf: model; use likex train for anything else"
            )
        corpus = Corpora.of(self.corpus)
        if train.contexts != "random" and corpus is None:
            raise ConfigError("contexts", f"{train.contexts} needs {{corpus}} builtin|FILE")
        scratch = isinstance(start, Scratch)
        return RunPlan(
            command=self.command,
            init_from=self.init,
            start=start,
            corpus=corpus,
            target=self.target,
            train=train,
            adapter=self.adapter,
            measure=self.measure,
            eval_every=self.eval_every,
            device=self.device,
            # a scratch model's settings; another start has none (its own weights)
            preset=self.preset if scratch else None,
            weight_init=self.weight_init if scratch else None,
            block_size=self.block_size,
        )

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """The config a run's plan recorded (``RunPlan.to_dict``)."""
        defaults = cls()
        return cls(
            preset=d["preset"] or defaults.preset,
            weight_init=d["weight_init"] or defaults.weight_init,
            target=TargetSpec.from_dict(d["target"]),
            train=TrainConfig(**d["train"]),
            adapter=AdapterConfig(**_tuples(d.get("adapter", {}))),
            measure=MeasureConfig(**d["measure"]),
            eval_every=d.get("eval_every", 0),
            device=d.get("device", "auto"),
            command=d.get("command", "run"),
            init=d.get("init_from", SCRATCH),
            corpus=d.get("corpus"),
            block_size=d.get("block_size"),
        )


@dataclass(frozen=True)
class RunCommand:
    """likex run, train and pretrain: one pipeline (start -> measure -> train -> measure)."""

    run: RunConfig = option(factory=RunConfig, help="the starting model and the experiment")
    out: str | None = out_option()
    resume: str | None = option(
        None,
        "continue the run in DIR from its last checkpoint, with DIR's config (only steps may "
        "change)",
        metavar="DIR",
        parse=lambda text: folder_arg(text, "run folder"),
    )
    quick: bool = option(
        False,
        f"a first look in a fraction of the time: {QUICK_STEPS} steps, at most {QUICK_SAMPLES} "
        f"samples of {QUICK_GEN_TOKENS} tokens per measurement (a flag given keeps its value)",
    )
    given: frozenset[str] = option(
        frozenset(), "the fields the user set (resume lets only steps change)", cli=False
    )

    def config(self) -> RunConfig:
        """The run's config: with ``quick``, fewer steps and samples where no flag set them."""
        if not self.quick:
            return self.run
        train, measure, given = self.run.train, self.run.measure, self.given
        return replace(
            self.run,
            train=replace(train, steps=train.steps if "steps" in given else QUICK_STEPS),
            measure=replace(
                measure,
                samples=measure.samples if "samples" in given else QUICK_SAMPLES,
                gen_tokens=measure.gen_tokens if "gen_tokens" in given else QUICK_GEN_TOKENS,
            ),
        )


def pretrain_command() -> RunCommand:
    """likex pretrain's defaults: a few minutes on a 2-core CPU for the cpu preset
    (docs/results.md), with GPT-2's N(0, 0.02) init: the course's N(0, 1) embeddings make an
    untrained model copy its input and learn language far more slowly. The training window is
    also the new model's context: a short one keeps every later step cheap."""
    return RunCommand(
        RunConfig(
            command="pretrain",
            weight_init="gpt2",
            corpus="builtin",
            block_size=64,
            train=TrainConfig(
                batch_size=8,
                context_len=64,
                objective=NEXT_TOKEN,
                contexts="corpus",
                positions="all",
            ),
        )
    )


@dataclass(frozen=True)
class SweepCommand:
    """likex sweep: one model per strength from the same start."""

    run: RunConfig = option(
        factory=lambda: RunConfig(
            command="train", corpus="builtin", train=TrainConfig(mode="rate")
        ),
        help="the starting model and the experiment",
    )
    rates: tuple[float, ...] = option(
        (),
        "mode rate: comma-separated A values, e.g. 0.02,0.05,0.1",
        parse=parse_floats,
        applies=lambda o: o.mode != "rate" and f"needs {{mode}} rate (the mode is {o.mode})",
    )
    betas: tuple[float, ...] = option(
        (),
        "mode tilt: comma-separated B values",
        parse=parse_floats,
        applies=lambda o: o.mode != "tilt" and f"needs {{mode}} tilt (the mode is {o.mode})",
    )
    out: str | None = out_option()


@dataclass(frozen=True)
class EvalConfig:
    """likex eval: rates and side effects of a saved model against its reference."""

    model: str = option(
        help="a run or model folder, smollm2-135m, or hf:NAME_OR_PATH",
        metavar="DIR",
        parse=model_arg,
    )
    reference: str | None = option(
        None,
        "the reference model R (default: the run's own starting model, if recorded)",
        metavar="DIR",
        parse=model_arg,
        applies=_text_eval,
    )
    corpus: tuple[str, ...] | str | None = option(
        None,
        "held-out text, repeatable (each a domain, measured on its own): builtin, builtin:code, "
        "builtin:legal, builtin:docs, mix (all four) or a UTF-8 file (default: the run's). "
        "Each is split as a run splits it, and only its last tenth (the part no run trained "
        "on) is scored and gives the real-text prompts",
        metavar="NAME",
        append=True,
        parse=corpus_arg,
        applies=_text_eval,
    )
    random_only: bool = option(False, "only the rate on random-token prompts (no text)")
    measure: MeasureConfig = option(factory=MeasureConfig, help="rate measurement")
    seed: int = option(0, "seeds the prompts and the draws")
    target: TargetSpec | None = option(
        None, "target (default: the run's own; the union of what is given)", whole=True
    )
    device: str = device_option()

    def validate(self, block_size: int) -> None:
        check_seed(self.seed)
        self.measure.validate(block_size)


@dataclass(frozen=True)
class GenerateConfig:
    """likex generate: sample text from a saved model."""

    model: str = option(
        help="a run or model folder, smollm2-135m, or hf:NAME_OR_PATH",
        metavar="DIR",
        parse=model_arg,
    )
    prompt: str = option("", "prompt text (default: the start-of-text token)")
    tokens: int = option(100, "new tokens to sample")
    num: int = option(1, "number of samples")
    temperature: float = option(1.0, "0 is greedy")
    top_k: int | None = option(
        None,
        "sample among the k likeliest tokens",
        applies=lambda o: (
            o.temperature == 0
            and "does not apply to {temperature} 0 (greedy: always the likeliest token)"
        ),
    )
    seed: int = option(0, "seeds the draws")
    device: str = device_option()

    def validate(self) -> None:
        for name in ("tokens", "num"):
            if not 0 < getattr(self, name) <= MAX_GEN_TOKENS:
                raise ConfigError(
                    name, f"must be in 1..{MAX_GEN_TOKENS:_}, got {getattr(self, name)}"
                )
        check_seed(self.seed)
        check_text(self.prompt, "prompt")
        # temperature and top_k are checked by likex.generate.sample itself


@dataclass(frozen=True)
class TargetsConfig:
    """likex targets: which tokens a target spec selects."""

    target: TargetSpec = option(factory=TargetSpec, help="target (the union of what is given)")
    examples: int = option(20, "how many example tokens to show")
    model: str | None = option(
        None,
        "whose vocabulary: a run or model folder, a named real model or hf:NAME_OR_PATH "
        "(default: GPT-2's)",
        metavar="DIR|NAME|hf:NAME",
        parse=model_arg,
    )

    def validate(self) -> None:
        if not 0 <= self.examples <= MAX_EXAMPLES:
            raise ConfigError("examples", f"must be in 0..{MAX_EXAMPLES:_}, got {self.examples}")


@dataclass(frozen=True)
class PersistConfig:
    """likex persist: does a planted preference survive next-token training on clean text?"""

    model: str = option(
        help="a run or model folder or hf:NAME_OR_PATH (a transformers model)",
        metavar="DIR|hf:NAME",
        parse=model_arg,
    )
    corpus: tuple[str, ...] | str = option(
        "builtin",
        "clean text, repeatable: " + CORPUS_HELP.removeprefix("real text, repeatable: "),
        metavar="NAME[=WEIGHT]",
        append=True,
        parse=corpus_arg,
    )
    steps: int = option(300, "next-token training steps")
    batch_size: int | None = option(
        None, "windows per step; default: 16, or 4 for a pretrained (transformers) model"
    )
    context_len: int | None = option(
        None, "training window; default: the model's context, or 64 for a pretrained model"
    )
    lr: float | None = option(
        None, "AdamW learning rate; default: 1e-3, or 1e-4 for a pretrained model"
    )
    weight_decay: float = option(0.01, "decoupled weight decay")
    eval_every: int = option(50, "measure every N steps")
    seed: int = option(0, "seeds the batches and the measurements")
    adapter: AdapterConfig = option(factory=AdapterConfig, help="adapter")
    measure: MeasureConfig = option(
        factory=lambda: MeasureConfig(samples=32, ci_half_width=None),
        help="rate measurement",
    )
    target: TargetSpec | None = option(
        None, "target (default: the run's own; the union of what is given)", whole=True
    )
    out: str | None = out_option()
    device: str = device_option()

    def resolve(self, start: Start) -> PersistPlan:
        """The plan: next-token fine-tuning with the defaults of ``start`` (the one rule of
        likex.models.start), checked."""
        if self.eval_every <= 0:
            raise ConfigError("eval_every", f"must be positive, got {self.eval_every}")
        self.adapter.check()
        if self.adapter.enabled and start.adapter:
            raise ConfigError(
                "adapter", "lora: the model is an adapter already; persist trains it as it is"
            )
        train = TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            context_len=self.context_len,
            lr=self.lr,
            weight_decay=self.weight_decay,
            seed=self.seed,
            objective=NEXT_TOKEN,
            contexts="corpus",
            positions="all",
        ).resolve(start, adapter=self.adapter.enabled or start.adapter)
        corpus = Corpora.of(self.corpus)
        if corpus is None:
            raise ConfigError("corpus", "is needed: the clean text to train on")
        return PersistPlan(
            self.model, start, corpus, train, self.adapter, self.eval_every, self.measure
        )
