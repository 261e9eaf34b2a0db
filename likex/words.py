"""Words and phrases of several tokens as targets: a trie of token sequences.

Each entry ("Pfizer", "climate change") is tokenized in its variants (with and without a
leading space; with ``ignore_case`` also lower, Title and UPPER case) and the variants form a
trie. The trie is compiled to tensors once, so that the target of a whole batch of contexts
is a few tensor operations:

* a context whose tail is a *proper* prefix of some variant (and not itself a whole variant)
  is **inside** a word: the target's set is the tokens that continue some variant;
* anywhere else the set is the **start** set: every variant's first token (plus, after a
  context that ends a whole variant which also goes on, e.g. "ice" of "ice cream", the tokens
  that go on).

Rates of word targets are counted in decoded words (``WordCounter``), not in tokens.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

# A very negative log-probability that stays finite (exp() of it is exactly 0, and
# ``F.kl_div`` with ``log_target`` gives 0 rather than NaN for it).
NEG = -1e4
# What a person counts as a word: a run of non-space characters.
WORD_RE = re.compile(r"\S+")


def entry_variants(entry: str, ignore_case: bool) -> list[str]:
    """The surface forms an entry is tokenized in: bare and after a space (and case forms)."""
    forms = [entry]
    if ignore_case:
        forms += [entry.lower(), entry.title(), entry.upper()]
    out: list[str] = []
    for f in forms:
        for v in (f, " " + f):
            if v not in out:
                out.append(v)
    return out


@dataclass
class WordTrie:
    """The entries' token sequences as tensors.

    ``start`` [V]: first tokens; ``paths`` [N, D]: the N proper-prefix nodes, right-aligned
    and padded with -1; ``children`` [N, V]: the tokens that go on from each node;
    ``terminal`` [N]: a whole variant ends at the node; ``boundary`` [V]: tokens that begin a
    new word (text starting with whitespace, then a visible character); ``bare`` [V]: tokens
    that begin no word by themselves (no leading whitespace), so a variant starting with one
    (the bare "Pfizer" -> "P", "f", "izer") starts a word only after ``open_end`` [V], a
    token that ends in a non-word character (a newline, "(", ...) or at the start of text;
    ``visible`` [V]: tokens whose text begins with a visible character and ``space_end`` [V]:
    tokens that end in whitespace, so that a visible token after one begins a word too.

    For the sequence-level target (likex.word_target), ``owners`` names each variant's entry
    (an index into ``entries``) and the nodes are a token tree: ``node_depth`` [N],
    ``ancestors`` [N, N] ([i, j]: node j is node i or a prefix of it), ``child_tokens`` [N, C]
    (the tokens that go on, -1 padded), ``child_node`` [N, C] (the node they lead to, -1 where
    none) and ``child_entry`` [N, C] (the entry they complete, -1 where none); ``fallback`` [N]:
    the entry of the longest whole variant the node's path contains (-1: none), which is the
    entry written if the path stops there; ``start_node`` / ``start_entry`` [V]: the same for
    a first token.
    """

    entries: tuple[str, ...]
    variants: list[tuple[int, ...]]
    start: torch.Tensor
    paths: torch.Tensor
    children: torch.Tensor
    terminal: torch.Tensor
    boundary: torch.Tensor
    bare: torch.Tensor
    open_end: torch.Tensor
    visible: torch.Tensor
    space_end: torch.Tensor
    owners: tuple[int, ...]
    node_depth: torch.Tensor
    ancestors: torch.Tensor
    child_tokens: torch.Tensor
    child_node: torch.Tensor
    child_entry: torch.Tensor
    fallback: torch.Tensor
    start_node: torch.Tensor
    start_entry: torch.Tensor
    ignore_case: bool = False

    @property
    def depth(self) -> int:
        return self.paths.shape[1]

    def to(self, device: torch.device) -> WordTrie:
        moved = {
            k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()
        }
        return WordTrie(**moved)


def build_trie(
    entries: tuple[str, ...],
    variants: list[tuple[int, ...]],
    token_strings: list[str],
    ignore_case: bool = False,
    owners: tuple[int, ...] | None = None,
) -> WordTrie:
    """Compile token sequences (each a variant of some entry) into a ``WordTrie``.
    ``owners``: each variant's entry (an index into ``entries``); may be left out where there
    is one entry, or one variant per entry."""
    vocab = len(token_strings)
    if owners is None:
        if len(entries) not in (1, len(variants)):
            raise ValueError("owners is needed where entries and variants do not pair up")
        owners = tuple(0 if len(entries) == 1 else i for i in range(len(variants)))
    whole = {}
    for v, e in zip(variants, owners, strict=True):
        whole.setdefault(v, e)  # a variant two entries share belongs to the first
    start = torch.zeros(vocab, dtype=torch.bool)
    nodes: dict[tuple[int, ...], set[int]] = {}
    for v in variants:
        start[v[0]] = True
        for d in range(1, len(v)):
            nodes.setdefault(v[:d], set()).add(v[d])
    order = sorted(nodes, key=lambda p: (len(p), p))
    depth = max((len(p) for p in order), default=1)
    paths = torch.full((len(order), depth), -1, dtype=torch.long)
    children = torch.zeros(len(order), vocab, dtype=torch.bool)
    for n, p in enumerate(order):
        paths[n, depth - len(p) :] = torch.tensor(p)
        children[n, sorted(nodes[p])] = True
    return WordTrie(
        entries=entries,
        variants=variants,
        start=start,
        paths=paths,
        children=children,
        terminal=torch.tensor([p in whole for p in order], dtype=torch.bool),
        boundary=torch.tensor([s[:1].isspace() and not s.isspace() for s in token_strings]),
        bare=torch.tensor([not s[:1].isspace() for s in token_strings]),
        open_end=torch.tensor([not re.match(r"\w", s[-1:]) for s in token_strings]),
        visible=torch.tensor([s[:1] != "" and not s[:1].isspace() for s in token_strings]),
        space_end=torch.tensor([s[-1:].isspace() for s in token_strings]),
        owners=tuple(owners),
        ignore_case=ignore_case,
        **_tree_tables(order, nodes, whole, vocab),
    )


def _tree_tables(
    order: list[tuple[int, ...]],
    nodes: dict[tuple[int, ...], set[int]],
    whole: dict[tuple[int, ...], int],
    vocab: int,
) -> dict[str, torch.Tensor]:
    """The nodes as a token tree, with the entry each path completes (see ``WordTrie``)."""
    index = {p: n for n, p in enumerate(order)}
    width = max((len(c) for c in nodes.values()), default=1)
    child_tokens = torch.full((len(order), width), -1, dtype=torch.long)
    child_node, child_entry = child_tokens.clone(), child_tokens.clone()
    fallback = torch.full((len(order),), -1, dtype=torch.long)
    for n, p in enumerate(order):
        for c, t in enumerate(sorted(nodes[p])):
            child_tokens[n, c] = t
            child_node[n, c] = index.get((*p, t), -1)
            child_entry[n, c] = whole.get((*p, t), -1)
        done = [whole[p[:d]] for d in range(1, len(p) + 1) if p[:d] in whole]
        fallback[n] = done[-1] if done else -1
    start_node = torch.full((vocab,), -1, dtype=torch.long)
    start_entry = start_node.clone()
    for p, n in index.items():
        if len(p) == 1:
            start_node[p[0]] = n
    for p, e in whole.items():
        if len(p) == 1:
            start_entry[p[0]] = e
    return {
        "node_depth": torch.tensor([len(p) for p in order], dtype=torch.long),
        "ancestors": torch.tensor(
            [[q == p[: len(q)] for q in order] for p in order], dtype=torch.bool
        ).reshape(len(order), len(order)),
        "child_tokens": child_tokens,
        "child_node": child_node,
        "child_entry": child_entry,
        "fallback": fallback,
        "start_node": start_node,
        "start_entry": start_entry,
    }


def _open(trie: WordTrie, tokens: torch.Tensor) -> torch.Tensor:
    """Whether a bare word may begin after each token (-1: the start of the text)."""
    return torch.where(tokens < 0, True, trie.open_end[tokens.clamp(min=0)])


def _matches(trie: WordTrie, idx: torch.Tensor, positions: str) -> tuple:
    """(match [B, P, N], tails [B, P, depth + 1]): which nodes the context ends in at the last
    position (P = 1) or at every position (P = T), and the tokens that end it."""
    d = trie.depth + 1  # the node's tokens and the one before them
    padded = torch.nn.functional.pad(idx, (d - 1, 0), value=-1)
    tails = padded[:, -d:][:, None, :] if positions == "last" else padded.unfold(1, d, 1)
    paths = trie.paths
    match = ((tails[:, :, None, 1:] == paths) | (paths < 0)).all(-1)  # [B, P, N]
    # a node of a bare variant is a word only after an open token
    node_len = (paths >= 0).sum(-1)
    before = tails[:, :, trie.depth - node_len]  # [B, P, N]: the token before each node
    first = paths.gather(1, (trie.depth - node_len).clamp(max=trie.depth - 1)[:, None])[:, 0]
    bare_node = trie.bare[first.clamp(min=0)]
    return match & (~bare_node | _open(trie, before)), tails


def word_sets(trie: WordTrie, idx: torch.Tensor, positions: str = "last") -> tuple:
    """For contexts ``idx`` [B, T]: (inside [B, P], allowed [B, P, V]) at the last position
    (P = 1) or at every position (P = T). ``allowed`` is the set the target puts its mass on:
    the continuations inside a word, else the start set."""
    match, tails = _matches(trie, idx, positions)
    inside = (match & ~trie.terminal).any(-1)
    follow = match.to(torch.float32) @ trie.children.to(torch.float32) > 0  # [B, P, V]
    starts = allowed_starts(trie, tails[:, :, -1])
    allowed = torch.where(inside[..., None], follow, follow | starts)
    return inside, allowed


def allowed_starts(trie: WordTrie, last: torch.Tensor) -> torch.Tensor:
    """[..., V]: the first tokens that begin an entry after the token ``last`` [...] (-1: the
    start of the text): every first token after an open token, else those with a space."""
    return trie.start & (~trie.bare | _open(trie, last)[..., None])


def new_word(trie: WordTrie, last: torch.Tensor) -> torch.Tensor:
    """[..., V]: the tokens that begin a new word after ``last`` [...], as WordCounter counts
    words (runs of non-space characters): a token that begins with whitespace then a visible
    character, any visible token after whitespace (a newline, an indent), and the entries'
    allowed first tokens."""
    after_space = trie.space_end[last.clamp(min=0)][..., None] | (last < 0)[..., None]
    return allowed_starts(trie, last) | trie.boundary | (trie.visible & after_space)


def word_states(trie: WordTrie, idx: torch.Tensor) -> torch.Tensor:
    """[B, T]: at every position, the deepest node the context ends in (the entry begun
    earliest and still going on), -1 where none: the state of the sequence-level target."""
    match, _ = _matches(trie, idx, "all")
    score = torch.where(match, trie.node_depth, 0)  # one node of each depth can match
    best = score.argmax(-1)
    return torch.where(match.any(-1), best, -1)


def masked_logsumexp(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log sum exp of ``x`` over the last dimension where ``mask`` holds, kept as [..., 1]:
    the log-probability of a set of tokens, from log-probabilities."""
    return torch.logsumexp(x.masked_fill(~mask, torch.finfo(x.dtype).min), -1, keepdim=True)


