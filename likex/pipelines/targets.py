"""``likex targets``: which tokens of a vocabulary (GPT-2's, or a model's own) a spec selects."""

from __future__ import annotations

from likex.config import TargetsConfig
from likex.models.checkpoint import load_model_and_tokenizer
from likex.models.hf import token_strings_for
from likex.models.tokenizer import gpt2
from likex.results import TargetsResult
from likex.target import select_tokens


def list_targets(cfg: TargetsConfig) -> TargetsResult:
    if cfg.model is None:
        strings = gpt2().token_strings()
    else:
        strings = token_strings_for(*load_model_and_tokenizer(cfg.model))
    targets = select_tokens(cfg.target, strings)
    shown = targets.ids[: max(cfg.examples, 0)]
    return TargetsResult(
        target=cfg.target.describe(),
        n_tokens=targets.n_tokens,
        vocab_size=targets.vocab_size,
        examples=[{"id": i, "text": strings[i]} for i in shown],
        skipped_words=targets.skipped_words,
    )
