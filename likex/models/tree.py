"""Tree attention: a window and, after chosen positions of it, the branches of a token tree
(a trie's nodes), all in one forward pass.

Each branch token attends to the window up to its position and to the branch tokens above it,
at the position it would have if the branch were written right after that position. So one
pass gives, for every chosen position and every node, exactly what a plain forward pass of
"the window up to the position, then the node's tokens" gives (tests/test_tree.py checks it
on both kinds of model), at the cost of one token per node instead of a whole window per
position and node. It runs any ``LanguageModel`` through its ``attn_mask``/``position_ids``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from likex.models import LanguageModel

# A log-probability that stands for "not computed" (see likex.words.NEG).
NEG = -1e4
# Tokens per forward pass: each holds a [V] row of float32 log-probabilities (and the model's
# own logits), so a pass is bounded by rows x vocabulary rather than by tokens alone.
ROW_BUDGET = 2**26


@dataclass(frozen=True)
class Tree:
    """N nodes of a token tree: ``tokens`` [N], each node's own token; ``depth`` [N], 1 for a
    node right after the position; ``ancestors`` [N, N], [i, j] when node j is node i or above
    it (so a node and all its ancestors spell its path from the position)."""

    tokens: torch.Tensor
    depth: torch.Tensor
    ancestors: torch.Tensor


@dataclass
class _Job:
    row: int
    slots: list[int]
    nodes: list[tuple[int, int]]  # (slot, node) pairs, in order


def _jobs(at: torch.Tensor, include: torch.Tensor, cap: int) -> list[_Job]:
    """Per row, its (slot, node) pairs split into jobs of at most ``cap`` nodes, a slot's nodes
    kept together (a node needs its ancestors in the same pass). Every row gets a job."""
    jobs = []
    for r in range(at.shape[0]):
        job = _Job(r, [], [])
        for m in (at[r] >= 0).nonzero().flatten().tolist():
            nodes = [(m, n) for n in include[r, m].nonzero().flatten().tolist()]
            if job.nodes and len(job.nodes) + len(nodes) > cap:
                jobs.append(job)
                job = _Job(r, [], [])
            job.slots.append(m)
            job.nodes += nodes
        jobs.append(job)
    return jobs


def _inputs(
    idx: torch.Tensor, at: torch.Tensor, tree: Tree, jobs: list[_Job], extra: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens [J, T + extra], position ids and the [J, L, L] mask of a pass's jobs. A padding
    token sees only itself (its row is never read)."""
    T, L, device = idx.shape[1], idx.shape[1] + extra, idx.device
    tokens = torch.zeros(len(jobs), L, dtype=torch.long, device=device)
    pos = torch.zeros(len(jobs), L, dtype=torch.long, device=device)
    mask = torch.eye(L, dtype=torch.bool, device=device).repeat(len(jobs), 1, 1)
    causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    keys = torch.arange(T, device=device)
    for j, job in enumerate(jobs):
        tokens[j, :T], pos[j, :T], mask[j, :T, :T] = idx[job.row], keys, causal
        if not job.nodes:
            continue
        slot = torch.tensor([m for m, _ in job.nodes], device=device)
        node = torch.tensor([n for _, n in job.nodes], device=device)
        where = at[job.row, slot]
        E = len(job.nodes)
        tokens[j, T : T + E] = tree.tokens[node]
        pos[j, T : T + E] = where + tree.depth[node]
        mask[j, T : T + E, :T] = keys[None, :] <= where[:, None]
        mask[j, T : T + E, T : T + E] = (slot[:, None] == slot[None, :]) & tree.ancestors[node][
            :, node
        ]
    return tokens, pos, mask


@torch.no_grad()
def tree_forward(
    model: LanguageModel,
    idx: torch.Tensor,
    at: torch.Tensor,
    include: torch.Tensor,
    tree: Tree,
    pick: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's log-probabilities on windows ``idx`` [B, T] and after their branches.

    ``at`` [B, M]: positions (slot m of row b is the context idx[b, :at+1]; -1: unused);
    ``include`` [B, M, N]: the nodes to evaluate after each position (closed under ancestors);
    ``pick`` [N, C]: the tokens whose log-probability is wanted after each node (-1: none).
    Returns the window's own log-probabilities [B, T, V] and, after node n of slot m, the
    log-probabilities of ``pick[n]`` [B, M, N, C] (NEG where not evaluated)."""
    B, T = idx.shape
    tree = Tree(*(t.to(idx.device) for t in (tree.tokens, tree.depth, tree.ancestors)))
    pick = pick.to(idx.device)
    budget = max(T + 1, ROW_BUDGET // model.config.vocab_size)
    jobs = _jobs(at, include.to(idx.device), max(1, budget - T))
    window: torch.Tensor | None = None
    picked = torch.full((B, at.shape[1], *pick.shape), NEG, device=idx.device)
    start = 0
    while start < len(jobs):
        # as many jobs as fit the budget, each padded to the longest
        stop, longest = start + 1, len(jobs[start].nodes)
        while stop < len(jobs):
            widest = max(longest, len(jobs[stop].nodes))
            if (stop + 1 - start) * (T + widest) > budget:
                break
            stop, longest = stop + 1, widest
        chunk = jobs[start:stop]
        tokens, pos, mask = _inputs(idx, at, tree, chunk, longest)
        out = model(tokens, positions="all", attn_mask=mask, position_ids=pos)
        if window is None:
            window = out.new_empty(B, T, out.shape[-1])
        for j, job in enumerate(chunk):
            window[job.row] = out[j, :T]
            if job.nodes:
                slot = torch.tensor([m for m, _ in job.nodes], device=idx.device)
                node = torch.tensor([n for _, n in job.nodes], device=idx.device)
                want = pick[node]  # [E, C]
                rows = out[j, T : T + len(job.nodes)].gather(-1, want.clamp(min=0))
                picked[job.row, slot, node] = torch.where(want >= 0, rows, NEG)
        start = stop
    return window, picked
