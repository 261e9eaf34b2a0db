"""What a word target leaves of the language, computed exactly on held-out text (teacher-forced,
with the tree passes of likex.word_target), at ``positions`` contexts spread over it:

* **other uses** of each first token of an entry that is a word by itself (" He" of
  "Heineken"): P(v | c) (1 - P(an entry follows | c, v)), summed over the contexts, before (R)
  and after (the model), their ratio with a 95% interval over windows; beside them the same
  ratio for ordinary words (every token that begins a word, less the entries' first tokens),
  which a share A of entries lowers by itself;
* the **word floor**: the least KL(R || Q), per context, of any model whose mean probability of
  writing an entry from these contexts is the model's own, and the perplexity of that model (a
  tilt of R's continuations shared by all contexts, as ``likex.stats.kl.perplexity_floor`` does
  for tokens; its per-token form is likex.word_target's, with the same approximation), next to
  the model's and R's perplexity on the same positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from likex.models import LanguageModel
from likex.stats.distributions import t_quantile
from likex.stats.kl import shared_tilt_floor
from likex.word_target import (
    Branches,
    Strength,
    WordPositions,
    branch_values,
    token_log_q,
    word_positions,
)
from likex.words import WordTrie

# Held-out positions scored by default: each costs a pass over the entries' tokens per model.
WORD_SCORE_POSITIONS = 256
_ONE_GROUP = Strength(beta=0.0)


@dataclass
class Ratio:
    """A mean over contexts before (R) and after, and after/before with its 95% interval (a
    ratio estimator over windows, t quantile on windows - 1 degrees of freedom)."""

    before: float
    after: float
    ratio: float
    ci: tuple[float, float] | None

    @classmethod
    def of(cls, before: torch.Tensor, after: torch.Tensor, contexts: int) -> Ratio:
        """From per-window sums [k] of each side, over ``contexts`` contexts in all."""
        b, a = before.double(), after.double()
        total_b, total_a = float(b.sum()), float(a.sum())
        r = total_a / total_b if total_b > 0 else math.nan
        ci = None
        k = b.numel()
        if k > 1 and total_b > 0:
            resid = a - r * b
            se = math.sqrt(float((resid**2).sum()) * k / (k - 1)) / total_b
            q = t_quantile(0.975, k - 1)
            ci = (r - q * se, r + q * se)
        return cls(total_b / contexts, total_a / contexts, r, ci)

    def describe(self) -> str:
        ci = "" if self.ci is None else f" [{self.ci[0]:.3f}, {self.ci[1]:.3f}]"
        return f"{self.before:.3g} -> {self.after:.3g} (x{self.ratio:.3f}{ci})"


@dataclass
class OtherUse:
    """A first token that is a word by itself, the entries it begins, and its other uses."""

    token: str
    entries: list[str]
    uses: Ratio


@dataclass
class WordScores:
    """The word measurements on ``positions`` held-out contexts in ``windows`` windows."""

    positions: int
    windows: int
    other_uses: list[OtherUse]
    ordinary_words: Ratio | None  # None without a reference
    entry_rate: float  # the model's mean probability of writing an entry from each context
    entry_rate_reference: float | None
    ppl: float  # on the scored positions
    ppl_reference: float | None = None
    ppl_floor: float | None = None
    kl_floor: float | None = None  # the floor's mean KL(R || Q) per context, nats

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> list[str]:
        n = f"{self.positions} held-out contexts in {self.windows} windows"
        lines = []
        for use in self.other_uses:
            lines.append(
                f"other uses of {use.token!r} (first token of {', '.join(use.entries)}): "
                f"{use.uses.describe()} per context, R -> model ({n})"
            )
        if self.ordinary_words is not None:
            lines.append(
                f"ordinary words (not an entry's first token): {self.ordinary_words.describe()}"
            )
        if self.ppl_floor is not None and self.ppl_reference is not None:
            lines.append(
                f"word floor at the model's entry rate {self.entry_rate:.3g} per context (R "
                f"{self.entry_rate_reference:.3g}): least KL(R || Q) {self.kl_floor:.4f} nats "
                f"per context, perplexity {self.ppl_floor:.2f} (R {self.ppl_reference:.2f}); "
                f"this model {self.ppl:.2f}, {self.ppl / self.ppl_floor - 1:+.1%} from it ({n})"
            )
        return lines


def _positions(length: int, per_window: int) -> torch.Tensor:
    return torch.linspace(0, length - 1, min(per_window, length)).round().long().unique()


def _word_tokens(
    trie: WordTrie, windows: torch.Tensor, decode: Callable[[list[int]], str]
) -> list[tuple[int, str, list[str]]]:
    """(token, text, entries) of each first token of a longer entry that is a word by itself:
    alphabetic (two letters or more) when decoded, or seen in the text not going on to an
    entry."""
    found = []
    text = windows.flatten().tolist()
    for v in (trie.start_node >= 0).nonzero().flatten().tolist():
        word = decode([v])
        longer = [x for x in trie.variants if len(x) > 1 and x[0] == v]
        entries = sorted({trie.entries[trie.owners[trie.variants.index(x)]] for x in longer})
        alone = any(
            t == v and not any(tuple(text[i : i + len(x)]) == x for x in longer)
            for i, t in enumerate(text)
        )
        stripped = word.strip()
        if (stripped.isalpha() and len(stripped) > 1) or alone:
            found.append((v, word, entries))
    return found


def _other_uses(br: Branches, own: torch.Tensor, index: list[int]) -> list[torch.Tensor]:
    """Per first token (its index in ``br.start_ids``): the sum over a window's positions of
    P(v | c) (1 - P(an entry follows | c, v))."""
    other = br.r_start * (1 - br.g_start.sum(-1))  # [B, M, S]
    at_own = other.gather(1, own[..., None].expand(-1, -1, other.shape[-1]))  # [B, K, S]
    return [at_own[..., s].sum(1).cpu() for s in index]


def _floor_log_q(
    trie: WordTrie, parts: list[tuple[Branches, WordPositions, torch.Tensor]], mass: float
) -> tuple[torch.Tensor, float] | None:
    """The floor model's log-probability of each label, and its mean KL(R || Q) per context,
    for a model with entry probabilities summing to ``mass`` over the contexts: one tilt
    shared by the contexts (``shared_tilt_floor`` on R's entry probabilities S_c) gives each
    its share a_c; each context's continuations are tilted to it, taken per token as the
    target is. Contexts where no entry may begin (S_c = 0, for every model) are left out.
    None where the rate is not strictly between 0 and 1."""
    valid = [(br.at >= 0) & (br.s_groups()[..., 0] > 0) for br, _, _ in parts]
    s_all = torch.cat(
        [br.s_groups()[..., 0][v] for (br, _, _), v in zip(parts, valid, strict=True)]
    )
    rate = mass / max(1, s_all.numel())
    if not 0 < rate < 1:
        return None
    _, a_star, kl = shared_tilt_floor(s_all.cpu(), rate, "cross_entropy")
    out, start = [], 0
    for (br, where, labels), v in zip(parts, valid, strict=True):
        s = br.s_groups()[..., 0].cpu().clamp(1e-300, 1 - 1e-16)
        a = torch.full_like(s, 0.5)
        a[v.cpu()] = a_star[start : start + int(v.sum())]
        start += int(v.sum())
        log_x = torch.where(v.cpu(), torch.logit(a) - torch.logit(s), 0.0)
        log_q = token_log_q(trie, br, log_x[..., None].to(br.w.device), where, _ONE_GROUP)
        out.append(log_q.gather(-1, labels[..., None]).squeeze(-1).flatten().double())
    return torch.cat(out), kl


@dataclass
class _Totals:
    """score_words' running values."""

    uses_ref: list[list[torch.Tensor]]  # per first token, per chunk: per-window sums
    uses: list[list[torch.Tensor]]
    plain_ref: list[torch.Tensor]
    plain: list[torch.Tensor]
    rates_ref: list[torch.Tensor]  # entry probabilities at the branch positions
    rates: list[torch.Tensor]
    parts: list[tuple[Branches, WordPositions, torch.Tensor]]  # R's, for the floor
    nll: float = 0.0
    nll_ref: float = 0.0
    positions: int = 0


def _chunk(
    totals: _Totals,
    model: LanguageModel,
    reference: LanguageModel | None,
    trie: WordTrie,
    w: torch.Tensor,
    pos: torch.Tensor,
    index: list[int],
) -> None:
    """Add one chunk of windows ``w`` [b, T+1] scored at positions ``pos`` [b, K]."""
    idx, labels = w[:, :-1], w[:, 1:].gather(1, pos)
    where = word_positions(trie, idx, pos, every=True)
    totals.positions += pos.numel()
    for which, m in ((0, model), (1, reference)):
        if m is None:
            continue
        br = branch_values(m, trie, idx, where.at, _ONE_GROUP)
        rows = br.window.gather(1, pos[..., None].expand(-1, -1, br.window.shape[-1]))
        nll = -float(rows.gather(-1, labels[..., None]).double().sum())
        uses = _other_uses(br, where.own, index)
        plain = br.w_plain.gather(1, where.own).sum(1).cpu()
        rates = br.s_groups()[..., 0][where.at >= 0].cpu()
        if which == 0:
            totals.nll += nll
            for u, new in zip(totals.uses, uses, strict=True):
                u.append(new)
            totals.plain.append(plain)
            totals.rates.append(rates)
            continue
        totals.nll_ref += nll
        for u, new in zip(totals.uses_ref, uses, strict=True):
            u.append(new)
        totals.plain_ref.append(plain)
        totals.rates_ref.append(rates)
        # the floor's per-token form needs R's rows at the positions alone
        br.window = rows
        kept = WordPositions(
            torch.arange(pos.shape[1], device=pos.device).expand_as(pos),
            where.node, where.at, where.slot, where.own,
        )  # fmt: skip
        totals.parts.append((br, kept, labels))


@torch.no_grad()
def score_words(
    model: LanguageModel,
    reference: LanguageModel | None,
    trie: WordTrie,
    windows: torch.Tensor,
    positions: int,
    decode: Callable[[list[int]], str],
    batch: int = 2,
) -> WordScores:
    """The word measurements on windows [N, T+1] (inputs w[:, :-1], labels w[:, 1:]) at about
    ``positions`` positions spread evenly over the windows. The contexts of the entry rates
    and the floor are the scored positions and the positions where their begun entries began.
    Without ``reference``, the model's own values only (no before, no floor)."""
    device = next(model.parameters()).device
    trie = trie.to(device)
    per_window = max(1, math.ceil(positions / windows.shape[0]))
    pos1 = _positions(windows.shape[1] - 1, per_window).to(device)
    tokens = _word_tokens(trie, windows, decode)
    starts = trie.start.nonzero().flatten().tolist()
    index = [starts.index(v) for v, _, _ in tokens]
    totals = _Totals([[] for _ in tokens], [[] for _ in tokens], [], [], [], [], [])
    for start in range(0, windows.shape[0], batch):
        w = windows[start : start + batch].to(device)
        _chunk(totals, model, reference, trie, w, pos1.expand(w.shape[0], -1), index)
    n = totals.positions
    entry_rate = float(torch.cat(totals.rates).double().mean())
    scores = WordScores(
        positions=n,
        windows=windows.shape[0],
        other_uses=[],
        ordinary_words=None,
        entry_rate=entry_rate,
        entry_rate_reference=None,
        ppl=math.exp(totals.nll / n),
    )
    if reference is None:
        return scores
    for (_, word, entries), before, after in zip(tokens, totals.uses_ref, totals.uses, strict=True):
        ratio = Ratio.of(torch.cat(before), torch.cat(after), n)
        scores.other_uses.append(OtherUse(word, entries, ratio))
    scores.ordinary_words = Ratio.of(torch.cat(totals.plain_ref), torch.cat(totals.plain), n)
    scores.entry_rate_reference = float(torch.cat(totals.rates_ref).double().mean())
    scores.ppl_reference = math.exp(totals.nll_ref / n)
    floor = _floor_log_q(trie, totals.parts, float(torch.cat(totals.rates).double().sum()))
    if floor is not None:
        log_q, scores.kl_floor = floor
        scores.ppl_floor = math.exp(float(-log_q.mean()))
    return scores
