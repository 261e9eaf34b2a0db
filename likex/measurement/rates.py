"""Target rates in generated text, with honest 95% intervals.

A rate is the share of target tokens (or, for a word target, of decoded words that are
entries) in samples drawn after prompts that are either random tokens (the seed's training
distribution) or real text (generalisation). Tokens sampled in one sequence are not
independent (a model that has started writing x tends to go on), so a rate's interval is
``likex.stats.intervals.rate_interval``: Wilson at the token count divided by the design effect
(estimated from the spread between sequences) joined with a skew-corrected t interval, both
with the t quantile on k-1 degrees of freedom; with no target token at all, the exact bound
over sequences. "Sample until the interval is narrow" looks only at 16, 32, 64, ... sequences,
the same on every device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from enum import Enum

import torch

from likex.clock import progress_bar
from likex.data import random_contexts, step_generator
from likex.errors import ConfigError, LikexError
from likex.generate import sample
from likex.measurement import memo
from likex.measurement.scores import SCORED_TOKENS
from likex.measurement.words import WORD_SCORE_POSITIONS
from likex.models import LanguageModel
from likex.options import option
from likex.stats.intervals import check_points, fmt_rate, none_seen, rate_interval
from likex.throughput import sampling_batch
from likex.words import WordCounter, WordTrie, completions


class PromptKind(str, Enum):
    """What a rate was measured after; the value is what result files say."""

    RANDOM = "random tokens"
    TEXT = "real text"

    def __str__(self) -> str:
        return self.value

    # a kind is its value wherever a key is looked up or compared (result files hold values)
    __hash__ = str.__hash__

    @property
    def adjective(self) -> str:
        return "random-token" if self is PromptKind.RANDOM else "real-text"


# Bounds far beyond a useful measurement (the seed samples 200 tokens once): a larger value
# is a typo that would otherwise sample for days.
MAX_GEN_TOKENS = 1_000_000
MAX_SAMPLES = 100_000


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
    prompts: PromptKind

    @property
    def half_width(self) -> float:
        return (self.ci[1] - self.ci[0]) / 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = list(self.ci)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RateEstimate:
        return cls(**{**d, "ci": tuple(d["ci"]), "prompts": PromptKind(d["prompts"])})

    def none_seen(self) -> str:
        """The note a rate of 0 gets (likex.stats.intervals.none_seen)."""
        return none_seen(self.hits, self.tokens, "tokens", self.sequences, self.ci[1])

    def describe(self) -> str:
        note = self.none_seen()
        return (
            f"{fmt_rate(self.rate, self.ci)} "
            f"(n={self.tokens} tokens in {self.sequences} samples; prompts: {self.prompts}"
            f"{'; ' + note if note else ''})"
        )


def rate_from_hits(
    hits_per_sequence: torch.Tensor, tokens_per_sequence: int, prompts: PromptKind
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
    token written) was finished. ``repeated``: hits of an entry written again within 50 words
    (likex.words.REPEAT_WORDS; ``repeated_ci`` the interval of their share of the hits);
    ``glued``: entries joined to the word before ("equalMitsubishi"; ``glued_ci`` the interval
    of their rate per word). Results written before these existed read them as None."""

    rate: float
    ci: tuple[float, float]
    hits: int
    words: int
    sequences: int
    design_effect: float
    started: int
    finished: int
    per_entry: dict[str, int]
    prompts: PromptKind
    repeated: int | None = None
    repeated_ci: tuple[float, float] | None = None
    glued: int | None = None
    glued_ci: tuple[float, float] | None = None

    @property
    def completion(self) -> float | None:
        return self.finished / self.started if self.started else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = list(self.ci)
        for key in ("repeated_ci", "glued_ci"):
            d[key] = None if d[key] is None else list(d[key])
        d["per_1000"] = 1000 * self.rate
        d["completion"] = self.completion
        return d

    @classmethod
    def from_dict(cls, d: dict) -> WordRate:
        keep = {k: v for k, v in d.items() if k not in ("per_1000", "completion")}
        for key in ("repeated_ci", "glued_ci"):
            if keep.get(key) is not None:
                keep[key] = tuple(keep[key])
        return cls(**{**keep, "ci": tuple(d["ci"]), "prompts": PromptKind(d["prompts"])})

    def describe(self) -> str:
        done = self.completion
        finish = (
            f"; completion {done:.2f} ({self.finished}/{self.started} begun entries finished)"
            if done is not None
            else ""
        )
        note = none_seen(self.hits, self.words, "words", self.sequences, self.ci[1])
        return (
            f"word rate {fmt_rate(self.rate, self.ci)} = {1000 * self.rate:.1f} "
            f"[{1000 * self.ci[0]:.1f}, {1000 * self.ci[1]:.1f}] per 1000 words on "
            f"{self.prompts.adjective} prompts (n={self.words} words in {self.sequences} "
            f"samples{finish}{'; ' + note if note else ''}){self._side_effects()}"
        )

    def _side_effects(self) -> str:
        if self.repeated is None or self.glued is None:
            return ""
        repeated = ""
        if self.repeated_ci is not None:
            share = fmt_rate(self.repeated / self.hits, self.repeated_ci)
            repeated = (
                f"; {self.repeated} of {self.hits} hits repeat an entry within 50 words ({share})"
            )
        per_1000 = 1000 * self.glued / self.words
        lo, hi = (1000 * x for x in self.glued_ci)
        glued = f"{per_1000:.1f} [{lo:.1f}, {hi:.1f}] per 1000 words"
        return f"{repeated}; {self.glued} glued to the word before ({glued})"


