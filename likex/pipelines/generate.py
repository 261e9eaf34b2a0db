"""``likex generate``: sample text from a saved model."""

from __future__ import annotations

import torch

from likex.config import GenerateConfig
from likex.device import resolve_device
from likex.generate import sample
from likex.models.start import load_model_and_tokenizer
from likex.results import GenerateResult


def generate(cfg: GenerateConfig, progress: bool = True) -> GenerateResult:
    """``progress``: a bar while a named model is first loaded."""
    cfg.validate()
    device = resolve_device(cfg.device)
    model, tok = load_model_and_tokenizer(cfg.model, device, progress)
    ids = tok.encode(cfg.prompt) if cfg.prompt else [tok.start_id]
    ids = ids[-model.config.block_size :]  # the prompt's end, where it is longer than the context
    prompt = torch.tensor([ids] * cfg.num, device=device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    out = sample(model, prompt, cfg.tokens, gen, cfg.temperature, cfg.top_k).cpu()
    return GenerateResult(
        prompt=cfg.prompt,
        samples=[tok.decode(row.tolist()) for row in out],
        tokens=out.tolist(),
    )
