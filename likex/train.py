"""One training loop for every mode: the target, the contexts and the positions vary."""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from likex.accel import (
    COMPILE_MODES,
    GraphedStep,
    autocast_for,
    check_compile_mode,
    check_cuda_graph,
    compiled,
    to_device,
)
from likex.data import check_seed, corpus_windows, random_contexts, step_generator
from likex.distributed import barrier, check_same_on_all_ranks, dist_info, mean_over_ranks
from likex.errors import ConfigError, LikexError
from likex.generate import sample
from likex.io import append_jsonl
from likex.loss import KLToTarget, next_token_loss
from likex.models.checkpoint import save_checkpoint
from likex.models.gpt import DEFAULT_LR, GPT
from likex.options import option
from likex.target import (
    TARGET_MODES,
    check_beta,
    check_rate,
    rate_target_log,
    tilt_target_log,
    uniform_target,
)
from likex.words import WordTrie, plant_prefixes, word_target_log

OPTIMIZERS = ("adamw", "adam", "sgd")
CONTEXTS = ("random", "corpus", "generated")
POSITIONS = ("last", "all")
# "kl": KL(Q || P) to a designed target (every mode). "next_token": the ordinary language-model
# loss on corpus windows, all positions (pretraining a reference).
OBJECTIVES = ("kl", "next_token")
METRICS_FILE = "metrics.jsonl"
# AdamW learning rate when training a saved likex model: a checkpoint has no preset to take a
# tuned rate from. The cpu preset's rate, used for the measurements in bench/RESULTS.md.
FINETUNE_LR = 3e-3
# A pretrained transformers model (smollm2-135m, hf:...): 3e-3 wrecks it (SmolLM2's loss went
# 0.29 -> 7.6 -> 8.4 in three steps); at 1e-4 a rate-0.1 target on SmolLM2-135M reaches its
# rate on held-out text in 10-15 steps of 4 x 64 tokens with perplexity near the floor
# (bench/RESULTS.md).
PRETRAINED_LR = 1e-4
# Next-token pretraining of a scratch model (likex pretrain; bench/RESULTS.md).
PRETRAIN_LR = 3e-3
# Far beyond any run this tool is for (the seed takes 200); a larger count is a typo.
MAX_STEPS = 10_000_000

# Default step shape (contexts per step, tokens per context): a scratch model trains on many
# long random contexts; a pretrained one needs few small steps, each ~20x dearer on a CPU.
SCRATCH_SHAPE = (16, 256)
PRETRAINED_SHAPE = (4, 64)


def default_lr(
    init: str, preset: str | None, objective: str = "kl", pretrained: bool = False
) -> float:
    """The one learning-rate rule for a run whose learning rate was not given: pretraining
    takes PRETRAIN_LR, a scratch model its preset's tuned rate, a pretrained transformers
    model PRETRAINED_LR, a saved likex model FINETUNE_LR."""
    if objective == "next_token" and init == "scratch":
        return PRETRAIN_LR
    if init == "scratch":
        return DEFAULT_LR[preset]
    return PRETRAINED_LR if pretrained else FINETUNE_LR


