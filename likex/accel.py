"""The GPU fast path: bf16 on CUDA, optional torch.compile, and CUDA graphs.

On a CPU everything here is a no-op, so CPU results stay exact float32. On CUDA:
* training runs its matrix work in bf16 under autocast while the log-softmax, the loss and the
  optimizer stay in float32 (the model casts its logits to float32 before the log-softmax);
* the whole training step (forward, backward and the fused optimizer) can be captured once as a
  CUDA graph and replayed (``GraphedStep``): at the seed's batch of 16 a step on a large GPU is
  otherwise bound by the time it takes to launch its kernels;
* sampling runs a bf16 copy of the built-in model (``inference_model``): its weights are cast
  once per measurement instead of at every forward, and its activations stay in bf16.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from collections.abc import Callable

import torch
from torch import nn

from likex.errors import ConfigError
from likex.models.adapter import AdaptedLM, BaseView
from likex.models.gpt import GPT

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
# Steps run eagerly before the capture: they build the optimizer state and let torch.compile
# finish, so the capture records steady-state kernels only (PyTorch's CUDA-graph notes use 3).
GRAPH_EAGER_STEPS = 3


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing elsewhere (a CPU keeps exact float32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_compile_mode(mode: str) -> None:
    if mode not in COMPILE_MODES:
        choices = ", ".join(COMPILE_MODES)
        raise ConfigError("compile", f"mode {mode!r} is unknown; choose from {choices}")


def compiled(fn: Callable, mode: str) -> Callable:
    """``fn`` under torch.compile in ``mode`` ("none": ``fn`` itself).

    "reduce-overhead" also captures CUDA graphs, which pays off when a step is launch-bound
    (the seed's batch of 16 on a large GPU); it needs fixed shapes, which the training step and
    the sliding-window decode step have.
    """
    check_compile_mode(mode)
    if mode == "none":
        return fn
    return torch.compile(fn, mode=None if mode == "default" else mode)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; a copy to a GPU goes through pinned memory and does not wait."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def check_cuda_graph(device: torch.device, compile_mode: str, distributed: bool) -> None:
    """Where a whole-step CUDA graph can be used: one CUDA process, not nested in the graphs
    that torch.compile's "reduce-overhead" and "max-autotune" modes record themselves."""
    if device.type != "cuda":
        raise ConfigError("cuda_graph", f"needs a CUDA device, not {device}")
    if compile_mode in ("reduce-overhead", "max-autotune"):
        raise ConfigError(
            "cuda_graph", "captures the whole step itself; use it with {compile} none or default"
        )
    if distributed:
        raise ConfigError("cuda_graph", "is for one process; leave it off under torchrun")


class GraphedStep:
    """A training step ``step(*inputs) -> loss`` replayed as one CUDA graph.

    The first ``GRAPH_EAGER_STEPS`` calls run eagerly on a side stream (real training steps: the
    optimizer must be built with ``capturable=True``); the next call records the step once into
    the graph and every call from then on copies its inputs into the graph's own input tensors
    and replays it. The returned loss is the graph's output tensor, overwritten by the next
    replay: read it before calling again. ``None`` inputs (no next tokens) stay ``None``.
    """

    def __init__(self, step: Callable[..., torch.Tensor]) -> None:
        self.step = step
        self.eager_left = GRAPH_EAGER_STEPS
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: tuple[torch.Tensor | None, ...] = ()
        self.static_loss: torch.Tensor | None = None

    def __call__(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        if self.graph is None and self.eager_left > 0:
            self.eager_left -= 1
            return self._eager(inputs)
        if self.graph is None:
            self._capture(inputs)
        for static, new in zip(self.static_inputs, inputs, strict=True):
            if static is not None:
                static.copy_(new, non_blocking=True)
        self.graph.replay()
        return self.static_loss

    def _eager(self, inputs: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
        # Warm-up off the default stream, as capture requires (lazy library set-up and the
        # allocator's blocks then belong to a stream that the capture does not use).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            loss = self.step(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        return loss

    def _capture(self, inputs: tuple[torch.Tensor | None, ...]) -> None:
        self.static_inputs = tuple(None if t is None else t.clone() for t in inputs)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.static_loss = self.step(*self.static_inputs)
        except RuntimeError as e:
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                "cuda_graph", f"cannot capture this training step ({first_line}); turn it off"
            ) from e
        self.graph = graph


# bf16 sampling copies of models, kept per model so that a compiled decode step (which guards on
# the module it was traced with) is reused from one measurement to the next.
_INFERENCE_COPIES: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def inference_model(model: nn.Module) -> tuple[nn.Module, contextlib.AbstractContextManager]:
    """The module to sample with and the context to run it in.

    On CUDA the built-in GPT is sampled through a bf16 copy holding its current weights, run
    without autocast (autocast would take LayerNorm back to float32); a transformers model runs
    under bf16 autocast. On a CPU: the model itself, exact float32. An adapted model (or its
    base, adapter off) is sampled through a plain copy with the adapter folded in
    (likex.models.adapter.AdaptedLM.folded), on any device.
    """
    if isinstance(model, (AdaptedLM, BaseView)):
        model = model.folded()
    device = next(model.parameters()).device
    if device.type != "cuda":
        return model, contextlib.nullcontext()
    if not isinstance(model, GPT):
        return model, autocast_for(device)
    twin = _INFERENCE_COPIES.get(model)
    if twin is None:
        twin = copy.deepcopy(model).to(torch.bfloat16).eval().requires_grad_(False)
        _INFERENCE_COPIES[model] = twin
    else:
        with torch.no_grad():
            for mine, theirs in zip(twin.parameters(), model.parameters(), strict=True):
                mine.copy_(theirs)
    return twin, contextlib.nullcontext()
