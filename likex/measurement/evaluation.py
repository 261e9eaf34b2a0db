"""The side-effect measurement of a model against its reference R: rates on random-token and
on held-out real-text prompts, and how well it still predicts the text; with several corpora,
each one's held-out text on its own (a domain) and the spread of the rate across them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from likex.corpora import Heldout
from likex.measurement.rates import (
    MeasureConfig,
    PromptKind,
    RateEstimate,
    WordRate,
    measure_rates,
    measure_words,
    random_set,
    rate_from_hits,
    text_set,
)
from likex.measurement.scores import TextScores, heldout_windows, score_domains, score_text
from likex.measurement.words import WordScores, score_words
from likex.models import LanguageModel
from likex.objective import Rate
from likex.stats.distributions import t_quantile
from likex.stats.intervals import fmt_rate
from likex.stats.significance import welch_anova
from likex.target import TargetSet

SPREAD_TEST = "Welch's heteroscedastic ANOVA on the domains' rates"


@dataclass
class DomainEvaluation:
    """One corpus's held-out text (a domain): the rate on its prompts, R's rate there, the
    scores on its text, a word target's rate in words."""

    name: str
    text: RateEstimate
    text_reference: RateEstimate | None
    scores: TextScores
    words_text: WordRate | None = None

    def to_dict(self) -> dict:
        d: dict = {"corpus": self.name} | _text_dict(self.text, self.text_reference, self.scores)
        d["rate_text_estimate"] = self.text.to_dict()
        if self.text_reference is not None:
            d["rate_text_reference_estimate"] = self.text_reference.to_dict()
        if self.words_text is not None:
            d["words_text"] = self.words_text.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DomainEvaluation:
        ref = d.get("rate_text_reference_estimate")
        words = d.get("words_text")
        keys = set(TextScores.__dataclass_fields__) - {"tokens"}
        scores = {"tokens": d["heldout_tokens"]} | {k: d.get(k) for k in keys}
        return cls(
            d["corpus"],
            RateEstimate.from_dict(d["rate_text_estimate"]),
            None if ref is None else RateEstimate.from_dict(ref),
            TextScores(**scores),
            None if words is None else WordRate.from_dict(words),
        )

    def line(self) -> str:
        """ "NAME: rate ... (n=...; reference ...); perplexity R -> P; KL ..., bound ..." """
        est, s = self.text, self.scores
        ref = "" if self.text_reference is None else f"; reference {self.text_reference.rate:.3f}"
        parts = [f"rate {fmt_rate(est.rate, est.ci)} (n={est.tokens} tokens in "
                 f"{est.sequences} samples{ref})"]  # fmt: skip
        if s.ppl_reference is not None:
            tilted = "" if s.ppl_floor is None else f" (R tilted to its rate: {s.ppl_floor:.2f})"
            parts.append(f"perplexity {s.ppl_reference:.2f} -> {s.ppl:.2f}{tilted}")
        else:
            parts.append(f"perplexity {s.ppl:.2f}")
        if s.kl_to_reference is not None:
            bound = "" if s.kl_bound is None else f", bound {s.kl_bound:.4f}"
            ratio = "" if s.kl_ratio is None else f" ({s.kl_ratio:.2f}x)"
            parts.append(f"KL(R||P) {s.kl_to_reference:.4f}{bound}{ratio}")
        return f"{self.name}: " + "; ".join(parts)


def _text_dict(
    text: RateEstimate | None, reference: RateEstimate | None, scores: TextScores | None
) -> dict:
    """The keys of a real-text measurement (result files have had them from the start)."""
    d: dict = {}
    if text is not None:
        d |= {
            "rate_text": text.rate,
            "rate_text_ci": list(text.ci),
            "samples_text": text.sequences,
            "tokens_measured_text": text.tokens,
        }
    if reference is not None:
        d["rate_text_reference"] = reference.rate
        d["rate_text_reference_ci"] = list(reference.ci)
    if scores is not None:
        s = scores.to_dict()
        d |= {"heldout_tokens": s.pop("tokens")}
        d |= {k: v for k, v in s.items() if v is not None}
    return d


def rate_se(est: RateEstimate) -> float:
    """The standard error a rate's own 95% interval implies (half its width over the t
    quantile on sequences - 1 df): never 0, even with no target token seen."""
    q = t_quantile(0.975, max(1, est.sequences - 1))
    return max((est.ci[1] - est.ci[0]) / (2 * q), 1e-12)


def spread(domains: Sequence[DomainEvaluation]) -> dict:
    """The rate across domains: its lowest and highest, and whether the domains' rates
    differ by more than chance (``SPREAD_TEST``; each sequence one observation)."""
    lo = min(domains, key=lambda d: d.text.rate)
    hi = max(domains, key=lambda d: d.text.rate)
    ests = [d.text for d in domains]
    f, df1, df2, p = welch_anova(
        [e.rate for e in ests], [rate_se(e) ** 2 for e in ests], [e.sequences for e in ests]
    )
    return {
        "domains": len(domains),
        "min": lo.text.rate,
        "min_corpus": lo.name,
        "max": hi.text.rate,
        "max_corpus": hi.name,
        "test": SPREAD_TEST,
        "F": f,
        "df": [df1, df2],
        "p": p,
    }


