"""Data-parallel training across processes launched by torchrun (DDP).

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE for each process; ``init_from_env`` joins the
process group (NCCL on GPUs, gloo on CPUs). Each rank trains on its own batches (the
contexts are a pure function of (seed, rank, step), so they differ between ranks and a
resumed run draws the same ones again), DDP all-reduces the gradients, and rank 0 alone
writes files and shows progress. A single process is the world of size 1 and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from likex.errors import LikexError

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())),
    )


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> DistInfo:
    """Join the process group torchrun set up; a plain single process is left alone."""
    if not launched_by_torchrun() or dist.is_initialized():
        return dist_info()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise LikexError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s)"
            )
        # "cuda" then means this rank's own GPU everywhere (resolve_device, KV caches, ...).
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return dist_info()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    # NCCL only moves CUDA tensors; gloo moves CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_same_on_all_ranks(doc: dict, what: str) -> None:
    """Raise (on every rank alike) if the ranks were launched with different ``doc``s.

    Each rank contributes a 63-bit digest of ``doc`` as JSON; comparing digests needs no
    pickling and tells every rank the same thing, so they all stop together.
    """
    info = dist_info()
    if not info.active:
        return
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).digest()
    mine = torch.tensor([int.from_bytes(digest[:8], "little") >> 1], dtype=torch.int64)
    mine = mine.to(_collective_device())
    gathered = [torch.zeros_like(mine) for _ in range(info.world_size)]
    dist.all_gather(gathered, mine)
    values = [int(g.item()) for g in gathered]
    differing = [r for r, v in enumerate(values) if v != values[0]]
    if differing:
        raise LikexError(
            f"torchrun ranks disagree on the {what}: rank(s) {differing} differ from rank 0 "
            "(launch every rank with the same arguments)"
        )


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor across ranks, elementwise (the value itself in a single process)."""
    if not dist_info().active:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def barrier() -> None:
    if dist_info().active:
        dist.barrier()


def on_main_rank(fn: Callable[[], T]) -> T | None:
    """``fn()`` on rank 0 only (the others get None), and every rank learns whether it failed.

    Writing files is rank 0's job; if it fails (say, the output folder already exists) the
    other ranks must stop too rather than wait for it forever in the next collective.
    """
    info = dist_info()
    if not info.active:
        return fn()
    result: T | None = None
    error: LikexError | None = None
    if info.is_main:
        try:
            result = fn()
        except LikexError as e:
            error = e
    failed = torch.tensor([1 if error is not None else 0], device=_collective_device())
    dist.broadcast(failed, src=0)
    if error is not None:
        raise error
    if failed.item():
        raise LikexError("rank 0 stopped with an error (its message says why)")
    return result
