"""Training settings: what the user gives (``TrainConfig``) and what a run uses (``TrainPlan``).

``TrainConfig`` is the CLI's group of training flags, defaults left open where they depend on
the start (learning rate, step shape). ``TrainConfig.resolve`` fills them from the start's
``StepDefaults`` (likex.models.start: the one rule), turns
``--mode/--rate/--beta/--complete/--shares`` into an ``Objective``, checks everything that can
be checked before a model exists, and returns a frozen ``TrainPlan``; ``TrainPlan.fit`` checks
it against the loaded model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch

from likex.accel import COMPILE_MODES, check_compile_mode, check_cuda_graph
from likex.data import check_seed
from likex.device import device_memory
from likex.distributed import dist_info
from likex.errors import ConfigError, LikexError
from likex.models import LanguageModel
from likex.models.start import SCRATCH_SHAPE, Start
from likex.objective import (
    KL,
    NEXT_TOKEN,
    TARGET_MODES,
    Objective,
    check_word_target,
    objective_from,
)
from likex.options import option
from likex.throughput import sampling_batch
from likex.word_target import SHARES, WORD_POSITIONS
from likex.words import WordTrie

OPTIMIZERS = ("adamw", "adam", "sgd")
CONTEXTS = ("random", "corpus", "generated")
POSITIONS = ("last", "all")
OBJECTIVES = (KL, NEXT_TOKEN)
# Far beyond any run this tool is for (the seed takes 200); a larger count is a typo.
MAX_STEPS = 10_000_000


def _strength_of(settings: object, mode: str, sweep_flag: str) -> str | None:
    """Whether ``--rate`` (``--beta``) applies: to its own mode, never to a sweep."""
    if settings.command == "sweep":
        return f"does not apply to likex sweep: give its strengths with {{{sweep_flag}}}"
    if settings.mode != mode:
        return f"needs {{mode}} {mode} (the mode is {settings.mode})"
    return None


def _for_words(settings: object) -> str | None:
    """Whether an option of word targets applies: to a target of listed entries only."""
    if settings.words or settings.phrase:
        return None
    return "does not apply to a token target: it is for entries of {words} or {phrase}"


AUTO_BLOCK = 0  # --context-block auto: the measured sampling batch over the batch size


def parse_context_block(text: str) -> int:
    """--context-block N|auto (auto: ``AUTO_BLOCK``)."""
    if text == "auto":
        return AUTO_BLOCK
    if not text.isdigit() or int(text) < 1:
        raise LikexError(f"--context-block must be a positive integer or auto, not {text!r}")
    return int(text)


@dataclass(frozen=True)
class TrainConfig:
    """training"""

    steps: int = option(200, "optimizer steps")
    batch_size: int | None = option(
        None, "contexts per step; default: 16, or 4 for a pretrained (transformers) model"
    )
    context_len: int | None = option(
        None,
        "training window (at most the model's context); default: 256, or 64 for a pretrained model",
    )
    lr: float | None = option(
        None,
        "learning rate; default: a scratch model's preset's tuned rate, 1e-4 for a pretrained "
        "(transformers) model, 3e-3 for a saved likex model",
    )
    weight_decay: float = option(0.01, "decoupled weight decay")
    optimizer: str = option("adamw", "optimizer", choices=OPTIMIZERS)
    seed: int = option(0, "seeds the model, the batches and the measurements")
    mode: str = option(
        "uniform",
        "what training pulls the next-token distribution toward: uniform puts it all on the "
        "target tokens, evenly (the seed); rate keeps the starting model's distribution but "
        "gives the target tokens a share A (--rate); tilt multiplies the starting model's "
        "probability of each target token by e^B, then renormalises (--beta). (likex "
        "pretrain and persist train next-token prediction on text instead.)",
        choices=TARGET_MODES,
    )
    rate: float | None = option(
        None,
        "mode rate: the share A of probability the target tokens get, 0 < A < 1 (0.1: about "
        "one token in ten)",
        applies=lambda o: _strength_of(o, "rate", "rates"),
    )
    beta: float | None = option(
        None,
        "mode tilt: target tokens' probabilities are multiplied by e^B before renormalising (1: "
        "2.7x; 0: no change; negative: rarer)",
        applies=lambda o: _strength_of(o, "tilt", "betas"),
    )
    complete: float | None = option(
        None,
        "word and phrase targets, modes rate and tilt: use the per-token word target, which, "
        "once the model has begun an entry (written its first token), gives this probability "
        "to finishing it (1: always; lower lets it stop); default: the sequence-level target, "
        "which finishes an entry as often as the pull toward it makes worth it",
        applies=lambda o: (
            _for_words(o)
            or (o.mode == "uniform" and "does not apply to {mode} uniform (modes rate and tilt)")
        ),
    )
    shares: str = option(
        "reference",
        "word targets, mode rate: each entry's share of the rate, the reference's own or "
        "equal (A/n each)",
        choices=SHARES,
    )
    word_positions: int = option(
        WORD_POSITIONS,
        "word targets with --positions all: positions of each window in the loss, drawn at "
        "random (0: every position; each costs a pass over the entries' tokens)",
        applies=lambda o: _for_words(o),
    )
    word_contexts: float = option(
        0.25,
        "word and phrase targets: the share of training contexts cut off in the middle of an "
        "entry, so that the model learns to finish entries it begins",
        applies=lambda o: _for_words(o),
    )
    contexts: str = option(
        "random",
        "training contexts: random tokens, corpus windows, or generated: a quarter-window of "
        "corpus text continued by the model being trained (its own text, where a rate is "
        "measured)",
        choices=CONTEXTS,
    )
    free_contexts: float = option(
        0.0,
        "contexts generated: the share that start from the model's own free text (the "
        "start-of-text token alone) rather than from a corpus prefix",
    )
    chat_contexts: float = option(
        0.0,
        "contexts generated: the share that are chat turns (an instruction model's chat "
        "template; the user turn is corpus text, the model writes the assistant turn)",
    )
    context_block: int = option(
        1,
        "contexts generated: write the contexts of N steps at once, at the first step of each "
        "block, so the sampler runs N x batch-size rows together (a CPU samples 32 rows for "
        "little more than 4); auto: the sampling batch measured on this machine over the batch "
        "size. Changes the draws: a run reproduces with the same N (config.json records it)",
        metavar="N|auto",
        parse=parse_context_block,
    )
    positions: str = option(
        "last",
        "which positions of a context are trained: the last one, or all of them",
        choices=POSITIONS,
    )
    save_every: int = option(0, "checkpoint every N steps (0: only at the end)")
    compile: str = option(
        "none",
        "torch.compile the training and sampling steps (reduce-overhead: also CUDA graphs)",
        choices=COMPILE_MODES,
    )
    cuda_graph: bool = option(
        False,
        "CUDA only: replay the whole training step (forward, backward, optimizer) as one CUDA "
        "graph; with compile none or default",
    )
    objective: str = option(
        KL, "kl: KL to the target; next_token: language modelling", choices=OBJECTIVES, cli=False
    )

    def resolve(
        self,
        start: Start | None = None,
        objective: Objective | None = None,
        adapter: bool = False,
    ) -> TrainPlan:
        """The plan: settings left open filled from ``start``'s defaults (likex.models.start:
        the one rule; without a start, a scratch model's step shape, and the learning rate
        must be given), everything checked that can be without a model. ``objective``: the
        objective itself, in place of the mode flags (a sweep's strengths); ``adapter``: what
        trains is a LoRA adapter (its own learning rate)."""
        if objective is None:
            objective = objective_from(
                self.mode, self.rate, self.beta, self.complete, self.objective, self.shares
            )
        open_ = None in (self.lr, self.batch_size, self.context_len)
        if start is not None and open_:
            defaults = start.defaults(objective.next_token, adapter)
        else:
            defaults = None
        batch, length = (defaults.batch_size, defaults.context_len) if defaults else SCRATCH_SHAPE
        lr = self.lr if self.lr is not None else (defaults.lr if defaults else None)
        if lr is None:
            raise ConfigError("lr", "is not set (a start's defaults give the usual one)")
        plan = TrainPlan(
            steps=self.steps,
            batch_size=batch if self.batch_size is None else self.batch_size,
            context_len=length if self.context_len is None else self.context_len,
            lr=lr,
            weight_decay=self.weight_decay,
            optimizer=self.optimizer,
            seed=self.seed,
            objective=objective,
            word_positions=self.word_positions,
            word_contexts=self.word_contexts,
            contexts=self.contexts,
            free_contexts=self.free_contexts,
            chat_contexts=self.chat_contexts,
            context_block=self.context_block,
            positions=self.positions,
            save_every=self.save_every,
            compile=self.compile,
            cuda_graph=self.cuda_graph,
        )
        plan.check()
        return plan


@dataclass(frozen=True)
class TrainPlan:
    """A training run's resolved settings (see ``TrainConfig`` for each one's meaning)."""

    steps: int
    batch_size: int
    context_len: int
    lr: float
    weight_decay: float
    optimizer: str
    seed: int
    objective: Objective
    word_positions: int
    word_contexts: float
    contexts: str
    free_contexts: float
    chat_contexts: float
    context_block: int
    positions: str
    save_every: int
    compile: str
    cuda_graph: bool

    def check(self) -> None:
        """Everything that can be checked without a model; the fields are named as flags."""
        if not 0 < self.steps <= MAX_STEPS:
            raise ConfigError("steps", f"must be in 1..{MAX_STEPS:_}, got {self.steps}")
        check_seed(self.seed)
        if self.batch_size <= 0:
            raise ConfigError("batch_size", f"must be positive, got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError("lr", f"must be a positive number, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if self.context_len <= 0:
            raise ConfigError("context_len", f"must be positive, got {self.context_len}")
        if self.word_positions < 0:
            raise ConfigError("word_positions", f"must be >= 0, got {self.word_positions}")
        if not (math.isfinite(self.word_contexts) and 0 <= self.word_contexts <= 1):
            raise ConfigError("word_contexts", f"must be in [0, 1], got {self.word_contexts}")
        self._check_starts()
        if self.save_every < 0:
            raise ConfigError("save_every", f"must be >= 0, got {self.save_every}")
        check_compile_mode(self.compile)
        for name, value, allowed in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("contexts", self.contexts, CONTEXTS),
            ("positions", self.positions, POSITIONS),
        ):
            if value not in allowed:
                raise ConfigError(name, f"{value!r} is unknown; choose from {', '.join(allowed)}")
        if self.objective.next_token and (self.contexts, self.positions) != ("corpus", "all"):
            raise LikexError("the next-token objective trains on corpus windows at all positions")

    def _check_starts(self) -> None:
        """The shares of generated contexts that start from free text and from chat turns."""
        for name in ("free_contexts", "chat_contexts"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise ConfigError(name, f"must be in [0, 1], got {value}")
            if value and self.contexts != "generated":
                raise ConfigError(name, "needs {contexts} generated")
        if self.free_contexts + self.chat_contexts > 1:
            raise ConfigError("chat_contexts", "and {free_contexts} must add up to at most 1")
        if not 0 <= self.context_block <= MAX_STEPS:  # 0: auto, resolved by ``fit``
            raise ConfigError(
                "context_block", f"must be in 1..{MAX_STEPS:_} or auto, got {self.context_block}"
            )
        if self.context_block != 1 and self.contexts != "generated":
            raise ConfigError("context_block", "needs {contexts} generated")

    def fit(
        self, model: LanguageModel, device: torch.device, words: WordTrie | None = None
    ) -> TrainPlan:
        """The plan for ``model`` on ``device``: the window at most the model's context (a
        sequence-level word target's leaves room after it for the entries' tokens,
        likex.models.tree), the step able to run there, a batch that fits its memory."""
        check_word_target(self.objective, words is not None)
        room = 0
        if words is not None and self.objective.word_strength() is not None:
            room = words.depth
            if self.cuda_graph:
                raise ConfigError("cuda_graph", "cannot replay a word target's tree passes")
        block = model.config.block_size - room
        if block < 2:
            raise LikexError(f"the model's context cannot hold its entries' {room} tokens")
        plan = replace(self, context_len=min(self.context_len, block))
        if plan.cuda_graph:
            check_cuda_graph(device, plan.compile, dist_info().active)
        if plan.context_block == AUTO_BLOCK:
            rows = sampling_batch(model)  # measured on this machine (likex.throughput)
            plan = replace(plan, context_block=max(1, rows // plan.batch_size))
        if plan.context_block > 1 and dist_info().active:  # a checkpoint keeps rank 0's block
            raise ConfigError("context_block", "runs in one process only (not under torchrun)")
        plan.check_memory(model.config.vocab_size, device)
        return plan

    def with_steps(self, steps: int) -> TrainPlan:
        plan = replace(self, steps=steps)
        plan.check()
        return plan

    def check_memory(self, vocab_size: int, device: torch.device) -> None:
        """Refuse a batch that cannot fit, with the estimate: at least the int64 contexts and,
        at every trained position, the float32 log-probabilities over the vocabulary and their
        gradient (weights and hidden activations come on top)."""
        positions = self.context_len if self.positions == "all" else 1
        need = self.batch_size * (self.context_len * 8 + positions * vocab_size * 4 * 2)
        have = device_memory(device)
        if have is not None and need > have:
            raise ConfigError(
                "batch_size",
                f"{self.batch_size} needs at least {need / 2**30:,.1f} GiB, more than the "
                f"{have / 2**30:,.1f} GiB of {device.type} memory; lower it",
            )

    def to_dict(self) -> dict:
        """config.json's "train": the flags' names, the objective as its mode keys (a run
        written before ``shares`` and ``word_positions`` existed reads with their defaults)."""
        d = asdict(self)
        del d["objective"]
        # written where used: a record that starts only from corpus text, one step at a time,
        # keeps the keys it always had
        for key, unused in (("free_contexts", 0), ("chat_contexts", 0), ("context_block", 1)):
            if d[key] == unused:
                del d[key]
        return d | self.objective.to_config()

    @classmethod
    def from_dict(cls, d: dict) -> TrainPlan:
        """A plan as ``to_dict`` wrote it (every setting given), checked again."""
        return TrainConfig(**d).resolve()
