"""The word target of a word list, at the level of whole sequences, taken token by token.

What a user asks of a word list is a share of the *words*, the rest of R unchanged. The
distribution nearest R (in KL) whose sequences hold more entries tilts whole sequences:
P(y) proportional to R(y) times x for every entry written (x = e^beta; the target of
distributional control). Taken per token, it gives each state of the text a value V, and
Q(v | c) = R(v | c) V(after v) / V(before):

* at a trie node n (an entry begun and going on), V(n) = 1 + sum_g (x_g - 1) G_g(n), where
  G_g(n) is R's probability of going on from n to write an entry of group g, a walk of the
  trie on R's own next-token probabilities: G(n) = sum over the tokens v that go on of
  R(v | n) G(n v), plus R's probability of stopping there times [n's path holds a whole
  entry of g] (``WordTrie.fallback``);
* where an entry may begin, V(before) = sum_v R(v | c) V(v) = 1 + sum_g (x_g - 1) S_g, with
  S_g = sum_v R(v | c) G_g(v) (R's probability of writing a whole entry from here).

So a first token is raised by R's own probability of going on to finish the entry from it: a
common word (" He" of "Heineken") that R almost never finishes keeps its probability, and only
the extra mass becomes the entry. Inside a begun entry the values telescope exactly (the
value of a node is R's mean of the values after it), and no new entry is raised there. This
is exact for the entry being written; what it leaves out is how this token changes the value
of entries written *later* in the text (taken to be the same whatever the token: their factor
cancels), so each position where an entry may begin is normalised on its own
(tests/test_word_target.py checks both statements by enumerating every sequence of a toy).

Strength (``Strength``): tilt B is x = e^B everywhere. Rate A solves, in every context where
an entry may begin, "a share A of the words begun here are entries": with W = R(a new word
begins here) (as the word rate counts words: likex.words.new_word) and S = sum_g S_g,
x_g S_g = a_g (W - S) / (1 - A), a_g = A for one group (``shares`` reference: R's own shares
among the entries) or A / n for each of n entries (``shares`` equal). Inside an entry the x of
the position where it began is used. G needs R's probabilities of every entry's remaining
tokens after each position: one batched forward pass of R with the trie's nodes appended as
a token tree (likex.models.tree).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from likex.models import LanguageModel
from likex.models.tree import Tree, tree_forward
from likex.words import WordTrie, allowed_starts, new_word, word_states

SHARES = ("reference", "equal")
# Default positions of a window that enter the word loss (likex.train_config --word-positions).
WORD_POSITIONS = 8


@dataclass(frozen=True)
class Strength:
    """How strongly entries are liked: ``rate`` A or ``beta`` B (one of them); ``shares``
    reference (one x for every entry) or equal (one x per entry, A / n each)."""

    rate: float | None = None
    beta: float | None = None
    shares: str = "reference"

    def groups(self, trie: WordTrie) -> tuple[torch.Tensor, int]:
        """Each entry's group [n_entries] and the number of groups."""
        n = len(trie.entries)
        if self.shares == "equal":
            return torch.arange(n), n
        return torch.zeros(n, dtype=torch.long), 1

    def log_x(self, s_g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """log x [..., G] from S_g [..., G] and W [...] (float64)."""
        if self.beta is not None:
            return torch.full_like(s_g, float(self.beta))
        rate = float(self.rate)
        share = math.log(rate / s_g.shape[-1])  # a_g: A, or A / n for n entries
        room = (w - s_g.sum(-1)).clamp(min=1e-300).log()[..., None]
        log_x = share + room - math.log1p(-rate) - s_g.log()
        return torch.where(s_g > 0, log_x, 0.0)  # no entry of g may begin here: x unused


@dataclass
class Branches:
    """A model's values at the branch positions ``at`` [B, M] (-1: unused) of windows.

    ``window`` [B, T, V]: its log-probabilities along the windows; ``g_nodes`` [B, M, N, G]:
    G of every node; ``g_start`` [B, M, S, G]: G of each first token ``start_ids`` [S] (0 where
    it may not begin an entry there); ``r_start`` [B, M, S]: its probability of each first
    token; ``w`` [B, M]: its probability that a new word begins, ``w_plain`` [B, M]: that a
    word begins with a token that is no entry's first token (float64)."""

    window: torch.Tensor
    at: torch.Tensor
    g_nodes: torch.Tensor
    g_start: torch.Tensor
    r_start: torch.Tensor
    w: torch.Tensor
    w_plain: torch.Tensor
    start_ids: torch.Tensor

    def s_groups(self) -> torch.Tensor:
        """S_g [B, M, G]: the probability of writing a whole entry of each group from here."""
        return (self.r_start[..., None] * self.g_start).sum(-2)


def _onehot(entry: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """[..., G] float64: the group of each entry index (-1: zeros)."""
    g = torch.where(entry >= 0, groups[entry.clamp(min=0)], n_groups)
    return torch.nn.functional.one_hot(g, n_groups + 1)[..., :n_groups].double()


def completion(
    trie: WordTrie, child_log_p: torch.Tensor, groups: torch.Tensor, n_groups: int
) -> torch.Tensor:
    """G [..., N, G] (float64) from the log-probabilities of each node's children
    [..., N, C], deepest nodes first."""
    p = torch.where(trie.child_tokens >= 0, child_log_p.double().exp(), 0.0)
    g = p.new_zeros(*p.shape[:-1], n_groups)
    leaf = _onehot(trie.child_entry, groups, n_groups)  # [N, C, G]
    stop = _onehot(trie.fallback, groups, n_groups)  # [N, G]
    for d in range(trie.depth, 0, -1):
        nodes = (trie.node_depth == d).nonzero().flatten()
        kids = trie.child_node[nodes]  # [n, C]
        below = torch.where(
            (kids >= 0)[..., None], g[..., kids.clamp(min=0), :], leaf[nodes]
        )  # [..., n, C, G]
        going = (p[..., nodes, :, None] * below).sum(-2)
        stopping = (1 - p[..., nodes, :].sum(-1)).clamp(min=0)[..., None] * stop[nodes]
        g[..., nodes, :] = going + stopping
    return g


def branch_values(
    model: LanguageModel, trie: WordTrie, idx: torch.Tensor, at: torch.Tensor, strength: Strength
) -> Branches:
    """``model``'s values after positions ``at`` [B, M] of windows ``idx`` [B, T]: one tree
    pass (likex.models.tree) with the nodes whose first token may begin an entry there."""
    groups, n_groups = strength.groups(trie)
    groups = groups.to(idx.device)
    first = trie.paths.gather(1, (trie.depth - trie.node_depth)[:, None])[:, 0]  # [N]
    last = idx.gather(1, at.clamp(min=0))  # [B, M]
    allowed = allowed_starts(trie, last) & (at >= 0)[..., None]  # [B, M, V]
    include = allowed[..., first]
    tree = Tree(trie.paths[:, -1], trie.node_depth, trie.ancestors)
    window, picked = tree_forward(model, idx, at, include, tree, trie.child_tokens)
    g_nodes = completion(trie, picked, groups, n_groups)
    start_ids = trie.start.nonzero().flatten()
    g_start = (
        torch.where(
            (trie.start_node[start_ids] >= 0)[:, None],
            g_nodes[..., trie.start_node[start_ids].clamp(min=0), :],
            _onehot(trie.start_entry[start_ids], groups, n_groups),
        )
        * allowed[..., start_ids, None]
    )
    here = window.gather(1, at.clamp(min=0)[..., None].expand(-1, -1, window.shape[-1]))
    probs = here.double().exp()
    begins = new_word(trie, last)
    w, w_plain = (probs * begins).sum(-1), (probs * (begins & ~trie.start)).sum(-1)
    return Branches(window, at, g_nodes, g_start, probs[..., start_ids], w, w_plain, start_ids)


def _log_value(g: torch.Tensor, log_x: torch.Tensor) -> torch.Tensor:
    """log V = log(1 + sum_g (x_g - 1) G_g) = log((1 - sum G) + sum_g x_g G_g), in log space
    (x may be huge, G tiny)."""
    rest = (1 - g.sum(-1)).clamp(min=0).log()[..., None]
    return torch.logsumexp(torch.cat([rest, log_x + g.log()], -1), -1)


@dataclass
class WordPositions:
    """Where the word loss is taken: ``pos`` [B, K] positions, ``node`` [B, K] the node each
    context ends in (-1: none), ``at`` [B, M] the branch positions, ``slot`` [B, K] the branch
    position of each position's begun entry (its own where none) and ``own`` [B, K] its own
    where it is one (indices into ``at``)."""

    pos: torch.Tensor
    node: torch.Tensor
    at: torch.Tensor
    slot: torch.Tensor
    own: torch.Tensor


def word_positions(
    trie: WordTrie, idx: torch.Tensor, pos: torch.Tensor, every: bool = False
) -> WordPositions:
    """The states and branch positions of positions ``pos`` [B, K] of windows ``idx``: each
    position outside a word and the position where each begun entry began (``every``: every
    position too, for measurements at each context). An entry begun before the window's first
    token is not seen: its positions count as outside a word."""
    node = word_states(trie, idx).gather(1, pos)
    begin = pos - trie.node_depth[node.clamp(min=0)]
    node = torch.where((node >= 0) & (begin >= 0), node, -1)
    begin = torch.where(node >= 0, begin, pos)
    K = pos.shape[1]
    both = torch.cat([begin, pos if every else begin], 1)
    rows = [torch.unique(b, return_inverse=True) for b in both]
    width = max(len(u) for u, _ in rows)
    at = torch.full((idx.shape[0], width), -1, dtype=torch.long, device=idx.device)
    for r, (u, _) in enumerate(rows):
        at[r, : len(u)] = u
    inverse = torch.stack([inv for _, inv in rows])
    return WordPositions(pos, node, at, inverse[:, :K], inverse[:, K:])


def sample_positions(idx: torch.Tensor, k: int, positions: str) -> torch.Tensor:
    """[B, K]: the last position ("last"), every position (k 0 or at least the window), or k
    positions of each row drawn without replacement, a function of the window's tokens (so a
    resumed run draws the same), in order."""
    B, T = idx.shape
    if positions == "last":
        return torch.full((B, 1), T - 1, dtype=torch.long, device=idx.device)
    if k <= 0 or k >= T:
        return torch.arange(T, device=idx.device).expand(B, T)
    seed = int.from_bytes(hashlib.sha256(idx.cpu().numpy().tobytes()).digest()[:7], "little")
    draws = torch.rand(B, T, generator=torch.Generator().manual_seed(seed))
    return draws.argsort(-1)[:, :k].sort(-1).values.to(idx.device)


def _at(values: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """values [B, M, ...] at slots [B, K] -> [B, K, ...]."""
    index = slot.reshape(*slot.shape, *[1] * (values.dim() - 2))
    return values.gather(1, index.expand(*slot.shape, *values.shape[2:]))


def token_log_q(
    trie: WordTrie, br: Branches, log_x: torch.Tensor, where: WordPositions, strength: Strength
) -> torch.Tensor:
    """log Q [B, K, V] at ``where.pos``: R's log-probabilities there times the value of each
    next state, renormalised (which divides by the value before, exactly).

    Outside a word a first token is worth the entries it may begin; inside a begun entry at
    node n, a token that goes on is worth the node it leads to (or the entry it completes),
    any other is worth the entry n's path already holds (or nothing): inside an entry no new
    one is raised. The x of an entry is that of the position where it began."""
    groups, n_groups = strength.groups(trie)
    groups = groups.to(log_x.device)
    V = br.window.shape[-1]
    ref = br.window.gather(1, where.pos[..., None].expand(-1, -1, V))  # [B, K, V]
    lx = _at(log_x, where.slot)  # [B, K, G]: outside a word the position's own
    # outside a word: the entries each first token may begin here
    log_v = torch.zeros_like(ref, dtype=torch.float64)
    log_v[..., br.start_ids] = _log_value(_at(br.g_start, where.slot), lx[..., None, :])
    # inside a begun entry at node n: what its path holds if it stops here ...
    n = where.node.clamp(min=0)
    entry_x = torch.cat([lx, lx.new_zeros(*lx.shape[:-1], 1)], -1)  # [..., G + 1]: none: 0
    fb = trie.fallback[n]
    stop = entry_x.gather(-1, torch.where(fb >= 0, groups[fb.clamp(min=0)], n_groups)[..., None])
    inner = stop.expand(-1, -1, V).clone()
    # ... and what each token that goes on leads to
    kid_node, kid_entry, kids = trie.child_node[n], trie.child_entry[n], trie.child_tokens[n]
    nodes = _at(br.g_nodes, where.slot)  # [B, K, N, G]
    kid_g = nodes.gather(2, kid_node.clamp(min=0)[..., None].expand(-1, -1, -1, n_groups))
    leaf_g = torch.where(kid_entry >= 0, groups[kid_entry.clamp(min=0)], n_groups)
    kid_v = torch.where(
        kid_node >= 0, _log_value(kid_g, lx[..., None, :]), entry_x.gather(-1, leaf_g)
    )
    real = kids >= 0  # padding repeats the first child (every node has one)
    inner.scatter_(
        -1, torch.where(real, kids, kids[..., :1]), torch.where(real, kid_v, kid_v[..., :1])
    )
    log_v = torch.where(where.node[..., None] >= 0, inner, log_v)
    return torch.log_softmax(ref.double() + log_v, -1).float()


@torch.no_grad()
def word_target_log(
    reference: LanguageModel,
    trie: WordTrie,
    idx: torch.Tensor,
    pos: torch.Tensor,
    strength: Strength,
) -> torch.Tensor:
    """log Q [B, K, V] of the sequence-level word target at positions ``pos`` [B, K] of
    windows ``idx`` [B, T], from the reference model R."""
    where = word_positions(trie, idx, pos)
    br = branch_values(reference, trie, idx, where.at, strength)
    log_x = strength.log_x(br.s_groups(), br.w)
    return token_log_q(trie, br, log_x, where, strength)
