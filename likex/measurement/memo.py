"""Measurements remembered: the samples of a rate measurement, kept for the next identical one.

Every experiment on a base model measures that base first (the start of a run, ``likex eval``
of it, every organism of a zoo), and sampling is most of what a command costs on a CPU. A
measurement's draws are a function of its inputs: the model's weights (and how they are
stored), the prompts, the target set (the stopping rule counts its tokens), the number of new
tokens, the interval it stops at, the seed, the sampling batch, and the code and libraries
that compute it on this kind of device. So the samples and the estimates made from them are
written to the user cache (likex.models.cache: ``LIKEX_CACHE``) under a SHA-256 of all of
these, and a later measurement with the same key reads them back instead of sampling: the
same numbers it would have drawn, in a second instead of a minute.

An entry that cannot be read, or whose recorded key is not the one asked for, is measured
again and rewritten, never trusted; a cache that cannot be written costs the time it would
have saved. ``LIKEX_REMEASURE=1`` turns the memo off: every measurement samples, and
nothing is kept (the test suite's default, so that a test exercises the sampler it checks
and leaves the user's cache alone).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from likex.accel import inference_model
from likex.io import atomic_write
from likex.models import LanguageModel
from likex.models.cache import cache_root

REMEASURE_ENV = "LIKEX_REMEASURE"
FOLDER = "measurements"


@cache
def _code_digest() -> str:
    """likex's own source and the versions of the libraries that compute a forward pass: a
    sampler or model change makes every earlier entry unreachable."""
    import transformers

    h = hashlib.sha256(f"{torch.__version__}|{transformers.__version__}".encode())
    root = Path(__file__).resolve().parent.parent  # the likex package
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    """The tensor's values as stored: a transposed (column-major) weight is read in its own
    order without a copy of the whole model."""
    t = t.detach().cpu()
    if not t.is_contiguous() and t.dim() == 2 and t.t().is_contiguous():
        t = t.t()
    return memoryview(t.contiguous().reshape(-1).view(torch.uint8).numpy()).cast("B")


def weights_digest(model: LanguageModel) -> str:
    """SHA-256 of the model's kind, configuration and every parameter and buffer, with their
    shapes and strides (the layout changes which kernel runs, so the last bits of the draws);
    a tensor shared by two names (tied embeddings) is read once."""
    h = hashlib.sha256(type(model).__name__.encode())
    h.update(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    seen: dict[tuple, str] = {}
    for name, t in sorted(model.state_dict(keep_vars=True).items()):
        ident = (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|{tuple(t.stride())}".encode())
        if ident in seen:
            h.update(f"same as {seen[ident]}".encode())
            continue
        seen[ident] = name
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def measurement_key(
    model: LanguageModel,
    mask: torch.Tensor,
    prompt_sets: Sequence[tuple[torch.Tensor, str]],
    settings: dict,
) -> str | None:
    """The key of a measurement: everything its samples and estimates depend on (None when
    the memo is off: nothing is hashed). ``settings``: the rest (new tokens, the interval it
    stops at, seed, batch, compile). The weights are those of the module that samples
    (likex.accel.inference_model): an adapter's base with the adapter folded in, so an adapter
    that changes nothing yet (a run's start) shares its base's measurement."""
    if os.environ.get(REMEASURE_ENV, "") not in ("", "0"):
        return None
    model = inference_model(model)[0]
    device = next(model.parameters()).device
    where = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
        "machine": platform.machine(),
        "processor": platform.processor(),
        "threads": torch.get_num_threads(),
    }
    h = hashlib.sha256(_code_digest().encode())
    h.update(json.dumps({**settings, **where}, sort_keys=True).encode())
    h.update(weights_digest(model).encode())
    h.update(_tensor_bytes(mask))
    for prompts, kind in prompt_sets:
        h.update(f"|{kind}|{tuple(prompts.shape)}|".encode())
        h.update(_tensor_bytes(prompts.long()))
    return h.hexdigest()


def _path(key: str) -> Path:
    return cache_root() / FOLDER / f"{key[:32]}.safetensors"


def recall(key: str | None) -> tuple[list[dict], list[torch.Tensor]] | None:
    """The estimates (as dicts) and samples of the measurement ``key``, or None (never
    measured, the memo off, or an entry that is damaged or not this key's)."""
    if key is None:
        return None
    path = _path(key)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                return None
            estimates = json.loads(meta["estimates"])
            samples = [f.get_tensor(str(i)).long() for i in range(len(estimates))]
    except (OSError, SafetensorError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(estimates, list) or not all(isinstance(e, dict) for e in estimates):
        return None
    return estimates, samples


def remember(key: str | None, estimates: list[dict], samples: list[torch.Tensor]) -> None:
    """Keep a measurement for next time (an unwritable cache: measured again next time;
    the memo off, ``key`` None: nothing)."""
    if key is None:
        return
    tensors = {str(i): s.to(torch.int32).contiguous() for i, s in enumerate(samples)}  # ids
    meta = {"key": key, "estimates": json.dumps(estimates)}
    with contextlib.suppress(OSError):
        atomic_write(_path(key), lambda tmp: save_file(tensors, tmp, metadata=meta))