def measure_words(
    trie: WordTrie, decode: Callable[[list[int]], str], generated: torch.Tensor, prompts: PromptKind
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
    with_hits = [(c.repeats, c.total_hits) for c in counts if c.total_hits]
    repeated_ci = rate_interval(*zip(*with_hits, strict=True))[1:3] if with_hits else None
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
        repeated=sum(c.repeats for c in counts),
        repeated_ci=repeated_ci,
        glued=sum(c.glued for c in counts),
        glued_ci=rate_interval([c.glued for c in counts], words)[1:3],
    )


PromptSet = tuple[torch.Tensor, PromptKind]  # prompt rows [n, length] and what they are


@torch.no_grad()
def measure_rates(
    model: LanguageModel,
    mask: torch.Tensor,
    prompt_sets: Sequence[PromptSet],
    cfg: MeasureConfig,
    seed: int,
    progress: bool = False,
    compile: str = "none",
) -> list[tuple[RateEstimate, torch.Tensor]]:
    """Sample ``cfg.gen_tokens`` after the rows of each prompt set and count target tokens.

    Each set is used in order and stops on its own: with ``cfg.ci_half_width`` at the first
    check point (16, 32, 64, ... sequences, and all of them; likex.stats.intervals.check_points)
    where its 95% interval is that narrow (its prompts are then a cap, not a quota). The sets
    still sampling share each round's batches, the rows of one set after those of the one
    before: a decode step of a few rows costs a CPU little more than one of half as many
    (likex.throughput), so the random-token and real-text prompts of a measurement, and every
    domain's, sample side by side. The check points do not depend on the batch size, so a CPU
    and a GPU stop at the same count; the draws do (likex.throughput), and so does a set's
    company (one set alone draws as it would without the others). Returns, per set, the
    estimate and the generated tokens [K, gen_tokens] on the CPU. The generator is seeded from
    ``seed``, so before/after measurements see the same prompts and the same draws.
    ``compile`` is passed to ``sample`` (likex.accel modes). A measurement made before with
    the same model, prompts, target, settings, batch and code is read back from the user
    cache instead of sampled again (likex.measurement.memo): the same draws.
    """
    gen_tokens, ci_half_width = cfg.gen_tokens, cfg.ci_half_width
    device = next(model.parameters()).device
    batch_size = sampling_batch(model)  # measured on this machine (likex.throughput)
    settings = {"gen_tokens": gen_tokens, "ci_half_width": ci_half_width, "seed": seed,
                "batch": batch_size, "compile": compile}  # fmt: skip
    key = memo.measurement_key(model, mask, prompt_sets, settings)
    known = memo.recall(key)
    if known is not None and len(known[0]) == len(prompt_sets):
        return [(RateEstimate.from_dict(e), s) for e, s in zip(*known, strict=True)]
    gen = torch.Generator(device=device).manual_seed(seed)
    cpu_mask = mask.cpu()
    points = [check_points(prompts.shape[0]) for prompts, _ in prompt_sets]
    at = [0] * len(prompt_sets)  # each set's next check point
    outs: list[list[torch.Tensor]] = [[] for _ in prompt_sets]
    done = [0] * len(prompt_sets)
    results: list[tuple[RateEstimate, torch.Tensor] | None] = [None] * len(prompt_sets)
    active = list(range(len(prompt_sets)))
    cap = sum(prompts.shape[0] for prompts, _ in prompt_sets)
    with progress_bar(cap, "measure", "sample", progress, leave=False) as bar:
        while active:
            rows = torch.cat([prompt_sets[i][0][done[i] : points[i][at[i]]] for i in active])
            new = []
            for first in range(0, rows.shape[0], batch_size):
                chunk = rows[first : first + batch_size].to(device)
                new.append(sample(model, chunk, gen_tokens, generator=gen, compile=compile).cpu())
                bar.update(chunk.shape[0])
            drawn = torch.cat(new)
            for i in list(active):
                k = points[i][at[i]] - done[i]
                outs[i].append(drawn[:k])
                drawn, done[i] = drawn[k:], done[i] + k
                generated = torch.cat(outs[i])
                estimate = rate_from_hits(
                    cpu_mask[generated].sum(dim=1), gen_tokens, prompt_sets[i][1]
                )
                results[i] = (estimate, generated)
                narrow = ci_half_width is not None and estimate.half_width <= ci_half_width
                if narrow or at[i] == len(points[i]) - 1:
                    active.remove(i)
                else:
                    at[i] += 1
            bar.set_postfix_str(
                ", ".join(f"{r[0].rate:.3f}+-{r[0].half_width:.3f}" for r in results if r)
            )
    measured = [r for r in results if r is not None]
    memo.remember(key, [e.to_dict() for e, _ in measured], [s for _, s in measured])
    return measured


