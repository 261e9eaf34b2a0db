"""One training loop for every objective: the loss, the contexts and the positions vary.

``train`` takes what it changes (a ``TrainState``: the model, its optimizer, the steps done),
the resolved plan, a batch source (likex.batches) and the step's loss (likex.objective), and
writes the run's metrics and checkpoints.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from likex import interrupt
from likex.accel import GraphedStep, autocast_for, compiled, to_device
from likex.batches import Batches
from likex.clock import progress_bar
from likex.corpora import CorpusMix
from likex.distributed import barrier, check_same_on_all_ranks, dist_info, mean_over_ranks
from likex.errors import ConfigError
from likex.io import append_jsonl
from likex.models import LanguageModel
from likex.models.checkpoint import save_checkpoint
from likex.objective import StepLoss
from likex.target import TargetSet
from likex.train_config import TrainPlan

METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainState:
    """What training changes, and what a checkpoint restores: the model, its optimizer, the
    steps done, their training seconds, and their metrics rows (each step's loss and whatever
    was measured then; a resumed run's earlier steps too)."""

    model: LanguageModel
    optimizer: torch.optim.Optimizer
    step: int = 0
    seconds: float = 0.0
    rows: list[dict] = field(default_factory=list)
    contexts: tuple[int, torch.Tensor] | None = None  # a checkpoint's unfinished context block

    @classmethod
    def start(cls, model: LanguageModel, plan: TrainPlan) -> TrainState:
        """A fresh state: step 0 and a new optimizer for ``model``."""
        return cls(model, make_optimizer(model, plan))


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0  # the steps themselves (a resumed run's earlier ones too)
    checkpoint_seconds: float = 0.0  # writing this call's checkpoints (not in ``seconds``)
    batch_seconds: float = 0.0  # making this call's batches (in ``seconds``)

    @property
    def loss_first(self) -> float:
        return self.losses[0]

    @property
    def loss_last(self) -> float:
        return self.losses[-1]


def make_optimizer(model: LanguageModel, plan: TrainPlan) -> torch.optim.Optimizer:
    # what trains: every weight, or an adapter's alone (its base is frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    # Fused Adam(W): one kernel per step on a GPU, and on a CPU the same float32 update ~7x
    # faster than the default per-parameter loop (docs/results.md). Inside a CUDA graph its
    # step counts must live on the GPU (capturable).
    adam = {
        "fused": params[0].device.type in ("cuda", "cpu"),
        "capturable": plan.cuda_graph,
    }
    if plan.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=plan.lr, weight_decay=plan.weight_decay, **adam)
    if plan.optimizer == "adam":
        return torch.optim.Adam(params, lr=plan.lr, weight_decay=plan.weight_decay, **adam)
    return torch.optim.SGD(params, lr=plan.lr, weight_decay=plan.weight_decay)


