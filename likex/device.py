"""Device choice: ``auto`` is cuda > mps > cpu; an explicit device must exist."""

from __future__ import annotations

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
