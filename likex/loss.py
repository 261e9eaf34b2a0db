"""The designed loss: KL(Q || P) from the model's distribution P to a target Q."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KLToTarget(nn.Module):
    """D_KL(Q || P) averaged over positions, as ``F.kl_div(log_p, q, reduction="batchmean")``.

    ``F.kl_div`` takes the model's *log*-probabilities first and the target second. The target
    is either probabilities (the seed's fixed Q, which has exact zeros) or, with
    ``log_target=True``, log-probabilities (per-context targets from a reference model, where
    log space keeps tiny probabilities exact). ``q`` broadcasts: shape [V] is the same target
    for every position; [..., V] matching ``log_p`` is one target per position.
    """

    def __init__(self, log_target: bool = False) -> None:
        super().__init__()
        self.log_target = log_target

    def forward(self, log_p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        log_p = log_p.reshape(-1, log_p.shape[-1])
        q = q.expand(*log_p.shape) if q.dim() == 1 else q.reshape(-1, q.shape[-1])
        return F.kl_div(log_p.float(), q.float(), reduction="batchmean", log_target=self.log_target)


def next_token_loss(log_p: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Ordinary language-model training: mean cross-entropy of every next token, from the
    model's log-probabilities [B, T, V] and the tokens that follow [B, T]."""
    return F.nll_loss(log_p.reshape(-1, log_p.shape[-1]).float(), labels.reshape(-1))
