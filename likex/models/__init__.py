"""The small language-model interface every other layer works with.

Two kinds of model implement it: the built-in GPT ("Model 5" family, likex.models.gpt) and any
transformers causal LM behind likex.models.hf.HFCausalLM. Training, sampling, measuring and
auditing use only what ``LanguageModel`` names, so they need no branch on the model's kind;
saving, loading and where training starts (likex.models.checkpoint, likex.models.start)
are the places that dispatch on it.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import torch


class ModelShape(Protocol):
    """What a caller may ask of a model's config."""

    vocab_size: int  # rows of the output head: next-token log-probabilities have this width
    block_size: int  # positions the model can attend over

    @property
    def prompt_len(self) -> int:
        """Prompt and probe length where none is given."""
        ...

    def to_dict(self) -> dict: ...


class LanguageModel(Protocol):
    """A causal LM as likex uses it (an ``nn.Module``)."""

    config: ModelShape

    def __call__(
        self,
        idx: torch.Tensor,
        positions: Literal["last", "all"] = "all",
        cache: Any = None,
        start_pos: int = 0,
        attn_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """float32 log-probabilities of the next token: [B, V] ("last") or [B, T, V] ("all").
        ``attn_mask`` [B, T, T] (True: may attend) with ``position_ids`` [B, T]: tokens that are
        not one causal line (likex.models.tree), without a cache."""
        ...

    def new_cache(self, batch: int) -> Any:
        """An empty KV cache for ``batch`` rows, to pass as ``cache``."""
        ...

    def num_params(self) -> int: ...

    def check_savable(self) -> None:
        """Refuse, before any training, a model that could not be saved after it."""
        ...

    def parameters(self, recurse: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...
