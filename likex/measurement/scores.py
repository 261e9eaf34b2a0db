"""How a model predicts held-out text: perplexity, KL to its reference, and the floor.

Every score is a full softmax over the vocabulary per token, so a long held-out text is
subsampled evenly (``heldout_windows``) to about ``SCORED_TOKENS`` labels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch

from likex.clock import progress_bar
from likex.errors import LikexError
from likex.models import LanguageModel
from likex.objective import Rate
from likex.stats.kl import perplexity_floor, shared_tilt_floor
from likex.target import TargetSet
from likex.words import NEG, masked_logsumexp, word_sets

# Held-out tokens scored for perplexity and KL: every score is a full softmax over the
# vocabulary per token, so a long held-out text is subsampled (evenly) to about this many.
SCORED_TOKENS = 4096


def heldout_windows(
    tokens: torch.Tensor, length: int, max_tokens: int | None = SCORED_TOKENS
) -> torch.Tensor:
    """Non-overlapping windows [N, length+1] of the text (each label scored once), spread
    evenly over it when there are more than ``max_tokens`` labels; windows are at most
    ``max_tokens`` long, so a long context never scores more than was asked."""
    if max_tokens is not None:
        length = min(length, max_tokens)
    if tokens.numel() < length + 1:
        raise LikexError(f"the held-out text has {tokens.numel()} tokens, fewer than {length + 1}")
    windows = tokens.unfold(0, length + 1, length)
    if max_tokens is not None and windows.shape[0] * length > max_tokens:
        keep = max(1, max_tokens // length)
        windows = windows[torch.linspace(0, windows.shape[0] - 1, keep).round().long()]
    return windows


@dataclass
class TextScores:
    """How a model predicts held-out text, next to its reference R (when given).

    ``kl_to_reference`` is the mean over scored positions of KL(R || P) in nats.
    ``heldout_rate`` is the model's mean probability of a target token at the scored positions
    (human text read in, not its own). ``ppl_floor`` is the lowest expected perplexity of any
    model with that same mean rate over the scored contexts (``likex.stats.kl.perplexity_floor``:
    R tilted with one multiplier shared by all contexts, the price of the bias alone): the bound
    for *this* model, which may hold a requested rate on its own text and less on human text.
    ``ppl_projection`` is that of the per-context projection of R at the requested rate A
    (``likex.target.rate_target_log``: rate A in *every* context, a target, not a bound).
    ``kl_bound`` is the least mean KL(R || Q) over the scored contexts of any model Q with this
    model's mean target mass there (``heldout_rate``; ``shared_tilt_floor``, objective
    "cross_entropy"): a true lower bound on ``kl_to_reference``, on the same contexts, which
    ``ppl_floor`` is not (on human text a model a little closer to the text than R scores
    below it); ``kl_ratio`` is the model's KL over it.
    """

    tokens: int
    ppl: float
    text_target_frequency: float | None = None
    ppl_reference: float | None = None
    kl_to_reference: float | None = None
    heldout_rate: float | None = None
    ppl_floor: float | None = None
    ppl_projection: float | None = None
    kl_bound: float | None = None

    @property
    def kl_ratio(self) -> float | None:
        if self.kl_bound is None or self.kl_to_reference is None or self.kl_bound <= 0:
            return None
        return self.kl_to_reference / self.kl_bound

    def to_dict(self) -> dict:
        return asdict(self) | ({"kl_ratio": self.kl_ratio} if self.kl_bound is not None else {})

    @classmethod
    def from_dict(cls, d: dict) -> TextScores:
        return cls(**{k: v for k, v in d.items() if k != "kl_ratio"})


def target_mass(log_probs: torch.Tensor, on_mask: torch.Tensor) -> torch.Tensor:
    """P(M | c) at each position of [..., V] log-probabilities."""
    return masked_logsumexp(log_probs, on_mask).squeeze(-1).exp()


@dataclass
class _Sums:
    """score_text's running sums over scored positions."""

    nll: float = 0.0
    nll_ref: float = 0.0
    nll_projection: float = 0.0
    kl: float = 0.0
    model_mass: float = 0.0
    hits: int = 0
    count: int = 0
    # a label the projection gives probability 0 (a begun word the text does not finish)
    impossible: bool = False
    # per scored position, for the floor and the bound: R(M | c), log R(label | c), label in M
    floor_parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)


@torch.no_grad()
def score_text(
    model: LanguageModel,
    windows: torch.Tensor,
    targets: TargetSet | None = None,
    reference: LanguageModel | None = None,
    projection: Rate | None = None,
    batch_tokens: int = 512,
    progress: bool = False,
) -> TextScores:
    """Perplexity and more over windows [N, T+1] (inputs w[:, :-1], labels w[:, 1:]).

    ``targets`` adds the share of target tokens in the text itself and the model's mean mass
    on the target set (``heldout_rate``); ``reference`` adds its perplexity and KL(R || P) and,
    with ``targets``, the least KL any model with that mean mass can have (``kl_bound``);
    ``projection`` (a requested rate, with both) the perplexity floor and that of the
    objective's own target at the rate (likex.objective.Rate: for the per-token word target of
    ``--complete`` the set is the context's, a word's starts or its continuations inside one;
    the sequence-level word target's floor is likex.measurement.words'). Where the projection
    gives some label probability 0 (a word prefix the text does not finish, with mass 1 on
    finishing words) its perplexity is infinite and left out (None). ``progress``: a bar
    with the time left.
    """
    projection = _token_projection(projection, targets)
    sums = _sums(model, windows, targets, reference, projection, batch_tokens, progress)
    return _scores(sums, targets, reference, projection)


