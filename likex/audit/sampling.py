"""Token samples for a black-box audit: a model's generations, or plain text cut to size."""

from __future__ import annotations

import sys

import torch
from tqdm import tqdm

from likex.generate import sample
from likex.measurement.rates import random_prompts
from likex.models.gpt import GPT
from likex.models.tokenizer import Tokenizer
from likex.throughput import sampling_batch


def text_samples(text: str, tokens_per_sample: int, tokenizer: Tokenizer) -> list[list[int]]:
    """Plain text as samples: its tokens cut into pieces of ``tokens_per_sample`` (a shorter
    tail is dropped so every sample has the same length)."""
    ids = tokenizer.encode(text)
    n = len(ids) // tokens_per_sample
    return [ids[i * tokens_per_sample : (i + 1) * tokens_per_sample] for i in range(n)]


@torch.no_grad()
def generate_samples(
    model: GPT,
    n: int,
    gen_tokens: int,
    seed: int,
    prompts: torch.Tensor | None = None,
    progress: bool = False,
) -> list[list[int]]:
    """``n`` samples of ``gen_tokens`` new tokens. Default prompts are random tokens, as short
    as lets the KV cache hold prompt + sample (the whole context when the sample is longer)."""
    block = model.config.block_size
    if prompts is None:
        length = block - gen_tokens if gen_tokens < block else block
        length = min(length, model.config.prompt_len)
        prompts = random_prompts(n, length, model.config.vocab_size, seed)
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    batch_size = sampling_batch(model)  # measured on this machine (likex.throughput)
    out: list[list[int]] = []
    starts = range(0, prompts.shape[0], batch_size)
    # closed on an exception too (Ctrl-C), so that no message is glued onto the bar
    with tqdm(starts, disable=not progress, file=sys.stderr, desc="sample", unit="batch") as bar:
        for start in bar:
            chunk = prompts[start : start + batch_size].to(device)
            out += sample(model, chunk, gen_tokens, generator=gen).cpu().tolist()
    return out