@dataclass
class TrainConfig:
    """training"""

    steps: int = option(200, "optimizer steps")
    batch_size: int | None = option(
        None, "contexts per step; default: 16, or 4 for a pretrained (transformers) model"
    )
    context_len: int | None = option(
        None,
        "training window (at most the model's context); default: 256, or 64 for a pretrained "
        "model",
    )
    lr: float | None = option(
        None,
        "learning rate; default: a scratch model's preset's tuned rate, 1e-4 for a pretrained "
        "(transformers) model, 3e-3 for a saved likex model",
    )
    weight_decay: float = option(0.01, "decoupled weight decay")
    optimizer: str = option("adamw", "optimizer", choices=OPTIMIZERS)
    seed: int = option(0, "seeds the model, the batches and the measurements")
    mode: str = option("uniform", "target distribution Q (see README)", choices=TARGET_MODES)
    rate: float | None = option(None, "mode rate: target mass A on M, 0 < A < 1")
    beta: float | None = option(None, "mode tilt: Q proportional to R exp(B [i in M])")
    complete: float = option(
        1.0, "word targets, modes rate and tilt: target mass on finishing a begun word"
    )
    word_contexts: float = option(
        0.25, "word targets: share of training contexts that end inside a word"
    )
    contexts: str = option(
        "random",
        "training contexts: random tokens, corpus windows, or generated: a quarter-window of "
        "corpus text continued by the model being trained (its own text, where a rate is "
        "measured)",
        choices=CONTEXTS,
    )
    positions: str = option("last", "positions that enter the loss", choices=POSITIONS)
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
        "kl", "kl: KL to the target; next_token: language modelling", choices=OBJECTIVES, cli=False
    )

    def fill_shape(self, pretrained: bool) -> None:
        """Give batch_size and context_len that were not set their defaults for the start."""
        batch, length = PRETRAINED_SHAPE if pretrained else SCRATCH_SHAPE
        if self.batch_size is None:
            self.batch_size = batch
        if self.context_len is None:
            self.context_len = length

    def validate(self, block_size: int, device: torch.device | None = None) -> None:
        """Checks the numbers and names; with ``device``, also that the step can run there.
        A step shape still unset gets a scratch model's."""
        self.fill_shape(pretrained=False)
        if not 0 < self.steps <= MAX_STEPS:
            raise ConfigError("steps", f"must be in 1..{MAX_STEPS:_}, got {self.steps}")
        check_seed(self.seed)
        if self.batch_size <= 0:
            raise ConfigError("batch_size", f"must be positive, got {self.batch_size}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError("lr", f"must be a positive number, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if not 0 < self.context_len <= block_size:
            raise ConfigError("context_len", f"{self.context_len} must be in 1..{block_size}")
        if not (math.isfinite(self.complete) and 0 < self.complete <= 1):
            raise ConfigError("complete", f"must be in (0, 1], got {self.complete}")
        if not (math.isfinite(self.word_contexts) and 0 <= self.word_contexts <= 1):
            raise ConfigError("word_contexts", f"must be in [0, 1], got {self.word_contexts}")
        if self.save_every < 0:
            raise ConfigError("save_every", f"must be >= 0, got {self.save_every}")
        check_compile_mode(self.compile)
        if self.cuda_graph and device is not None:
            check_cuda_graph(device, self.compile, dist_info().active)
        for name, value, allowed in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("mode", self.mode, TARGET_MODES),
            ("contexts", self.contexts, CONTEXTS),
            ("positions", self.positions, POSITIONS),
            ("objective", self.objective, OBJECTIVES),
        ):
            if value not in allowed:
                raise ConfigError(name, f"{value!r} is unknown; choose from {', '.join(allowed)}")
        if self.objective == "next_token" and (self.contexts, self.positions) != ("corpus", "all"):
            raise LikexError("the next-token objective trains on corpus windows at all positions")
        for name, mode in (("rate", "rate"), ("beta", "tilt")):
            if getattr(self, name) is not None and self.mode != mode:
                raise ConfigError(name, f"needs {{mode}} {mode} (the mode is {self.mode})")
        if self.mode == "rate":
            if self.rate is None:
                raise ConfigError("mode", "rate needs {rate} A with 0 < A < 1")
            check_rate(self.rate)
        if self.mode == "tilt":
            if self.beta is None:
                raise ConfigError("mode", "tilt needs {beta} B")
            check_beta(self.beta)

    def check_memory(self, model: nn.Module, device: torch.device) -> None:
        """Refuse a batch that cannot fit, with the estimate: at least the int64 contexts and,
        at every trained position, the float32 log-probabilities over the vocabulary and their
        gradient (weights and hidden activations come on top)."""
        positions = self.context_len if self.positions == "all" else 1
        need = self.batch_size * (
            self.context_len * 8 + positions * model.config.vocab_size * 4 * 2
        )
        have = device_memory(device)
        if have is not None and need > have:
            raise ConfigError(
                "batch_size",
                f"{self.batch_size} needs at least {need / 2**30:,.1f} GiB, more than the "
                f"{have / 2**30:,.1f} GiB of {device.type} memory; lower it",
            )

    def to_dict(self) -> dict:
        return asdict(self)


