"""How many sequences to sample at once: chosen from a measurement on this machine.

Sampling cost per token falls with the batch until the machine is busy (a CPU's two cores fill
sooner than a GPU's thousands), and no constant suits every device and model size. So the
batch is measured once per device, thread count and model shape (a few decode steps at each
candidate, a larger one taken while it is at least ``GAIN`` cheaper per token) and kept in the
user cache (likex.models.cache), so later runs on the machine sample with the same batch and
reproduce the same draws. The draws depend on the batch (one generator feeds consecutive
batches): ``LIKEX_SAMPLE_BATCH=N`` fixes it, to repeat a run from another machine exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence

import torch

from likex.errors import LikexError
from likex.generate import sample
from likex.io import atomic_write_json
from likex.models import LanguageModel
from likex.models.cache import cache_root

SAMPLE_BATCH_ENV = "LIKEX_SAMPLE_BATCH"
CANDIDATES = {"cpu": (8, 16, 32, 64), "cuda": (64, 128, 256)}
GAIN = 0.05  # a larger batch must be this much cheaper per token to be taken
CACHE_FILE = "sample-batch.json"
# what one measurement samples: a short prompt and a few new tokens per row
PROMPT_TOKENS, NEW_TOKENS = 32, 8


def choose_batch(cost_per_token: Callable[[int], float], candidates: Sequence[int]) -> int:
    """The smallest candidate after which a larger one is no longer ``GAIN`` cheaper per
    token (candidates in increasing order; each costs a measurement, so the search stops
    at the first that does not pay)."""
    best, best_cost = candidates[0], cost_per_token(candidates[0])
    for batch in candidates[1:]:
        cost = cost_per_token(batch)
        if cost > best_cost * (1 - GAIN):
            break
        best, best_cost = batch, cost
    return best


def _key(model: LanguageModel, device: torch.device) -> str:
    where = f"{device.type}|{platform.machine()}|{platform.processor()}|{torch.get_num_threads()}"
    shape = json.dumps(model.config.to_dict(), sort_keys=True)
    return hashlib.sha256(f"{where}|{shape}".encode()).hexdigest()[:24]


def _measured_cost(model: LanguageModel, device: torch.device) -> Callable[[int], float]:
    """Seconds per new token of sampling at a batch, after one unmeasured warm-up."""
    vocab, length = model.config.vocab_size, min(PROMPT_TOKENS, model.config.block_size - 1)
    new = min(NEW_TOKENS, model.config.block_size - length)

    def cost(batch: int) -> float:
        prompt = torch.randint(
            0, vocab, (batch, length), generator=torch.Generator().manual_seed(0)
        )
        prompt = prompt.to(device)
        gen = torch.Generator(device=device).manual_seed(0)
        sample(model, prompt, 1, gen)  # warm-up: first-call allocations at this shape
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        sample(model, prompt, new, gen)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t0) / (batch * new)

    return cost


def sampling_batch(model: LanguageModel) -> int:
    """The batch ``model`` samples with on its device: ``LIKEX_SAMPLE_BATCH``, else this
    machine's measured one (measured now the first time, then read from the cache)."""
    if os.environ.get(SAMPLE_BATCH_ENV):
        text = os.environ[SAMPLE_BATCH_ENV]
        if not text.isdigit() or int(text) <= 0:
            raise LikexError(f"{SAMPLE_BATCH_ENV} must be a positive integer, got {text!r}")
        return int(text)
    device = next(model.parameters()).device
    path = cache_root() / CACHE_FILE
    key = _key(model, device)
    known: dict = {}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(known, dict) and isinstance(known.get(key), int) and known[key] > 0:
        return known[key]
    was_training = model.training
    batch = choose_batch(_measured_cost(model, device), CANDIDATES.get(device.type, (16,)))
    model.train(was_training)
    known = known if isinstance(known, dict) else {}
    with contextlib.suppress(OSError):  # an unwritable cache measures again next time
        atomic_write_json(path, {**known, key: batch})
    return batch
