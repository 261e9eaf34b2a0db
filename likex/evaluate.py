"""Measurement: target rates with 95% intervals, perplexity, KL to a reference.

Tokens sampled in one sequence are not independent (a model that has started writing x tends
to go on), so a rate's interval is ``likex.stats.rate_interval``: Wilson at the token count
divided by the design effect (estimated from the spread between sequences) joined with a
skew-corrected t interval, both with the t quantile on k-1 degrees of freedom; with no target
token at all, the exact bound over sequences. "Sample until the interval is narrow" looks
only at 16, 32, 64, ... sequences, the same on every device.
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
from likex.models.hf import default_prompt_len
from likex.options import option
from likex.stats.intervals import check_points, fmt_rate, rate_interval
from likex.stats.kl import perplexity_floor
from likex.target import rate_target_log
from likex.words import (
    NEG,
    WordCounter,
    WordTrie,
    completions,
    masked_logsumexp,
    word_sets,
    word_target_log,
)


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

    @classmethod
    def from_dict(cls, d: dict) -> RateEstimate:
        return cls(**{**d, "ci": tuple(d["ci"])})

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
    p, lo, hi, _, deff = rate_interval(hits.numpy(), [tokens_per_sequence] * k)
    total = float(hits.sum())
    return RateEstimate(
        rate=p,
        ci=(lo, hi),
        hits=int(total),
        tokens=k * tokens_per_sequence,
        sequences=k,
        tokens_per_sequence=tokens_per_sequence,
        design_effect=deff,
        first_sample_hits=int(hits[0]),
        prompts=prompts,
    )


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
    hits = [c.total_hits for c in counts]
    words = [c.words for c in counts]
    if not sum(words):
        raise LikexError(f"the {len(seqs)} samples on {prompts} prompts hold no words to count")
    p, lo, hi, _, deff = rate_interval(hits, words)
    started = finished = 0
    for seq in seqs:
        s, f = completions(trie, seq)
        started, finished = started + s, finished + f
    per_entry = {e: sum(c.hits[e] for c in counts) for e in trie.entries}
    return WordRate(
        rate=p,
        ci=(lo, hi),
        hits=sum(hits),
        words=sum(words),
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

    Prompts are used in order; with ``cfg.ci_half_width`` sampling stops at the first check
    point (16, 32, 64, ... sequences, and all of them; ``likex.stats.check_points``) where the
    95% interval is that narrow (the prompts are then a cap, not a quota). The check points
    do not depend on the batch size, so a CPU and a GPU stop at the same count. Returns the
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
    done = 0
    bar = tqdm(
        total=prompts.shape[0],
        desc="measure",
        unit="sample",
        disable=not progress,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
    )
    for point in check_points(prompts.shape[0]):
        while done < point:
            chunk = prompts[done : min(done + batch_size, point)].to(device)
            outs.append(sample(model, chunk, gen_tokens, generator=gen, compile=compile).cpu())
            done += chunk.shape[0]
            bar.update(chunk.shape[0])
        generated = torch.cat(outs)
        estimate = rate_from_hits(cpu_mask[generated].sum(dim=1), gen_tokens, prompt_kind)
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


# Bounds far beyond a useful measurement (the seed samples 200 tokens once): a larger value
# is a typo that would otherwise sample for days.
MAX_GEN_TOKENS = 1_000_000
MAX_SAMPLES = 100_000
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
    prompt_len: int | None = option(
        None, "prompt tokens; default: the model's context (a pretrained model: 64)"
    )
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
        if not 0 < self.gen_tokens <= MAX_GEN_TOKENS:
            raise ConfigError(
                "gen_tokens", f"must be in 1..{MAX_GEN_TOKENS:_}, got {self.gen_tokens}"
            )
        if not 0 < self.samples <= MAX_SAMPLES:
            raise ConfigError("samples", f"must be in 1..{MAX_SAMPLES:_}, got {self.samples}")
        if self.prompt_len is not None and not 0 < self.prompt_len <= block_size:
            raise ConfigError("prompt_len", f"must be in 1..{block_size}, got {self.prompt_len}")
        if self.ci_half_width is not None and not 0 < self.ci_half_width < 0.5:
            raise ConfigError("ci_half_width", f"must be in (0, 0.5), got {self.ci_half_width}")
        if self.score_tokens <= 0:
            raise ConfigError("score_tokens", f"must be positive, got {self.score_tokens}")


def prompt_length(cfg: MeasureConfig, model: GPT) -> int:
    """The prompt length measured with: the given one, else the model's default (a pretrained
    model: a short prefix, so prompt and new tokens fit the KV cache)."""
    return cfg.prompt_len if cfg.prompt_len is not None else default_prompt_len(model)


def measure(
    model: GPT,
    mask: torch.Tensor,
    cfg: MeasureConfig,
    seed: int,
    compile: str = "none",
    progress: bool = False,
) -> tuple[RateEstimate, torch.Tensor]:
    """Rate on random-token prompts; the same prompts and draws for a given seed."""
    prompt_len = prompt_length(cfg, model)
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
    prompt_len = prompt_length(cfg, model)
    prompts = text_prompts(heldout, cfg.samples, prompt_len)
    return measure_rate(model, mask, prompts, cfg, seed, TEXT_PROMPTS, progress, compile)


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
    model with that same mean rate over the scored contexts (``likex.stats.perplexity_floor``:
    R tilted with one multiplier shared by all contexts, the price of the bias alone): the bound
    for *this* model, which may hold a requested rate on its own text and less on human text.
    ``ppl_projection`` is that of the per-context projection of R at the requested rate A
    (``likex.target.rate_target_log``: rate A in *every* context, a target, not a bound).
    """

    tokens: int
    ppl: float
    text_target_frequency: float | None = None
    ppl_reference: float | None = None
    kl_to_reference: float | None = None
    heldout_rate: float | None = None
    ppl_floor: float | None = None
    ppl_projection: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def target_mass(log_probs: torch.Tensor, on_mask: torch.Tensor) -> torch.Tensor:
    """P(M | c) at each position of [..., V] log-probabilities."""
    return masked_logsumexp(log_probs, on_mask).squeeze(-1).exp()