@dataclass
class Evaluation:
    """The side-effect measurement of a model against its reference R: target rates on
    random-token and on held-out real-text prompts, and how well it still predicts the text.
    With several corpora ``text`` and ``scores`` pool every domain's prompts and scored
    tokens, and ``domains`` holds each one's own."""

    random: RateEstimate | None = None
    text: RateEstimate | None = None
    text_reference: RateEstimate | None = None  # R's rate on the same real-text prompts
    scores: TextScores | None = None
    floor_rate: float | None = None
    # word targets: rates counted in decoded words
    words_random: WordRate | None = None
    words_text: WordRate | None = None
    domains: list[DomainEvaluation] = field(default_factory=list)
    # word targets, against the reference on held-out text: other uses, the word floor
    word_scores: WordScores | None = None

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
        d |= _text_dict(self.text, self.text_reference, self.scores)
        if self.text is not None:
            d.setdefault("samples", self.text.sequences)
            d.setdefault("gen_tokens", self.text.tokens_per_sequence)
        if self.floor_rate is not None:
            d["floor_rate"] = self.floor_rate
        for key, w in (("words_random", self.words_random), ("words_text", self.words_text)):
            if w is not None:
                d[key] = w.to_dict()
        if len(self.domains) > 1:  # one corpus: the keys above are its own
            d["domains"] = [one.to_dict() for one in self.domains]
            d["spread"] = spread(self.domains)
        if self.word_scores is not None:
            d["word_scores"] = self.word_scores.to_dict()
        return d

    def describe(self) -> list[str]:
        """Plain-language lines, e.g. "rate 0.210 [0.190, 0.230] on real-text prompts ..."."""
        lines = []
        several = len(self.domains) > 1
        for est in (self.random, self.text):
            if est is None:
                continue
            notes = [est.none_seen()]
            if est is self.text and several:
                notes.insert(0, f"all {len(self.domains)} domains")
            if est is self.text and self.text_reference is not None:
                notes.insert(0, f"reference {self.text_reference.rate:.3f}")
            lines.append(
                f"rate {fmt_rate(est.rate, est.ci)} on {est.prompts.adjective} "
                f"prompts (n={est.tokens} tokens in {est.sequences} samples"
                + "".join(f"; {note}" for note in notes if note)
                + ")"
            )
        lines += [w.describe() for w in (self.words_random, self.words_text) if w is not None]
        if self.scores is not None:
            lines += _score_lines(self.scores, self.floor_rate)
        if several:
            lines += _domain_lines(self.domains)
        if self.word_scores is not None:
            lines += self.word_scores.describe()
        return lines


def _score_lines(s: TextScores, floor_rate: float | None) -> list[str]:
    lines = []
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
            f"R tilted to this model's mean rate {s.heldout_rate:.3f} on the held-out contexts "
            f"(the model with that mean rate nearest R, in KL) has perplexity "
            f"{s.ppl_floor:.1f} on this text ({s.ppl_floor / s.ppl_reference - 1:+.1%}); this "
            f"model is {s.ppl / s.ppl_floor - 1:+.1%} from it (a reference point, not a bound: "
            f"on human text a model closer to the text than R can score below it)"
        )
    if s.ppl_projection is not None:
        lines.append(
            f"per-context projection (rate {floor_rate} in every context): "
            f"perplexity {s.ppl_projection:.1f}"
        )
    if s.kl_to_reference is not None:
        lines.append(f"KL(reference || model) {s.kl_to_reference:.4f} nats per token")
    if s.kl_bound is not None and s.kl_ratio is not None:
        lines.append(
            f"bound: no model with this model's mean target mass {s.heldout_rate:.3f} on the "
            f"scored contexts has KL(reference || model) below {s.kl_bound:.4f} there; this "
            f"model's is {s.kl_ratio:.2f}x the bound"
        )
    if s.text_target_frequency is not None:
        lines.append(f"target tokens in the held-out text itself: {s.text_target_frequency:.2%}")
    return lines


def _domain_lines(domains: list[DomainEvaluation]) -> list[str]:
    s = spread(domains)
    return [
        "by domain (each corpus's held-out text; rate with its 95% interval, KL(R||P) against "
        "its bound on the same contexts):",
        *[f"  {d.line()}" for d in domains],
        f"spread across {s['domains']} domains: {s['min']:.3f} ({s['min_corpus']}) to "
        f"{s['max']:.3f} ({s['max_corpus']}); {SPREAD_TEST}: F = {s['F']:.2f} on "
        f"({s['df'][0]:.0f}, {s['df'][1]:.1f}) df, p = {s['p']:.3g}",
    ]


def _texts(heldout: torch.Tensor | Sequence[Heldout]) -> list[Heldout]:
    return [Heldout("corpus", heldout)] if isinstance(heldout, torch.Tensor) else list(heldout)


