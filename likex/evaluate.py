"""Measurement: target rates with 95% intervals, perplexity, KL to a reference.

Tokens sampled in one sequence are not independent (a model that has started writing x tends
to go on), so a rate's interval is a Wilson score interval at the *effective* sample size:
the token count divided by the design effect estimated from the spread between sequences.
With a single sequence, or a rate of exactly 0 or 1, the design effect cannot be estimated
and the plain token count is used.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from likex.data import random_contexts, step_generator
from likex.generate import sample
from likex.model import GPT

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (also for non-integer n)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At p = 0 or 1 the bound is exactly 0 or 1; the float arithmetic would leave ~1e-18.
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return (lo, hi)


@dataclass
class RateEstimate:
    """The share of generated tokens that are target tokens, with its 95% interval."""

    rate: float
    ci: tuple[float, float]
    hits: int
    tokens: int
    sequences: int
    tokens_per_sequence: int
    design_effect: float
    first_sample_hits: int
    prompts: str  # "random tokens" or "real text"

    @property
    def half_width(self) -> float:
        return (self.ci[1] - self.ci[0]) / 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = list(self.ci)
        return d

    def describe(self) -> str:
        lo, hi = self.ci
        return (
            f"{self.rate:.3f} [{lo:.3f}, {hi:.3f}] "
            f"(n={self.tokens} tokens in {self.sequences} samples; prompts: {self.prompts})"
        )


def rate_from_hits(
    hits_per_sequence: torch.Tensor, tokens_per_sequence: int, prompts: str
) -> RateEstimate:
    hits = hits_per_sequence.double()
    k = hits.numel()
    n = k * tokens_per_sequence
    total = float(hits.sum())
    p = total / n
    deff = 1.0
    if k > 1 and 0.0 < p < 1.0:
        between = float((hits / tokens_per_sequence).var(unbiased=True)) / k
        deff = max(1.0, between / (p * (1 - p) / n))
    lo, hi = wilson_interval(p * n / deff, n / deff)
    return RateEstimate(
        rate=p,
        ci=(lo, hi),
        hits=int(total),
        tokens=n,
        sequences=k,
        tokens_per_sequence=tokens_per_sequence,
        design_effect=deff,
        first_sample_hits=int(hits[0]),
        prompts=prompts,
    )


@torch.no_grad()
def measure_rate(
    model: GPT,
    mask: torch.Tensor,
    prompts: torch.Tensor,
    gen_tokens: int,
    seed: int,
    prompt_kind: str,
    ci_half_width: float | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    compile: str = "none",
) -> tuple[RateEstimate, torch.Tensor]:
    """Sample ``gen_tokens`` after prompt rows and count target tokens.

    Prompts are used in batches, in order; with ``ci_half_width`` sampling stops as soon as
    the 95% interval is that narrow (the prompts are then a cap, not a quota). Returns the
    estimate and the generated tokens [K, gen_tokens] on the CPU. The generator is seeded
    from ``seed``, so before/after measurements see the same prompts and the same draws.
    ``compile`` is passed to ``sample`` (likex.accel modes).
    """
    device = next(model.parameters()).device
    if batch_size is None:
        batch_size = 64 if device.type == "cuda" else 8  # a CPU is compute-bound already
    gen = torch.Generator(device=device).manual_seed(seed)
    cpu_mask = mask.cpu()
    outs: list[torch.Tensor] = []
    bar = tqdm(
        total=prompts.shape[0],
        desc="measure",
        unit="sample",
        disable=not progress,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
    )
    for start in range(0, prompts.shape[0], batch_size):
        chunk = prompts[start : start + batch_size].to(device)
        outs.append(sample(model, chunk, gen_tokens, generator=gen, compile=compile).cpu())
        generated = torch.cat(outs)
        estimate = rate_from_hits(cpu_mask[generated].sum(dim=1), gen_tokens, prompt_kind)
        bar.update(chunk.shape[0])
        bar.set_postfix(rate=f"{estimate.rate:.3f}", pm=f"{estimate.half_width:.3f}")
        if ci_half_width is not None and estimate.half_width <= ci_half_width:
            break
    bar.close()
    return estimate, generated


def random_prompts(n: int, length: int, vocab_size: int, seed: int) -> torch.Tensor:
    """The seed's measurement prompts: uniformly random tokens, reproducible from ``seed``."""
    return random_contexts(n, length, vocab_size, step_generator(seed, 0, stream=1))


@torch.no_grad()
def perplexity(model: GPT, windows: torch.Tensor, batch_size: int = 16) -> float:
    """exp(mean next-token NLL) over windows [N, T+1] (inputs w[:, :-1], labels w[:, 1:])."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    for start in range(0, windows.shape[0], batch_size):
        w = windows[start : start + batch_size].to(device)
        log_p = model(w[:, :-1], positions="all")
        nll = -log_p.gather(-1, w[:, 1:, None]).squeeze(-1)
        total += float(nll.double().sum())
        count += nll.numel()
    model.train(was_training)
    return math.exp(total / count)