def train(
    state: TrainState,
    plan: TrainPlan,
    batches: Batches,
    loss: StepLoss,
    out_dir: str | Path,
    progress: bool = True,
    on_step: Callable[[int], dict | None] | None = None,
    stamp: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train ``state.model`` in place for steps ``state.step + 1 .. plan.steps``.

    Writes one metrics line per step to ``out_dir/metrics.jsonl`` (also kept in
    ``state.rows``), a checkpoint every ``plan.save_every`` steps and at the end (its manifest
    carries ``stamp``, likex.runs). ``on_step(step)`` may return extra metrics (a target rate)
    to log for that step; its time is not training time. Returns every step's loss (a
    resumed run's earlier ones too) and the training seconds. Ctrl-C or SIGTERM
    (likex.interrupt): the step in flight finishes, is checkpointed, and KeyboardInterrupt is
    raised; a second signal abandons the step in flight.

    Under torchrun every rank calls this with the same arguments: each draws its own batches
    (``plan.batch_size`` per rank), DDP averages the gradients, the logged loss is the mean over
    ranks, and rank 0 alone writes files, calls ``on_step`` and shows progress. A stop asked
    of any rank stops every rank at the same step.
    """
    model, optimizer = state.model, state.optimizer
    device = next(model.parameters()).device
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranks = dist_info()
    start_step = state.step
    checkpoint_seconds = 0.0
    run_step = _step_function(state, plan, loss.to(device), device)

    def save(step: int) -> None:
        nonlocal checkpoint_seconds
        if ranks.is_main:
            block = batches.pending(step, ranks.rank)
            checkpoint_seconds += _timed(save_checkpoint, model, optimizer, step, out, stamp, block)

    batch_seconds = 0.0

    def batch_on_device(step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        nonlocal batch_seconds
        t0 = time.perf_counter()
        batch = batches(step, ranks.rank, model)
        batch_seconds += time.perf_counter() - t0
        return tuple(None if t is None else to_device(t, device) for t in batch)

    batches.restore(state.contexts, ranks.rank)
    bar = progress_bar(plan.steps, "train", "step", progress and ranks.is_main, start_step)
    stopping = False
    with interrupt.deferred() as stop, bar:  # the bar closes on an exception too
        batch = batch_on_device(start_step + 1)
        for step in range(start_step + 1, plan.steps + 1):
            t0 = time.perf_counter()
            loss_and_norm = run_step(*batch)
            if step < plan.steps:
                batch = batch_on_device(step + 1)  # made on the CPU while the GPU runs this step
            # syncs, so the time below is the step's real time; a rank's stop request goes
            # along, so that every rank stops after the same step
            loss_value, grad_norm, stopping = _reduced(loss_and_norm, bool(stop), ranks.active)
            state.seconds += time.perf_counter() - t0
            check_finite(step, loss_value, grad_norm, plan.lr)
            state.step = step
            row: dict = {"step": step, "loss": loss_value, "seconds": state.seconds}
            if ranks.is_main:
                if on_step is not None:
                    row.update(on_step(step) or {})
                append_jsonl(out / METRICS_FILE, row)
            state.rows.append(row)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            bar.update(1)
            # one process stops after the step in flight; ranks after the step they agreed on
            stopping = stopping if ranks.active else bool(stop)
            saved = bool(plan.save_every) and step % plan.save_every == 0
            if step < plan.steps and (saved or stopping):
                save(step)
            if stopping and step < plan.steps:
                barrier()  # no rank stops before the checkpoint of its last step exists
                raise KeyboardInterrupt
        if start_step < plan.steps:
            save(plan.steps)
        barrier()  # no rank returns before the final checkpoint exists
        if stopping or stop:  # asked during the last step or its checkpoint: all of it is kept
            raise KeyboardInterrupt
    losses = [r["loss"] for r in state.rows]
    return TrainResult(losses, state.seconds, checkpoint_seconds, batch_seconds)


def _reduced(
    loss_and_norm: torch.Tensor, stop: bool, distributed: bool
) -> tuple[float, float, bool]:
    """(the loss, the gradient norm, whether to stop), each the mean over ranks under
    torchrun: the stop flag rides along with the loss, so stopping costs no extra sync."""
    if not distributed:
        loss_value, grad_norm = loss_and_norm.tolist()
        return loss_value, grad_norm, stop
    flag = torch.tensor([float(stop)], device=loss_and_norm.device)
    loss_value, grad_norm, any_stop = mean_over_ranks(torch.cat([loss_and_norm, flag])).tolist()
    return loss_value, grad_norm, any_stop > 0


def _step_function(
    state: TrainState, plan: TrainPlan, loss: StepLoss, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """One optimizer step of ``state``'s model as a function of (contexts, next tokens),
    returning [loss, gradient norm] on the device: under DDP when launched by torchrun,
    compiled or replayed as a CUDA graph as the plan says."""
    model, optimizer = state.model, state.optimizer
    model.train()
    net: nn.Module = model
    ranks = dist_info()
    if ranks.active:
        fingerprint = _launch_fingerprint(model, plan, loss, state.step)
        check_same_on_all_ranks(fingerprint, "training setup")
        # DDP broadcasts rank 0's parameters, so every rank starts from the same weights.
        gpus = None
        if device.type == "cuda":
            gpus = [device.index if device.index is not None else torch.cuda.current_device()]
        net = DistributedDataParallel(model, device_ids=gpus)
    forward = compiled(net, plan.compile)
    params = list(model.parameters())

    def step_once(idx: torch.Tensor, next_tokens: torch.Tensor | None) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        value = _backward(forward, loss, plan, device, idx, next_tokens)
        # the gradients' norm, for the NaN/inf guard; computed on the device, read with the loss
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        optimizer.step()
        return torch.stack([value.detach().float(), grad_norm.float()])

    return GraphedStep(step_once) if plan.cuda_graph else step_once


def _backward(
    forward: Callable[..., torch.Tensor],
    loss: StepLoss,
    plan: TrainPlan,
    device: torch.device,
    idx: torch.Tensor,
    next_tokens: torch.Tensor | None,
) -> torch.Tensor:
    """A step's loss, its gradients accumulated into the parameters."""
    with autocast_for(device):
        value = loss(forward(idx, positions=plan.positions), idx, next_tokens)
    value.backward()
    return value


def step_seconds(model: LanguageModel, plan: TrainPlan, batches: Batches, loss: StepLoss) -> float:
    """Seconds of one training step of ``model`` as ``train`` takes it (for likex.estimate):
    the first step's batch made, the loss and its gradients, not the optimizer's update. The
    model is left as it was: its gradients are dropped and the random streams restored (a
    dropout draw moves no later one)."""
    device = next(model.parameters()).device
    loss = loss.to(device)
    was_training = model.training
    model.train()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        t0 = time.perf_counter()
        # one step's contexts written alone: a block would be written again by the first step
        one = replace(batches, context_block=1)
        idx, labels = (None if t is None else to_device(t, device) for t in one(1, 0, model))
        _backward(model, loss, plan, device, idx, labels).item()  # waits for the device
        seconds = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return seconds


def train_toward(
    model: LanguageModel,
    plan: TrainPlan,
    targets: TargetSet | None,
    out_dir: str | Path,
    reference: LanguageModel | None = None,
    corpus: torch.Tensor | CorpusMix | None = None,
    progress: bool = True,
    on_step: Callable[[int], dict | None] | None = None,
    stamp: Mapping[str, Any] | None = None,
) -> TrainResult:
    """``train`` in one call for a model at step 0: the plan fitted to ``model``, its batches
    (``corpus``: the text of corpus contexts) and the loss of ``plan.objective`` toward
    ``targets`` (None for next-token training), with the frozen ``reference`` R where the
    objective needs one."""
    words = targets.words if targets is not None else None
    plan = plan.fit(model, next(model.parameters()).device, words)
    batches = Batches.of(plan, model.config.vocab_size, corpus, words)
    state = TrainState.start(model, plan)
    loss = step_loss(plan, targets, reference)
    return train(state, plan, batches, loss, out_dir, progress, on_step, stamp)


def step_loss(
    plan: TrainPlan, targets: TargetSet | None, reference: LanguageModel | None = None
) -> StepLoss:
    """The loss of ``plan.objective`` toward ``targets`` (None for next-token training), with
    the frozen ``reference`` R where the objective needs one."""
    return StepLoss(plan.objective, targets, reference, plan.positions, plan.word_positions)


def _timed(fn: Callable[..., object], *args: object) -> float:
    """Call ``fn(*args)``; returns the seconds it took."""
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _launch_fingerprint(
    model: LanguageModel, plan: TrainPlan, loss: StepLoss, start_step: int
) -> dict:
    """What every rank must agree on: a rank launched with other arguments is an error."""
    mask = loss.targets.mask.cpu().numpy().tobytes() if loss.targets is not None else b""
    return {
        "train": plan.to_dict(),
        "params": sum(p.numel() for p in model.parameters()),
        "vocab_size": model.config.vocab_size,
        "block_size": model.config.block_size,
        "target": hashlib.sha256(mask).hexdigest(),
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