@torch.no_grad()
def score_domains(
    model: LanguageModel,
    windows: list[torch.Tensor],
    targets: TargetSet | None = None,
    reference: LanguageModel | None = None,
    projection: Rate | None = None,
    progress: bool = False,
) -> tuple[list[TextScores], TextScores]:
    """``score_text`` on each text's windows, and on all of them together (the pooled
    scores, the floor and the bound taken over every scored context at once)."""
    projection = _token_projection(projection, targets)
    sums = [_sums(model, w, targets, reference, projection, progress=progress) for w in windows]
    pooled = _Sums()
    for one in sums:
        for f in fields(_Sums):
            a, b = getattr(pooled, f.name), getattr(one, f.name)
            setattr(pooled, f.name, (a or b) if f.name == "impossible" else a + b)
    scores = [_scores(one, targets, reference, projection) for one in sums]
    return scores, _scores(pooled, targets, reference, projection)


def _token_projection(projection: Rate | None, targets: TargetSet | None) -> Rate | None:
    """The projection the token-level floor is taken at: none for the sequence-level word
    target, which has its own floor (likex.measurement.words)."""
    if projection is not None and targets is not None and targets.words is not None:
        return None if projection.word_strength() else projection
    return projection


def _sums(
    model: LanguageModel,
    windows: torch.Tensor,
    targets: TargetSet | None,
    reference: LanguageModel | None,
    projection: Rate | None,
    batch_tokens: int = 512,
    progress: bool = False,
) -> _Sums:
    """score_text's running sums over the windows, the models in eval mode meanwhile."""
    if projection is not None and (reference is None or targets is None):
        raise LikexError("the perplexity floor needs a reference model and a target")
    device = next(model.parameters()).device
    models = [m for m in (model, reference) if m is not None]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    if targets is not None:
        words = None if targets.words is None else targets.words.to(device)
        targets = TargetSet(targets.mask.to(device), words)
    sums = _Sums()
    # about batch_tokens positions per pass: each holds several [V] float32 rows per model
    # (49k-50k tokens: ~200 KB each), so memory stays bounded whatever the window length
    batch_size = max(1, batch_tokens // max(1, windows.shape[1] - 1))
    with progress_bar(windows.shape[0], "score", "window", progress, leave=False) as bar:
        for start in range(0, windows.shape[0], batch_size):
            w = windows[start : start + batch_size].to(device)
            _score_batch(sums, model, w, targets, reference, projection)
            bar.update(w.shape[0])
    for m, mode in zip(models, modes, strict=True):
        m.train(mode)
    return sums


def _scores(
    sums: _Sums,
    targets: TargetSet | None,
    reference: LanguageModel | None,
    projection: Rate | None,
) -> TextScores:
    count = sums.count
    ppl_floor = ppl_projection = kl_bound = None
    heldout_rate = sums.model_mass / count if targets is not None else None
    if sums.floor_parts:
        mass, label_log_r, on = (torch.cat(p).cpu() for p in zip(*sums.floor_parts, strict=True))
        # the floor and the bound at the rate this model has on these contexts: a model
        # trained to hold a rate on its own text may hold less on human text
        if 0 < heldout_rate < 1:
            kl_bound = shared_tilt_floor(mass, heldout_rate, "cross_entropy")[2]
            if projection is not None:
                ppl_floor, _ = perplexity_floor(mass, label_log_r, on, heldout_rate)
    if projection is not None:
        ppl_projection = None if sums.impossible else math.exp(sums.nll_projection / count)
    return TextScores(
        tokens=count,
        ppl=math.exp(sums.nll / count),
        text_target_frequency=sums.hits / count if targets is not None else None,
        ppl_reference=math.exp(sums.nll_ref / count) if reference is not None else None,
        kl_to_reference=sums.kl / count if reference is not None else None,
        heldout_rate=heldout_rate,
        ppl_floor=ppl_floor,
        ppl_projection=ppl_projection,
        kl_bound=kl_bound,
    )


def _score_batch(
    sums: _Sums,
    model: LanguageModel,
    w: torch.Tensor,
    targets: TargetSet | None,
    reference: LanguageModel | None,
    projection: Rate | None,
) -> None:
    """Add one batch of windows ``w`` [b, T+1] (on the model's device) to ``sums``."""
    idx, labels = w[:, :-1], w[:, 1:, None]
    log_p = model(idx, positions="all")
    sums.nll -= float(log_p.gather(-1, labels).double().sum())
    sums.count += labels.numel()
    if targets is not None:
        sums.hits += int(targets.mask[labels].sum())
        # the target set at each position: fixed, or a word target's context's own
        on_mask = targets.mask if targets.words is None else word_sets(targets.words, idx, "all")[1]
        sums.model_mass += float(target_mass(log_p, on_mask).double().sum())
    if reference is None:
        return
    log_r = reference(idx, positions="all")
    sums.nll_ref -= float(log_r.gather(-1, labels).double().sum())
    sums.kl += float((log_r.exp() * (log_r - log_p)).sum(dtype=torch.float64))
    if targets is None:
        return
    sums.floor_parts.append(
        (
            target_mass(log_r, on_mask).flatten(),
            log_r.gather(-1, labels).flatten(),
            on_mask.expand_as(log_r).gather(-1, labels).flatten(),
        )
    )
    if projection is None:
        return
    label_log_q = projection.target_log(targets, log_r, idx, "all").gather(-1, labels)
    sums.impossible |= bool((label_log_q <= NEG / 2).any())
    sums.nll_projection -= float(label_log_q.double().sum())