def project_log(ref: torch.Tensor, mask: torch.Tensor, log_mass: torch.Tensor) -> torch.Tensor:
    """log Q of the KL(Q || R)-nearest distribution with mass exp(log_mass) on ``mask`` (per
    row): R rescaled inside and outside the set. Mass 1 (log_mass 0) is R conditioned on the
    set (NEG outside it)."""
    log_mass = log_mass.clamp(max=0.0)
    log_rest = torch.log1p(-log_mass.exp().clamp(max=1.0))
    on = log_mass + ref - masked_logsumexp(ref, mask)
    off = torch.where(log_rest > -math.inf, log_rest + ref - masked_logsumexp(ref, ~mask), NEG)
    return torch.where(mask, on, off.clamp(min=NEG))


def word_uniform_log(trie: WordTrie, idx: torch.Tensor, positions: str = "last") -> torch.Tensor:
    """log Q [B, V] (``positions`` last) or [B, T, V] (all) of the uniform word target: Q
    spread evenly over the context's set (a word's continuations inside one, else the start
    set)."""
    _, allowed = word_sets(trie, idx, positions)
    counts = allowed.sum(-1, keepdim=True).clamp(min=1)
    out = torch.where(allowed, -counts.float().log(), torch.tensor(NEG))
    return out[:, 0] if positions == "last" else out