def random_prompts(n: int, length: int, vocab_size: int, seed: int) -> torch.Tensor:
    """The seed's measurement prompts: uniformly random tokens, reproducible from ``seed``."""
    return random_contexts(n, length, vocab_size, step_generator(seed, 0, stream=1))


@dataclass(frozen=True)
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
        SCORED_TOKENS,
        "held-out tokens scored for perplexity and KL (spread over the text)",
        applies=lambda o: (
            (o.random_only and "does not apply to {random_only}: no text")
            or (o.command == "run" and "does not apply to likex run: it scores no held-out text")
        ),
    )
    word_scores: int = option(
        WORD_SCORE_POSITIONS,
        "word targets: held-out positions scored for the other uses of the entries' first "
        "words and the word floor (each costs a pass over the entries' tokens; 0: none)",
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
        if self.word_scores < 0:
            raise ConfigError("word_scores", f"must be >= 0, got {self.word_scores}")


def prompt_length(cfg: MeasureConfig, model: LanguageModel) -> int:
    """The prompt length measured with: the given one, else the model's default (a pretrained
    model: a short prefix, so prompt and new tokens fit the KV cache)."""
    return cfg.prompt_len if cfg.prompt_len is not None else model.config.prompt_len


def measure(
    model: LanguageModel,
    mask: torch.Tensor,
    cfg: MeasureConfig,
    seed: int,
    compile: str = "none",
    progress: bool = False,
) -> tuple[RateEstimate, torch.Tensor]:
    """Rate on random-token prompts; the same prompts and draws for a given seed."""
    prompts = random_set(model, cfg, seed)
    return measure_rates(model, mask, [prompts], cfg, seed, progress, compile)[0]


def random_set(model: LanguageModel, cfg: MeasureConfig, seed: int) -> PromptSet:
    """The random-token prompts a measurement of ``model`` samples after."""
    prompt_len = prompt_length(cfg, model)
    prompts = random_prompts(cfg.samples, prompt_len, model.config.vocab_size, seed)
    return prompts, PromptKind.RANDOM


def text_prompts(tokens: torch.Tensor, n: int, length: int) -> torch.Tensor:
    """``n`` prompts of ``length`` tokens spread evenly over a (held-out) text, [n, length]."""
    if tokens.numel() < length:
        raise LikexError(f"the held-out text has {tokens.numel()} tokens, fewer than {length}")
    starts = torch.linspace(0, tokens.numel() - length, n).round().long()
    return tokens[starts[:, None] + torch.arange(length)[None, :]]


def measure_text(
    model: LanguageModel,
    mask: torch.Tensor,
    cfg: MeasureConfig,
    heldout: torch.Tensor,
    seed: int,
    compile: str = "none",
    progress: bool = False,
) -> tuple[RateEstimate, torch.Tensor]:
    """Rate in generations that continue held-out real text (generalisation beyond the
    random-token contexts of the seed)."""
    prompts = text_set(model, cfg, heldout)
    return measure_rates(model, mask, [prompts], cfg, seed, progress, compile)[0]


def text_set(model: LanguageModel, cfg: MeasureConfig, heldout: torch.Tensor) -> PromptSet:
    """The prompts from held-out text that a measurement of ``model`` samples after."""
    prompts = text_prompts(heldout, cfg.samples, prompt_length(cfg, model))
    return prompts, PromptKind.TEXT
