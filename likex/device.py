"""Device choice: ``auto`` is cuda > mps > cpu; an explicit device must exist."""

from __future__ import annotations

import os

import torch

from likex.errors import LikexError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise LikexError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LikexError(f"device {name!r} is not available: this machine has no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise LikexError(
                f"device {name!r} is not available: {torch.cuda.device_count()} CUDA device(s)"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise LikexError(f"device {name!r} is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise LikexError(f"unsupported device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


# On a machine with at most this many cores the likex command runs torch's CPU kernels on one
# thread: at likex's sizes a second thread waits more than it computes, the more so when the
# machine is shared (issue 13 in bench/RESULTS.md: the seed experiment's training and sampling
# cost less CPU time and less wall clock on one thread of this project's 2-core CPU).
FEW_CORES = 2


def command_threads() -> int | None:
    """The likex command's CPU threads: one on a machine with at most ``FEW_CORES`` cores,
    unless OMP_NUM_THREADS chooses. Returns the count it set (None: torch's default kept)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if (cores or 1) > FEW_CORES:
        return None
    torch.set_num_threads(1)
    return 1