def device_memory(device: torch.device) -> int | None:
    """Total memory of ``device`` in bytes (None where unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    if device.type == "cpu" and hasattr(os, "sysconf"):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return None


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0  # the steps themselves (a resumed run's earlier ones too)
    checkpoint_seconds: float = 0.0  # writing this call's checkpoints (not in ``seconds``)

    @property
    def loss_first(self) -> float:
        return self.losses[0]

    @property
    def loss_last(self) -> float:
        return self.losses[-1]


def make_optimizer(model: GPT, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = list(model.parameters())
    # Fused Adam(W): one kernel per step on a GPU, and on a CPU the same float32 update ~7x
    # faster than the default per-parameter loop (bench/RESULTS.md). Inside a CUDA graph its
    # step counts must live on the GPU (capturable).
    adam = {
        "fused": params[0].device.type in ("cuda", "cpu"),
        "capturable": cfg.cuda_graph,
    }
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **adam)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **adam)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def training_batch(
    cfg: TrainConfig,
    step: int,
    vocab_size: int,
    corpus_tokens: torch.Tensor | None,
    rank: int = 0,
    words: WordTrie | None = None,
    model: GPT | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(contexts, next tokens) for ``step``: a pure function of (seed, rank, step) and, for
    generated contexts, of the model's weights, so resume is exact. Random and generated
    contexts have no next tokens (None); generated ones are on the model's device. With a word
    target, a share ``cfg.word_contexts`` of the contexts end inside a word
    (likex.words.plant_prefixes)."""
    gen = step_generator(cfg.seed, step, rank)
    if cfg.contexts == "random":
        idx, labels = random_contexts(cfg.batch_size, cfg.context_len, vocab_size, gen), None
    else:
        if corpus_tokens is None:
            raise LikexError(f"--contexts {cfg.contexts} needs a corpus")
        windows = corpus_windows(corpus_tokens, cfg.batch_size, cfg.context_len, gen)
        idx, labels = windows[:, :-1], windows[:, 1:]
        if cfg.contexts == "generated":
            idx, labels = generated_contexts(cfg, windows, gen, model), None
    if words is not None and cfg.objective == "kl":
        planted = plant_prefixes(
            words, idx.cpu(), cfg.word_contexts, step_generator(cfg.seed, step, rank, 2)
        )
        idx = planted.to(idx.device)
    return idx, labels