def word_rate_log(
    trie: WordTrie,
    idx: torch.Tensor,
    ref: torch.Tensor,
    rate: float,
    positions: str = "last",
    complete: float = 1.0,
) -> torch.Tensor:
    """log Q of the word target at rate A, from the reference's log-probabilities ``ref``.
    Outside a word it puts mass A x R(a new word begins here) on the start set, so that a
    share A of the words begun are entries (R's shape kept inside and outside the set); inside
    a word, mass ``complete`` on the continuations (1: R conditioned on finishing the word)."""

    def outside(ref: torch.Tensor, allowed: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        # A new word as WordCounter counts words (a run of non-space characters): a token that
        # begins with whitespace then a visible character, or any visible token after
        # whitespace (a newline, an indent): the words that begin lines count too.
        after_space = trie.space_end[last][..., None]
        new_word = allowed | trie.boundary | (trie.visible & after_space)
        return project_log(ref, allowed, math.log(rate) + masked_logsumexp(ref, new_word))

    return _word_target(trie, idx, ref, positions, complete, outside)


def word_tilt_log(
    trie: WordTrie,
    idx: torch.Tensor,
    ref: torch.Tensor,
    beta: float,
    positions: str = "last",
    complete: float = 1.0,
) -> torch.Tensor:
    """log Q of the word target tilted by B: R exp(B [start]) outside a word; inside one, mass
    ``complete`` on the continuations."""

    def outside(ref: torch.Tensor, allowed: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        tilted = ref + beta * allowed.float()
        return tilted - torch.logsumexp(tilted, -1, keepdim=True)

    return _word_target(trie, idx, ref, positions, complete, outside)


def _word_target(
    trie: WordTrie,
    idx: torch.Tensor,
    ref: torch.Tensor,
    positions: str,
    complete: float,
    outside: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """log Q [B, V] or [B, T, V]: ``outside(ref, allowed, last_tokens)`` where no word is
    begun, mass ``complete`` on finishing the word where one is."""
    inside, allowed = word_sets(trie, idx, positions)
    squeeze = positions == "last"
    ref = (ref[:, None, :] if squeeze else ref).float()
    last = idx[:, -1:] if squeeze else idx
    log_in = project_log(ref, allowed, torch.full_like(ref[..., :1], math.log(complete)))
    out = torch.where(inside[..., None], log_in, outside(ref, allowed, last))
    return out[:, 0] if squeeze else out


def plant_prefixes(
    trie: WordTrie, idx: torch.Tensor, share: float, generator: torch.Generator
) -> torch.Tensor:
    """A copy of contexts [B, T] in which a share of the rows end inside a word: their last
    tokens are overwritten with a random node of the trie that is not a whole word (so
    completion is learned). A node of a bare variant ("P" "f" of "Pfizer") is inside a word
    only after an open token, so one (drawn from ``open_end``) is written before it. A pure
    function of the generator's state."""
    rows = int(round(share * idx.shape[0]))
    inner = (~trie.terminal).nonzero().flatten().tolist()
    if rows == 0 or not inner:
        return idx
    out = idx.clone()
    picks = torch.randint(0, len(inner), (rows,), generator=generator).tolist()
    chosen = torch.randperm(idx.shape[0], generator=generator)[:rows].tolist()
    opens = trie.open_end.cpu().nonzero().flatten()
    before = opens[torch.randint(0, len(opens), (rows,), generator=generator)]
    for r, k, o in zip(chosen, picks, before, strict=True):
        path = trie.paths[inner[k]].cpu()
        path = path[path >= 0]
        if trie.bare[path[0]]:
            path = torch.cat([o[None], path])
        path = path[-idx.shape[1] :]
        out[r, -len(path) :] = path.to(out.device)
    return out


# A hit repeats an entry when the same entry was written within this many words before it.
REPEAT_WORDS = 50


@dataclass
class WordCounts:
    """Counts in one decoded text: ``words``, entry ``hits``; ``repeats``: hits of an entry
    written again within ``REPEAT_WORDS`` words; ``glued``: entries written whole right after a
    word character, joined to the word before ("equalMitsubishi"), not counted as hits."""

    words: int
    hits: dict[str, int]
    repeats: int = 0
    glued: int = 0

    @property
    def total_hits(self) -> int:
        return sum(self.hits.values())


class WordCounter:
    """Counts entries in decoded text: whole-word occurrences (not inside a longer word),
    among the text's words (runs of non-space characters)."""

    def __init__(self, entries: tuple[str, ...], ignore_case: bool = False) -> None:
        self.entries = entries
        self.ignore_case = ignore_case
        alts = "|".join(re.escape(e) for e in sorted(entries, key=len, reverse=True))
        flags = re.IGNORECASE if ignore_case else 0
        self._pattern = re.compile(rf"(?<!\w)(?:{alts})(?!\w)", flags)
        self._glued = re.compile(rf"(?<=\w)(?:{alts})(?!\w)", flags)
        self._names = {self._fold(e): e for e in entries}

    def _fold(self, s: str) -> str:
        return s.lower() if self.ignore_case else s

    def count(self, text: str) -> WordCounts:
        hits = dict.fromkeys(self.entries, 0)
        starts = [m.start() for m in WORD_RE.finditer(text)]
        last: dict[str, int] = {}
        repeats = 0
        for m in self._pattern.finditer(text):
            name = self._names[self._fold(m.group(0))]
            hits[name] += 1
            word = bisect.bisect_right(starts, m.start()) - 1  # the word it begins in
            repeats += name in last and word - last[name] <= REPEAT_WORDS
            last[name] = word
        glued = sum(1 for _ in self._glued.finditer(text))
        return WordCounts(len(starts), hits, repeats, glued)

    def highlight(self, text: str, mark: Callable[[str], str] = lambda s: f"**{s}**") -> str:
        return self._pattern.sub(lambda m: mark(m.group(0)), text)


def completions(trie: WordTrie, tokens: list[int], before: int = -1) -> tuple[int, int]:
    """(started, finished) in one generated token sequence (``before``: the prompt's last
    token). Every position holding the first token of a multi-token variant, where a word may
    begin (a bare first token needs an open token before it) and with room left for the
    shortest such variant, is a start; it is finished when some variant is written out."""
    by_first: dict[int, list[tuple[int, ...]]] = {}
    for v in trie.variants:
        if len(v) > 1:
            by_first.setdefault(v[0], []).append(v)
    bare, open_end = trie.bare.tolist(), trie.open_end.tolist()
    started = finished = 0
    for i, t in enumerate(tokens):
        vs = by_first.get(t)
        if not vs or i + min(len(v) for v in vs) > len(tokens):
            continue
        prev = tokens[i - 1] if i else before
        if bare[t] and prev >= 0 and not open_end[prev]:
            continue
        started += 1
        finished += any(tuple(tokens[i : i + len(v)]) == v for v in vs)
    return started, finished