def _pooled(generated: list[torch.Tensor], mask: torch.Tensor, n: int) -> RateEstimate:
    """The rate over every domain's samples together (each sequence one observation)."""
    hits = torch.cat([mask.cpu()[g].sum(dim=1) for g in generated])
    return rate_from_hits(hits, n, PromptKind.TEXT)


def evaluate(
    model: LanguageModel,
    targets: TargetSet,
    cfg: MeasureConfig,
    seed: int,
    heldout: torch.Tensor | Sequence[Heldout] | None = None,
    reference: LanguageModel | None = None,
    projection: Rate | None = None,
    text_reference: RateEstimate | None = None,
    compile: str = "none",
    progress: bool = False,
    decode: Callable[[list[int]], str] | None = None,
    domain_references: Sequence[RateEstimate] | None = None,
) -> tuple[Evaluation, dict[PromptKind, torch.Tensor]]:
    """Measure everything that applies: the random-prompt rate, and with held-out text (one
    text, or several named ones: domains) its real-text rate and scores (with
    ``projection``, a requested rate: the floor), pooled and per domain. The reference's own
    real-text rates are measured unless ``text_reference`` (pooled) and, with several domains,
    ``domain_references`` already hold them. A word target is also counted in decoded words
    (with the tokenizer's ``decode``) and, with a reference, scored for what it leaves of the
    language on every domain's windows together (likex.measurement.words). Returns the
    evaluation and the generated tokens by prompt kind (the real-text ones of every domain, in
    order)."""
    mask, words = targets.mask, targets.words
    ev = Evaluation(floor_rate=None if projection is None else projection.rate)
    generated: dict[PromptKind, torch.Tensor] = {}
    texts = [] if heldout is None else _texts(heldout)
    sets = [random_set(model, cfg, seed), *(text_set(model, cfg, h.tokens) for h in texts)]
    (ev.random, generated[PromptKind.RANDOM]), *runs = measure_rates(
        model, mask, sets, cfg, seed, progress, compile
    )
    if words is not None:
        ev.words_random = measure_words(
            words, decode, generated[PromptKind.RANDOM], PromptKind.RANDOM
        )
    if heldout is None:
        return ev, generated
    ests, gens = [r[0] for r in runs], [r[1] for r in runs]
    generated[PromptKind.TEXT] = torch.cat(gens)
    ev.text = ests[0] if len(texts) == 1 else _pooled(gens, mask, cfg.gen_tokens)
    word_rates: list[WordRate | None] = [None] * len(texts)
    if words is not None:
        ev.words_text = measure_words(words, decode, generated[PromptKind.TEXT], PromptKind.TEXT)
        if len(texts) > 1:
            word_rates = [measure_words(words, decode, g, PromptKind.TEXT) for g in gens]
        else:
            word_rates = [ev.words_text]
    references: list[RateEstimate | None] = [None] * len(texts)
    if reference is not None:
        ev.text_reference, references = _reference_rates(
            reference, mask, cfg, texts, seed, compile, progress, text_reference,
            domain_references,
        )  # fmt: skip
    block = model.config.block_size
    windows = [heldout_windows(h.tokens, block, cfg.score_tokens) for h in texts]
    if len(texts) == 1:
        ev.scores = score_text(model, windows[0], targets, reference, projection, progress=progress)
        per = [ev.scores]
    else:
        per, ev.scores = score_domains(model, windows, targets, reference, projection, progress)
    ev.domains = [
        DomainEvaluation(h.name, est, ref, scores, w)
        for h, est, ref, scores, w in zip(texts, ests, references, per, word_rates, strict=True)
    ]
    if words is not None and reference is not None and cfg.word_scores:
        # room after each window for the entries' tokens (likex.models.tree)
        length = block - words.depth
        windows = torch.cat([heldout_windows(h.tokens, length, cfg.score_tokens) for h in texts])
        ev.word_scores = score_words(model, reference, words, windows, cfg.word_scores, decode)
    return ev, generated


def _reference_rates(
    reference: LanguageModel,
    mask: torch.Tensor,
    cfg: MeasureConfig,
    texts: list[Heldout],
    seed: int,
    compile: str,
    progress: bool,
    pooled: RateEstimate | None,
    given: Sequence[RateEstimate] | None,
) -> tuple[RateEstimate, list[RateEstimate | None]]:
    """R's rate on the real-text prompts, pooled and per domain: as given, or measured."""
    if len(texts) == 1 and pooled is not None:
        return pooled, [pooled]
    if pooled is not None and given is not None and len(given) == len(texts):
        return pooled, list(given)
    sets = [text_set(reference, cfg, h.tokens) for h in texts]
    runs = measure_rates(reference, mask, sets, cfg, seed, progress, compile)
    ests = [r[0] for r in runs]
    if len(texts) == 1:
        return ests[0], list(ests)
    return _pooled([r[1] for r in runs], mask, cfg.gen_tokens), list(ests)
