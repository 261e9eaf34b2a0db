"""The side-effect measurement of a model against its reference R: rates on random-token and
on held-out real-text prompts, and how well it still predicts the text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from likex.measurement.rates import (
    MeasureConfig,
    PromptKind,
    RateEstimate,
    WordRate,
    measure,
    measure_text,
    measure_words,
)
from likex.measurement.scores import TextScores, heldout_windows, score_text
from likex.models import LanguageModel
from likex.objective import Rate
from likex.stats.intervals import fmt_rate
from likex.target import TargetSet


@dataclass
class Evaluation:
    """The side-effect measurement of a model against its reference R: target rates on
    random-token and on held-out real-text prompts, and how well it still predicts the text."""

    random: RateEstimate | None = None
    text: RateEstimate | None = None
    text_reference: RateEstimate | None = None  # R's rate on the same real-text prompts
    scores: TextScores | None = None
    floor_rate: float | None = None
    # word targets: rates counted in decoded words
    words_random: WordRate | None = None
    words_text: WordRate | None = None

    def to_dict(self) -> dict:
        d: dict = {}
        if self.random is not None:
            r = self.random
            d |= {
                "rate_random": r.rate,
                "rate_random_ci": list(r.ci),
                "samples": r.sequences,
                "gen_tokens": r.tokens_per_sequence,
                "tokens_measured": r.tokens,
                "first_sample_hits": r.first_sample_hits,
                "prompts": r.prompts,
            }
        if self.text is not None:
            d |= {
                "rate_text": self.text.rate,
                "rate_text_ci": list(self.text.ci),
                "samples_text": self.text.sequences,
                "tokens_measured_text": self.text.tokens,
            }
            d.setdefault("samples", self.text.sequences)
            d.setdefault("gen_tokens", self.text.tokens_per_sequence)
        if self.text_reference is not None:
            d["rate_text_reference"] = self.text_reference.rate
            d["rate_text_reference_ci"] = list(self.text_reference.ci)
        if self.scores is not None:
            s = self.scores.to_dict()
            d |= {"heldout_tokens": s.pop("tokens")}
            d |= {k: v for k, v in s.items() if v is not None}
        if self.floor_rate is not None:
            d["floor_rate"] = self.floor_rate
        for key, w in (("words_random", self.words_random), ("words_text", self.words_text)):
            if w is not None:
                d[key] = w.to_dict()
        return d

    def describe(self) -> list[str]:
        """Plain-language lines, e.g. "rate 0.210 [0.190, 0.230] on real-text prompts ..."."""
        lines = []
        for est in (self.random, self.text):
            if est is None:
                continue
            notes = [est.none_seen()]
            if est is self.text and self.text_reference is not None:
                notes.insert(0, f"reference {self.text_reference.rate:.3f}")
            lines.append(
                f"rate {fmt_rate(est.rate, est.ci)} on {est.prompts.adjective} "
                f"prompts (n={est.tokens} tokens in {est.sequences} samples"
                + "".join(f"; {note}" for note in notes if note)
                + ")"
            )
        lines += [w.describe() for w in (self.words_random, self.words_text) if w is not None]
        s = self.scores
        if s is not None:
            if s.ppl_reference is not None:
                change = s.ppl / s.ppl_reference - 1
                lines.append(
                    f"perplexity {s.ppl_reference:.1f} -> {s.ppl:.1f} ({change:+.1%}) on "
                    f"{s.tokens} held-out tokens"
                )
            else:
                lines.append(f"perplexity {s.ppl:.1f} on {s.tokens} held-out tokens")
            if s.ppl_floor is not None and s.ppl_reference is not None:
                lines.append(
                    f"floor for its mean rate {s.heldout_rate:.3f} on the held-out contexts: no "
                    f"model with that rate on average has expected perplexity below "
                    f"{s.ppl_floor:.1f} "
                    f"({s.ppl_floor / s.ppl_reference - 1:+.1%}); this model is "
                    f"{s.ppl / s.ppl_floor - 1:+.1%} above it"
                )
            if s.ppl_projection is not None:
                lines.append(
                    f"per-context projection (rate {self.floor_rate} in every context): "
                    f"perplexity {s.ppl_projection:.1f}"
                )
            if s.kl_to_reference is not None:
                lines.append(f"KL(reference || model) {s.kl_to_reference:.4f} nats per token")
            if s.text_target_frequency is not None:
                lines.append(
                    f"target tokens in the held-out text itself: {s.text_target_frequency:.2%}"
                )
        return lines


def evaluate(
    model: LanguageModel,
    targets: TargetSet,
    cfg: MeasureConfig,
    seed: int,
    heldout: torch.Tensor | None = None,
    reference: LanguageModel | None = None,
    projection: Rate | None = None,
    text_reference: RateEstimate | None = None,
    compile: str = "none",
    progress: bool = False,
    decode: Callable[[list[int]], str] | None = None,
) -> tuple[Evaluation, dict[PromptKind, torch.Tensor]]:
    """Measure everything that applies: the random-prompt rate, and with a held-out text its
    real-text rate and scores (with ``projection``, a requested rate: the floor). The
    reference's own real-text rate is measured unless ``text_reference`` already holds it. A
    word target is also counted in decoded words (with the tokenizer's ``decode``). Returns
    the evaluation and the generated tokens by prompt kind."""
    mask, words = targets.mask, targets.words
    ev = Evaluation(floor_rate=None if projection is None else projection.rate)
    generated: dict[PromptKind, torch.Tensor] = {}
    ev.random, generated[PromptKind.RANDOM] = measure(model, mask, cfg, seed, compile, progress)
    if words is not None:
        ev.words_random = measure_words(
            words, decode, generated[PromptKind.RANDOM], PromptKind.RANDOM
        )
    if heldout is None:
        return ev, generated
    ev.text, generated[PromptKind.TEXT] = measure_text(
        model, mask, cfg, heldout, seed, compile, progress
    )
    if words is not None:
        ev.words_text = measure_words(words, decode, generated[PromptKind.TEXT], PromptKind.TEXT)
    if reference is not None:
        ev.text_reference = (
            text_reference
            or measure_text(reference, mask, cfg, heldout, seed, compile, progress)[0]
        )
    windows = heldout_windows(heldout, model.config.block_size, cfg.score_tokens)
    ev.scores = score_text(model, windows, targets, reference, projection, progress=progress)
    return ev, generated
