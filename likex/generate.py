"""Batched sampling.

With learned absolute positions a KV cache is valid only while prompt + new tokens fit the
context: once the window slides, every position shifts and the cached keys are wrong. So the
cache is used when everything fits, and beyond it (the seed: a 256-token prompt in a
256-token context) each new token recomputes the window of the last ``block_size`` tokens.
Prefill and decode are small separate functions, so a compiler can wrap them. The window
step always sees the same shape ([B, block_size] once the window is full), so under
``compile="reduce-overhead"`` it is captured once as a CUDA graph and replayed per token.
On CUDA the built-in model is sampled through a bf16 copy (likex.accel.inference_model); on a
CPU sampling is exact float32.
"""

from __future__ import annotations

from typing import Any

import torch

from likex.accel import compiled, inference_model
from likex.errors import ConfigError
from likex.models import LanguageModel


def sample_next(
    log_probs: torch.Tensor,
    generator: torch.Generator | None,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> torch.Tensor:
    """One token per row from [B, V] log-probabilities. temperature 0 means greedy."""
    if temperature == 0:
        return log_probs.argmax(dim=-1)
    scores = log_probs.float() / temperature
    if top_k is not None and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    # An inverse-CDF draw: one uniform per row against the running sum of the probabilities,
    # kept in float64 so that tens of thousands of small terms keep each token's share.
    # torch.multinomial draws an exponential per vocabulary entry instead, which on the
    # project's 2-core CPU took a fifth of a 16-row SmolLM2 decode step (this: a twentieth).
    cdf = probs.double().cumsum(dim=-1)
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=cdf.dtype)
    # u * total < total, so the token found has cdf[i-1] <= u * total < cdf[i]: probability > 0
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1)


def prefill(model: LanguageModel, prompt: torch.Tensor, cache: Any) -> torch.Tensor:
    return model(prompt, positions="last", cache=cache, start_pos=0)


def decode_step(model: LanguageModel, token: torch.Tensor, cache: Any, pos: int) -> torch.Tensor:
    return model(token[:, None], positions="last", cache=cache, start_pos=pos)


def window_step(model: LanguageModel, window: torch.Tensor) -> torch.Tensor:
    """The next token after a window of at most block_size tokens (recomputed whole)."""
    return model(window, positions="last")


@torch.no_grad()
def sample(
    model: LanguageModel,
    prompt: torch.Tensor,
    n_new: int,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    use_cache: bool | None = None,
    compile: str = "none",
) -> torch.Tensor:
    """Sample ``n_new`` tokens after each prompt row; returns the new tokens, [B, n_new].

    ``use_cache=None`` picks the KV cache exactly when prompt + new tokens fit the context.
    Both paths draw one uniform per row and step from ``generator``, so with the same seed they
    produce the same tokens. ``compile`` is a likex.accel mode for the window step.
    """
    if not temperature >= 0:  # also refuses NaN
        raise ConfigError("temperature", f"must be >= 0, got {temperature}")
    if top_k is not None and top_k <= 0:
        raise ConfigError("top_k", f"must be positive, got {top_k}")
    block = model.config.block_size
    fits = prompt.shape[1] + n_new <= block
    if use_cache is None:
        use_cache = fits
    if use_cache and not fits:
        raise ValueError(f"prompt + {n_new} new tokens exceed the {block}-token context")
    was_training = model.training
    model.eval()
    try:
        net, context = inference_model(model)
        with context:
            return _sample_tokens(
                net, prompt, n_new, generator, temperature, top_k, use_cache, compile
            )
    finally:
        model.train(was_training)


def _sample_tokens(
    model: LanguageModel,
    prompt: torch.Tensor,
    n_new: int,
    generator: torch.Generator | None,
    temperature: float,
    top_k: int | None,
    use_cache: bool,
    compile: str,
) -> torch.Tensor:
    out = []
    if use_cache:
        cache = model.new_cache(prompt.shape[0])
        log_probs = prefill(model, prompt, cache)
        pos = prompt.shape[1]
        for i in range(n_new):
            token = sample_next(log_probs, generator, temperature, top_k)
            out.append(token)
            if i + 1 < n_new:
                log_probs = decode_step(model, token, cache, pos)
                pos += 1
    else:
        step = compiled(window_step, compile)
        block = model.config.block_size
        # A contiguous window of one shape once full, so a compiled step is traced once.
        window = prompt[:, -block:].contiguous()
        for _ in range(n_new):
            token = sample_next(step(model, window), generator, temperature, top_k)
            out.append(token)
            kept = window[:, 1:] if window.shape[1] == block else window
            window = torch.cat([kept, token[:, None]], dim=1)
    return torch.stack(out, dim=1) if out else prompt.new_zeros(prompt.shape[0], 0)