@torch.no_grad()
def score_text(
    model: GPT,
    windows: torch.Tensor,
    mask: torch.Tensor | None = None,
    reference: GPT | None = None,
    floor_rate: float | None = None,
    batch_tokens: int = 512,
    words: WordTrie | None = None,
    complete: float = 1.0,
) -> TextScores:
    """Perplexity and more over windows [N, T+1] (inputs w[:, :-1], labels w[:, 1:]).

    ``mask`` adds the share of target tokens in the text itself and the model's mean mass on
    the target set (``heldout_rate``); ``reference`` adds its perplexity and KL(R || P);
    ``floor_rate`` (with both) the perplexity floor and the rate-A projection's perplexity.
    For a word target (``words``) the set is the context's (a word's starts, or its
    continuations inside one) and the projection is the word target's own
    (likex.words.word_target_log, ``complete`` inside a word); where the projection gives some
    label probability 0 (``complete`` 1 and a word prefix the text does not finish) its
    perplexity is infinite and left out (None).
    """
    if floor_rate is not None and (reference is None or mask is None):
        raise LikexError("the perplexity floor needs a reference model and a target")
    device = next(model.parameters()).device
    models = [m for m in (model, reference) if m is not None]
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    nll = nll_ref = nll_projection = kl = model_mass = 0.0
    hits, count = 0, 0
    # per scored position, for the floor: R(M | c), log R(label | c), label in M
    floor_parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    impossible = False  # a label the projection gives probability 0 (a begun word not finished)
    words_on = words.to(device) if words is not None else None
    # about batch_tokens positions per pass: each holds several [V] float32 rows per model
    # (49k-50k tokens: ~200 KB each), so memory stays bounded whatever the window length
    batch_size = max(1, batch_tokens // max(1, windows.shape[1] - 1))
    for start in range(0, windows.shape[0], batch_size):
        w = windows[start : start + batch_size].to(device)
        labels = w[:, 1:, None]
        log_p = model(w[:, :-1], positions="all")
        nll -= float(log_p.gather(-1, labels).double().sum())
        count += labels.numel()
        if mask is not None:
            hits += int(mask.to(device)[labels].sum())
            # the target set at each position: fixed, or a word target's context's own
            on_mask = mask.to(device) if words is None else word_sets(words_on, w[:, :-1], "all")[1]
            model_mass += float(target_mass(log_p, on_mask).double().sum())
        if reference is not None:
            log_r = reference(w[:, :-1], positions="all")
            nll_ref -= float(log_r.gather(-1, labels).double().sum())
            kl += float((log_r.exp() * (log_r - log_p)).sum(dtype=torch.float64))
            if floor_rate is not None:
                if words is None:
                    log_q = rate_target_log(log_r, on_mask, floor_rate)
                else:
                    log_q = word_target_log(
                        words_on, w[:, :-1], "rate", log_r, "all", floor_rate, complete=complete
                    )
                floor_parts.append(
                    (
                        target_mass(log_r, on_mask).flatten(),
                        log_r.gather(-1, labels).flatten(),
                        on_mask.expand_as(log_r).gather(-1, labels).flatten(),
                    )
                )
                label_log_q = log_q.gather(-1, labels)
                impossible |= bool((label_log_q <= NEG / 2).any())
                nll_projection -= float(label_log_q.double().sum())
    for m, mode in zip(models, modes, strict=True):
        m.train(mode)
    ppl_floor = ppl_projection = None
    heldout_rate = model_mass / count if mask is not None else None
    if floor_rate is not None:
        mass, label_log_r, on = (torch.cat(p).cpu() for p in zip(*floor_parts, strict=True))
        # the floor at the rate this model has on these contexts: a model trained to hold a
        # rate on its own text may hold less on human text, and so cost less than rate A would
        if 0 < heldout_rate < 1:
            ppl_floor, _ = perplexity_floor(mass, label_log_r, on, heldout_rate)
        # --complete 1 gives the text's unfinished word prefixes probability 0: no perplexity
        ppl_projection = None if impossible else math.exp(nll_projection / count)
    return TextScores(
        tokens=count,
        ppl=math.exp(nll / count),
        text_target_frequency=hits / count if mask is not None else None,
        ppl_reference=math.exp(nll_ref / count) if reference is not None else None,
        kl_to_reference=kl / count if reference is not None else None,
        heldout_rate=heldout_rate,
        ppl_floor=ppl_floor,
        ppl_projection=ppl_projection,
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
