"""The GPU fast path: bf16 autocast on CUDA and optional torch.compile.

On a CPU everything here is a no-op, so CPU results stay exact float32. On CUDA the matrix
work runs in bf16 under autocast while the log-softmax, the loss and the optimizer stay in
float32 (the model casts its logits to float32 before the log-softmax).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from likex.errors import LikexError

COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing elsewhere (a CPU keeps exact float32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_compile_mode(mode: str) -> None:
    if mode not in COMPILE_MODES:
        raise LikexError(f"unknown --compile mode {mode!r}; choose from {', '.join(COMPILE_MODES)}")


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