def generated_contexts(
    cfg: TrainConfig, windows: torch.Tensor, gen: torch.Generator, model: GPT | None
) -> torch.Tensor:
    """A quarter of each corpus window continued by ``model`` to ``cfg.context_len`` tokens,
    on the model's device."""
    if model is None:
        raise LikexError("--contexts generated needs the model being trained")
    # A rate is measured on the model's own continuations, and a short run moves the model
    # most where its training contexts were: corpus text alone leaves its own (target-rich)
    # text, where copying raises the rate, untrained. So most of each window is its own text.
    device = next(model.parameters()).device
    prompt = windows[:, : max(1, cfg.context_len // 4)].to(device)
    sampler = torch.Generator(device).manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
    new = sample(model, prompt, cfg.context_len - prompt.shape[1], generator=sampler)
    return torch.cat([prompt, new], dim=1)


def training_contexts(
    cfg: TrainConfig,
    step: int,
    vocab_size: int,
    corpus_tokens: torch.Tensor | None,
    rank: int = 0,
    words: WordTrie | None = None,
) -> torch.Tensor:
    """The inputs of the batch for ``step`` (random or corpus contexts)."""
    return training_batch(cfg, step, vocab_size, corpus_tokens, rank, words)[0]


def target_log_probs(
    cfg: TrainConfig,
    mask: torch.Tensor,
    reference: GPT | None,
    idx: torch.Tensor,
    words: WordTrie | None = None,
) -> tuple[torch.Tensor, bool]:
    """The target for each trained position: (q, q_is_log). A word target depends on the
    context (likex.words.word_target_log)."""
    if cfg.mode == "uniform" and words is None:
        return uniform_target(mask), False
    ref = None
    if cfg.mode != "uniform":
        if reference is None:
            raise LikexError(f"--mode {cfg.mode} needs a reference model")
        with torch.no_grad():
            ref = reference(idx, positions=cfg.positions)
    if words is not None:
        q = word_target_log(
            words, idx, cfg.mode, ref, cfg.positions, cfg.rate, cfg.beta, cfg.complete
        )
        return q, True
    if cfg.mode == "rate":
        return rate_target_log(ref, mask, cfg.rate), True
    return tilt_target_log(ref, mask, cfg.beta), True


def train(
    model: GPT,
    cfg: TrainConfig,
    mask: torch.Tensor,
    out_dir: str | Path,
    reference: GPT | None = None,
    corpus_tokens: torch.Tensor | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    start_step: int = 0,
    progress: bool = True,
    on_step: Callable[[int], dict | None] | None = None,
    seconds_before: float = 0.0,
    words: WordTrie | None = None,
) -> TrainResult:
    """Train ``model`` in place for steps ``start_step+1 .. cfg.steps``.

    Writes one metrics line per step to ``out_dir/metrics.jsonl``, a checkpoint every
    ``cfg.save_every`` steps and at the end. ``on_step(step)`` may return extra metrics
    (e.g. a target rate) to log for that step; its time is not counted as training time.
    ``words``: the trie of a word target (the target then depends on each context).
    ``seconds_before`` is the training time of earlier steps when resuming.

    Under torchrun every rank calls this with the same arguments: each draws its own batches
    (``cfg.batch_size`` per rank), DDP averages the gradients, the logged loss is the mean over
    ranks, and rank 0 alone writes files, calls ``on_step`` and shows progress.
    """
    device = next(model.parameters()).device
    cfg.validate(model.config.block_size, device)
    cfg.check_memory(model, device)
    if cfg.lr is None:
        raise ConfigError("lr", "is not set (likex.train.default_lr gives the usual one)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mask = mask.to(device)
    words_on = words.to(device) if words is not None else None
    ranks = dist_info()
    if reference is not None:
        reference.eval().requires_grad_(False)
    optimizer = optimizer or make_optimizer(model, cfg)
    uniform_q = uniform_target(mask) if cfg.mode == "uniform" and words is None else None
    criteria = {False: KLToTarget(log_target=False), True: KLToTarget(log_target=True)}
    vocab = model.config.vocab_size
    result = TrainResult()
    model.train()
    net: nn.Module = model
    if ranks.active:
        check_same_on_all_ranks(_launch_fingerprint(model, cfg, mask, start_step), "training setup")
        # DDP broadcasts rank 0's parameters, so every rank starts from the same weights.
        gpus = None
        if device.type == "cuda":
            gpus = [device.index if device.index is not None else torch.cuda.current_device()]
        net = DistributedDataParallel(model, device_ids=gpus)
    forward = compiled(net, cfg.compile)
    params = list(model.parameters())

    def step_once(idx: torch.Tensor, next_tokens: torch.Tensor | None) -> torch.Tensor:
        """One optimizer step; returns [loss, gradient norm] on the device."""
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(device):
            log_p = forward(idx, positions=cfg.positions)
            if cfg.objective == "next_token":
                loss = next_token_loss(log_p, next_tokens)
            else:
                if uniform_q is not None:
                    q, is_log = uniform_q, False
                else:
                    q, is_log = target_log_probs(cfg, mask, reference, idx, words_on)
                loss = criteria[is_log](log_p, q)
        loss.backward()
        # the gradients' norm, for the NaN/inf guard; computed on the device, read with the loss
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        optimizer.step()
        return torch.stack([loss.detach().float(), grad_norm.float()])

    run_step: Callable[..., torch.Tensor] = GraphedStep(step_once) if cfg.cuda_graph else step_once
    bar = tqdm(
        total=cfg.steps,
        initial=start_step,
        disable=not (progress and ranks.is_main),
        file=sys.stderr,
        desc="train",
        unit="step",
        dynamic_ncols=True,
    )
    train_seconds = seconds_before

    def batch_on_device(step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch = training_batch(cfg, step, vocab, corpus_tokens, ranks.rank, words, model)
        return tuple(None if t is None else to_device(t, device) for t in batch)

    batch = batch_on_device(start_step + 1)
    for step in range(start_step + 1, cfg.steps + 1):
        t0 = time.perf_counter()
        loss_and_norm = run_step(*batch)
        if step < cfg.steps:
            batch = batch_on_device(step + 1)  # made on the CPU while the GPU runs this step
        # syncs, so the time below is the step's real time
        loss_value, grad_norm = mean_over_ranks(loss_and_norm).tolist()
        train_seconds += time.perf_counter() - t0
        check_finite(step, loss_value, grad_norm, cfg.lr)
        result.losses.append(loss_value)
        if ranks.is_main:
            row: dict = {"step": step, "loss": loss_value, "seconds": train_seconds}
            if on_step is not None:
                row.update(on_step(step) or {})
            append_jsonl(out / METRICS_FILE, row)
            if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
                result.checkpoint_seconds += _timed(save_checkpoint, model, optimizer, step, out)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        bar.update(1)
    bar.close()
    result.seconds = train_seconds
    if ranks.is_main and start_step < cfg.steps:
        result.checkpoint_seconds += _timed(save_checkpoint, model, optimizer, cfg.steps, out)
    barrier()  # no rank returns before the final checkpoint exists
    return result


def _timed(fn: Callable[..., object], *args: object) -> float:
    """Call ``fn(*args)``; returns the seconds it took."""
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _launch_fingerprint(
    model: nn.Module, cfg: TrainConfig, mask: torch.Tensor, start_step: int
) -> dict:
    """What every rank must agree on: a rank launched with other arguments is an error."""
    return {
        "train": cfg.to_dict(),
        "params": sum(p.numel() for p in model.parameters()),
        "vocab_size": model.config.vocab_size,
        "block_size": model.config.block_size,
        "target": hashlib.sha256(mask.cpu().numpy().tobytes()).hexdigest(),
        "start_step": start_step,
    }


def check_finite(step: int, loss: float, grad_norm: float, lr: float | None) -> None:
    """The NaN/inf guard: a non-finite loss or gradient stops training before anything of
    this step is logged or saved (the weights in memory are already spoiled)."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {grad_norm}"
    raise ConfigError(
        "lr",
        f"{lr:g} is the likely cause: training diverged at step {step} ({what}); "
        "lower the learning rate",
    )
