"""Device choice: ``auto`` is cuda > mps > cpu; an explicit device must exist. And how much
memory a device has, for the estimates that refuse what cannot fit before it is allocated."""

from __future__ import annotations

import os
from typing import Any

import torch

from likex.errors import LikexError, clip
from likex.options import option


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
        raise LikexError(f"unknown device {clip(name)}: use auto, cpu, cuda, cuda:N or mps") from e
    if device.type == "cpu" and device.index not in (None, 0):
        raise LikexError(f"device {clip(name)} does not exist: the CPU is one device, 'cpu'")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LikexError(f"device {clip(name)} is not available: this machine has no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise LikexError(
                f"device {clip(name)} is not available: {torch.cuda.device_count()} CUDA device(s)"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise LikexError(f"device {clip(name)} is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise LikexError(f"unsupported device {clip(name)}: use auto, cpu, cuda, cuda:N or mps")
    return device


def device_arg(text: str) -> str:
    """A ``--device`` as the command line is read: one this machine has."""
    resolve_device(text)
    return text


def device_option() -> Any:
    """The ``--device`` of a command."""
    return option("auto", "auto (cuda > mps > cpu), cpu, cuda[:N], mps", parse=device_arg)


def device_memory(device: torch.device) -> int | None:
    """Total memory of ``device`` in bytes (None where unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    if device.type == "cpu" and hasattr(os, "sysconf"):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return None
