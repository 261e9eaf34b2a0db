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
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from likex.data import random_contexts, step_generator
from likex.errors import ConfigError, LikexError
from likex.generate import sample
from likex.models.gpt import GPT
from likex.options import option
from likex.stats import fmt_rate, wilson_interval
from likex.target import rate_target_log
from likex.words import WordCounter, WordTrie, completions, word_target_log


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
        return (
            f"{fmt_rate(self.rate, self.ci)} "
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


def rate_from_counts(
    hits: torch.Tensor, totals: torch.Tensor
) -> tuple[float, tuple[float, float], float]:
    """(rate, 95% interval, design effect) of sum(hits) / sum(totals) over sequences of any
    lengths (words per sample vary): ``rate_from_hits`` generalised, with the ratio estimator's
    between-sequence variance giving the design effect (equal lengths give the same numbers up
    to rounding; ``rate_from_hits`` keeps its own arithmetic so token rates stay bit-identical)."""
    hits, totals = hits.double(), totals.double()
    k = hits.numel()
    n = float(totals.sum())
    p = float(hits.sum()) / n if n > 0 else 0.0
    deff = 1.0
    if k > 1 and 0.0 < p < 1.0:
        mean_len = n / k
        between = float(((hits - p * totals) / mean_len).pow(2).sum()) / (k - 1) / k
        deff = max(1.0, between / (p * (1 - p) / n))
    lo, hi = wilson_interval(p * n / deff, n / deff)
    return p, (lo, hi), deff


@dataclass
class WordRate:
    """Word targets, counted in decoded text: the share of generated words that are entries
    (with its 95% interval across samples), per entry, and how often a begun entry (its first
    token written) was finished."""

    rate: float
    ci: tuple[float, float]
    hits: int
    words: int
    sequences: int
    design_effect: float
    started: int
    finished: int
    per_entry: dict[str, int]
    prompts: str

    @property
    def completion(self) -> float | None:
        return self.finished / self.started if self.started else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = list(self.ci)
        d["per_1000"] = 1000 * self.rate
        d["completion"] = self.completion
        return d

    @classmethod
    def from_dict(cls, d: dict) -> WordRate:
        keep = {k: v for k, v in d.items() if k not in ("per_1000", "completion")}
        return cls(**{**keep, "ci": tuple(d["ci"])})

    def describe(self) -> str:
        kind = {RANDOM_PROMPTS: "random-token", TEXT_PROMPTS: "real-text"}[self.prompts]
        done = self.completion
        finish = (
            f"; completion {done:.2f} ({self.finished}/{self.started} begun entries finished)"
            if done is not None
            else ""
        )
        return (
            f"word rate {fmt_rate(self.rate, self.ci)} = {1000 * self.rate:.1f} "
            f"[{1000 * self.ci[0]:.1f}, {1000 * self.ci[1]:.1f}] per 1000 words on {kind} "
            f"prompts (n={self.words} words in {self.sequences} samples{finish})"
        )


def measure_words(
    trie: WordTrie, decode: Callable[[list[int]], str], generated: torch.Tensor, prompts: str
) -> WordRate:
    """Count the entries of a word target in decoded generations [K, n] (likex.words)."""
    counter = WordCounter(trie.entries, trie.ignore_case)
    seqs = generated.tolist()
    counts = [counter.count(decode(seq)) for seq in seqs]
    hits = torch.tensor([c.total_hits for c in counts], dtype=torch.float64)
    words = torch.tensor([c.words for c in counts], dtype=torch.float64)
    p, ci, deff = rate_from_counts(hits, words)
    started = finished = 0
    for seq in seqs:
        s, f = completions(trie, seq)
        started, finished = started + s, finished + f
    per_entry = {e: sum(c.hits[e] for c in counts) for e in trie.entries}
    return WordRate(
        rate=p,
        ci=ci,
        hits=int(hits.sum()),
        words=int(words.sum()),
        sequences=len(seqs),
        design_effect=deff,
        started=started,
        finished=finished,
        per_entry=per_entry,
        prompts=prompts,
    )


@torch.no_grad()
def measure_rate(
    model: GPT,
    mask: torch.Tensor,
    prompts: torch.Tensor,
    cfg: MeasureConfig,
    seed: int,
    prompt_kind: str,
    progress: bool = False,
    compile: str = "none",
) -> tuple[RateEstimate, torch.Tensor]:
    """Sample ``cfg.gen_tokens`` after prompt rows and count target tokens.

    Prompts are used in batches, in order; with ``cfg.ci_half_width`` sampling stops as soon
    as the 95% interval is that narrow (the prompts are then a cap, not a quota). Returns the
    estimate and the generated tokens [K, gen_tokens] on the CPU. The generator is seeded
    from ``seed``, so before/after measurements see the same prompts and the same draws.
    ``compile`` is passed to ``sample`` (likex.accel modes).
    """
    gen_tokens, ci_half_width = cfg.gen_tokens, cfg.ci_half_width
    device = next(model.parameters()).device
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


# Held-out tokens scored for perplexity and KL: every score is a full softmax over the
# vocabulary per token, so a long held-out text is subsampled (evenly) to about this many.
SCORED_TOKENS = 4096


RANDOM_PROMPTS = "random tokens"
TEXT_PROMPTS = "real text"


@dataclass
class MeasureConfig:
    """rate measurement: sequences of ``gen_tokens`` new tokens, each after a prompt of
    ``prompt_len`` tokens (None: the model's full context), until the 95% interval is within
    +-``ci_half_width`` or ``samples`` sequences have been drawn. Perplexity and KL are scored
    on about ``score_tokens`` held-out tokens."""

    samples: int = option(64, "most sequences to sample")
    gen_tokens: int = option(200, "new tokens per sample")
    prompt_len: int | None = option(None, "prompt tokens; default: the model's context")
    ci_half_width: float | None = option(
        0.02,
        "stop sampling once the 95% interval is within +- this (0: use all samples)",
        flag="ci-width",
        parse=lambda text: float(text) or None,
    )
    score_tokens: int = option(
        SCORED_TOKENS, "held-out tokens scored for perplexity and KL (spread over the text)"
    )

    def validate(self, block_size: int) -> None:
        if self.samples <= 0:
            raise ConfigError("samples", f"must be positive, got {self.samples}")
        if self.gen_tokens <= 0:
            raise ConfigError("gen_tokens", f"must be positive, got {self.gen_tokens}")
        if self.prompt_len is not None and not 0 < self.prompt_len <= block_size:
            raise ConfigError("prompt_len", f"must be in 1..{block_size}, got {self.prompt_len}")
        if self.ci_half_width is not None and not 0 < self.ci_half_width < 0.5:
            raise ConfigError("ci_half_width", f"must be in (0, 0.5), got {self.ci_half_width}")
        if self.score_tokens <= 0:
            raise ConfigError("score_tokens", f"must be positive, got {self.score_tokens}")


def measure(
    model: GPT,
    mask: torch.Tensor,
    cfg: MeasureConfig,
    seed: int,
    compile: str = "none",
    progress: bool = False,
) -> tuple[RateEstimate, torch.Tensor]:
    """Rate on random-token prompts; the same prompts and draws for a given seed."""
    prompt_len = cfg.prompt_len or model.config.block_size
    prompts = random_prompts(cfg.samples, prompt_len, model.config.vocab_size, seed)
    return measure_rate(model, mask, prompts, cfg, seed, RANDOM_PROMPTS, progress, compile)


def text_prompts(tokens: torch.Tensor, n: int, length: int) -> torch.Tensor:
    """``n`` prompts of ``length`` tokens spread evenly over a (held-out) text, [n, length]."""
    if tokens.numel() < length:
        raise LikexError(f"the held-out text has {tokens.numel()} tokens, fewer than {length}")
    starts = torch.linspace(0, tokens.numel() - length, n).round().long()
    return tokens[starts[:, None] + torch.arange(length)[None, :]]


def measure_text(
    model: GPT,
    mask: torch.Tensor,
    cfg: MeasureConfig,
    heldout: torch.Tensor,
    seed: int,
    compile: str = "none",
    progress: bool = False,
) -> tuple[RateEstimate, torch.Tensor]:
    """Rate in generations that continue held-out real text (generalisation beyond the
    random-token contexts of the seed)."""
    prompt_len = cfg.prompt_len or model.config.block_size
    prompts = text_prompts(heldout, cfg.samples, prompt_len)
    return measure_rate(model, mask, prompts, cfg, seed, TEXT_PROMPTS, progress, compile)


def heldout_windows(
    tokens: torch.Tensor, length: int, max_tokens: int | None = SCORED_TOKENS
) -> torch.Tensor:
    """Non-overlapping windows [N, length+1] of the text (each label scored once), spread
    evenly over it when there are more than ``max_tokens`` labels."""
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

    ``kl_to_reference`` is the mean over scored positions of KL(R || P) in nats; ``ppl_floor``
    is the perplexity of the exact rate-A projection of R (the price of the bias alone).
    """

    tokens: int
    ppl: float
    text_target_frequency: float | None = None
    ppl_reference: float | None = None
    kl_to_reference: float | None = None
    ppl_floor: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def score_text(
    model: GPT,
    windows: torch.Tensor,
    mask: torch.Tensor | None = None,
    reference: GPT | None = None,
    floor_rate: float | None = None,
    batch_size: int = 4,
    words: WordTrie | None = None,
    complete: float = 1.0,
) -> TextScores:
    """Perplexity and more over windows [N, T+1] (inputs w[:, :-1], labels w[:, 1:]).

    ``mask`` adds the share of target tokens in the text itself; ``reference`` adds its
    perplexity and KL(R || P); ``floor_rate`` (with both) the rate-A projection's perplexity
    (for a word target ``words``: the word target's own, likex.words.word_target_log).
    """
    if floor_rate is not None and (reference is None or mask is None):
        raise LikexError("the perplexity floor needs a reference model and a target")
    device = next(model.parameters()).device
    models = [m for m in (model, reference) if m is not None]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    nll = nll_ref = nll_floor = kl = 0.0
    hits, count = 0, 0
    for start in range(0, windows.shape[0], batch_size):
        w = windows[start : start + batch_size].to(device)
        labels = w[:, 1:, None]
        log_p = model(w[:, :-1], positions="all")
        nll -= float(log_p.gather(-1, labels).double().sum())
        count += labels.numel()
        if mask is not None:
            hits += int(mask.to(device)[labels].sum())
        if reference is not None:
            log_r = reference(w[:, :-1], positions="all")
            nll_ref -= float(log_r.gather(-1, labels).double().sum())
            kl += float((log_r.exp() * (log_r - log_p)).sum(dtype=torch.float64))
            if floor_rate is not None:
                if words is None:
                    log_q = rate_target_log(log_r, mask.to(device), floor_rate)
                else:
                    log_q = word_target_log(
                        words.to(device), w[:, :-1], "rate", log_r, "all", floor_rate,
                        complete=complete,
                    )  # fmt: skip
                nll_floor -= float(log_q.gather(-1, labels).double().sum())
    for m, mode in zip(models, modes, strict=True):
        m.train(mode)
    return TextScores(
        tokens=count,
        ppl=math.exp(nll / count),
        text_target_frequency=hits / count if mask is not None else None,
        ppl_reference=math.exp(nll_ref / count) if reference is not None else None,
        kl_to_reference=kl / count if reference is not None else None,
        ppl_floor=math.exp(nll_floor / count) if floor_rate is not None else None,
    )


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
            kind = {RANDOM_PROMPTS: "random-token", TEXT_PROMPTS: "real-text"}[est.prompts]
            line = (
                f"rate {fmt_rate(est.rate, est.ci)} on {kind} "
                f"prompts (n={est.tokens} tokens in {est.sequences} samples)"
            )
            if est is self.text and self.text_reference is not None:
                line = line[:-1] + f"; reference {self.text_reference.rate:.3f})"
            lines.append(line)
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
                    f"floor for rate {self.floor_rate}: the exact projection of the reference "
                    f"has perplexity {s.ppl_floor:.1f} ({s.ppl_floor / s.ppl_reference - 1:+.1%});"
                    f" this model is {s.ppl / s.ppl_floor - 1:+.1%} from it"
                )
            if s.kl_to_reference is not None:
                lines.append(f"KL(reference || model) {s.kl_to_reference:.4f} nats per token")
            if s.text_target_frequency is not None:
                lines.append(
                    f"target tokens in the held-out text itself: {s.text_target_frequency:.2%}"
                )
        return lines


def evaluate(
    model: GPT,
    mask: torch.Tensor,
    cfg: MeasureConfig,
    seed: int,
    heldout: torch.Tensor | None = None,
    reference: GPT | None = None,
    floor_rate: float | None = None,
    text_reference: RateEstimate | None = None,
    compile: str = "none",
    progress: bool = False,
    words: WordTrie | None = None,
    decode: Callable[[list[int]], str] | None = None,
    complete: float = 1.0,
) -> tuple[Evaluation, dict[str, torch.Tensor]]:
    """Measure everything that applies: the random-prompt rate, and
    with a held-out text its real-text rate and scores. The reference's own real-text rate is
    measured unless ``text_reference`` already holds it. A word target (``words``, with the
    tokenizer's ``decode``) is also counted in decoded words. Returns the evaluation and the
    generated tokens by prompt kind."""
    ev = Evaluation(floor_rate=floor_rate)
    generated: dict[str, torch.Tensor] = {}
    ev.random, generated[RANDOM_PROMPTS] = measure(model, mask, cfg, seed, compile, progress)
    if words is not None:
        ev.words_random = measure_words(words, decode, generated[RANDOM_PROMPTS], RANDOM_PROMPTS)
    if heldout is not None:
        ev.text, generated[TEXT_PROMPTS] = measure_text(
            model, mask, cfg, heldout, seed, compile, progress
        )
        if words is not None:
            ev.words_text = measure_words(words, decode, generated[TEXT_PROMPTS], TEXT_PROMPTS)
        if reference is not None:
            ev.text_reference = (
                text_reference
                or measure_text(reference, mask, cfg, heldout, seed, compile, progress)[0]
            )
        windows = heldout_windows(heldout, model.config.block_size, cfg.score_tokens)
        ev.scores = score_text(
            model, windows, mask, reference, floor_rate, words=words, complete=complete
        )
    return ev, generated
