"""The sequence-level word target (likex.word_target), checked by enumerating every sequence of
a toy vocabulary: exact where one entry can begin, the per-token formula where several can; a
common word that begins an entry keeps its other uses; rates and equal shares land."""

import itertools
import math

import pytest
import torch

from likex.models.gpt import build_model, preset_config
from likex.objective import Rate, StepLoss
from likex.target import TargetSet
from likex.word_target import Strength, sample_positions, word_target_log
from likex.words import build_trie

# --- exact: a horizon where one entry can begin ------------------------------------------------

# Bare entries only begin after an open token ("("), which R never writes: in the continuation of
# a prompt ending in "(", an entry can begin at the first position alone.
OPEN_STR = ["(", "a", "b", "c", "d", "e", " g"]
# "a" is whole and the start of "ab" and "acd" (the longest written counts, as WordCounter does)
OPEN_VARIANTS = [(1, 2), (1, 3, 4), (1,), (5,)]
OPEN_ENTRIES = ("ab", "acd", "a", "e")


class NoOpen(torch.nn.Module):
    """A model that never writes token 0."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, idx, positions="all", **kw):
        lp = self.model(idx, positions=positions, **kw).clone()
        lp[..., 0] = -math.inf
        return torch.log_softmax(lp, -1)


def _entry(y: tuple[int, ...]) -> int | None:
    """The entry written at the start of y (longest first), or None."""
    for e in (1, 0, 2, 3):
        if y[: len(OPEN_VARIANTS[e])] == OPEN_VARIANTS[e]:
            return e
    return None


@pytest.fixture(scope="module")
def one_begin():
    torch.manual_seed(0)
    R = NoOpen(build_model(preset_config("tiny", vocab_size=7, block_size=16), 3).eval())
    trie = build_trie(OPEN_ENTRIES, OPEN_VARIANTS, OPEN_STR)
    prompt, L = [1, 2, 0], 3  # every entry begun at the first position ends inside L
    ys = list(itertools.product(range(1, 7), repeat=L))
    idx = torch.tensor([prompt + list(y[:-1]) for y in ys])
    pos = torch.arange(len(prompt) - 1, len(prompt) - 1 + L).expand(len(ys), L)
    with torch.no_grad():
        full = torch.tensor([prompt + list(y) for y in ys])
        r = R(full[:, :-1], positions="all")[:, len(prompt) - 1 :]
        log_r = r.gather(-1, full[:, len(prompt) :, None]).squeeze(-1).double().sum(-1)
    return R, trie, ys, idx, pos, log_r


def _log_q(R, trie, ys, idx, pos, strength):
    lq = word_target_log(R, trie, idx, pos, strength)
    seq = lq.gather(-1, torch.tensor(ys)[..., None]).squeeze(-1).double().sum(-1)
    return seq, lq[0, 0].double().exp()


def test_per_token_target_is_the_sequence_tilt_where_one_entry_can_begin(one_begin):
    """Q(y), the product of the per-token target, equals R(y) e^(B N(y)) / Z for every
    sequence y of the horizon (N: entries written, Z summed over all of them)."""
    R, trie, ys, idx, pos, log_r = one_begin
    for beta in (2.0, -1.0):
        log_q, _ = _log_q(R, trie, ys, idx, pos, Strength(beta=beta))
        n = torch.tensor([_entry(y) is not None for y in ys], dtype=torch.float64)
        log_p = log_r + beta * n
        log_p -= torch.logsumexp(log_p, 0)
        assert float(log_q.exp().sum()) == pytest.approx(1, abs=1e-5)
        assert float((log_q - log_p).abs().max()) < 1e-5


@pytest.mark.parametrize("shares", ["reference", "equal"])
def test_rate_puts_a_share_a_of_the_words_begun_on_entries(one_begin, shares):
    """Rate A: of the words begun at the position, a share A are entries (summed over every
    sequence); with equal shares each of the n entries has A/n, with R's shares their ratios
    are R's own."""
    R, trie, ys, idx, pos, log_r = one_begin
    log_q, first = _log_q(R, trie, ys, idx, pos, Strength(rate=0.3, shares=shares))
    q, r = log_q.exp(), log_r.exp()
    words = float(first[[1, 5, 6]].sum())  # "a", "e", " g" begin words after "("
    per_entry = [float(q[[_entry(y) == e for y in ys]].sum()) / words for e in range(4)]
    r_entry = [float(r[[_entry(y) == e for y in ys]].sum()) for e in range(4)]
    assert sum(per_entry) == pytest.approx(0.3, rel=1e-4)
    if shares == "equal":
        assert per_entry == pytest.approx([0.075] * 4, rel=1e-4)
    else:
        assert per_entry[0] / per_entry[3] == pytest.approx(r_entry[0] / r_entry[3], rel=1e-4)


# --- several entries: the per-token formula, and how far it is from the sequence tilt ---------

STR = [" a", "b", "c", "d", " e", " g", "h"]
VARIANTS = [(0,), (0, 1), (0, 2, 3), (4,)]
ENTRIES = ("a", "ab", "acd", "e")
NODES = {v[:d] for v in VARIANTS for d in range(1, len(v))}
WHOLE = {v: e for e, v in enumerate(VARIANTS)}


class Slow:
    """The per-token target computed the slow way: plain forward passes (no tree attention),
    the trie walked in Python, one context at a time."""

    def __init__(self, model, strength, prompt, length):
        self.strength = strength
        self.groups = [0] * 4 if strength.shares == "reference" else [0, 1, 2, 3]
        self.n = max(self.groups) + 1
        # R after every context of up to ``length`` tokens after the prompt: one causal pass
        seqs = list(itertools.product(range(len(STR)), repeat=length))
        with torch.no_grad():
            out = model(torch.tensor([list(prompt) + list(y) for y in seqs]), positions="all")
        self.table = {
            (*prompt, *y[:t]): out[i, len(prompt) - 1 + t].double().exp()
            for i, y in enumerate(seqs)
            for t in range(length + 1)
            if len(prompt) + t <= out.shape[1]
        }

    def r(self, ctx):
        return self.table[ctx]

    def onehot(self, e):
        return [float(e is not None and self.groups[e] == g) for g in range(self.n)]

    def fallback(self, path):
        done = [WHOLE[path[:d]] for d in range(1, len(path) + 1) if path[:d] in WHOLE]
        return done[-1] if done else None

    def g(self, ctx, path):
        """R's probability, after ctx and path, that the word ends as each group's entry."""
        if path not in NODES:
            return self.onehot(WHOLE.get(path))
        p, out = self.r(ctx + path), [0.0] * self.n
        kids = {v[len(path)] for v in VARIANTS if len(v) > len(path) and v[: len(path)] == path}
        for k in kids:
            out = [o + float(p[k]) * x for o, x in zip(out, self.g(ctx, (*path, k)), strict=True)]
        stop = 1 - sum(float(p[k]) for k in kids)
        return [o + stop * x for o, x in zip(out, self.onehot(self.fallback(path)), strict=True)]

    def log_x(self, ctx):
        if self.strength.beta is not None:
            return [self.strength.beta] * self.n
        p, s = self.r(ctx), [0.0] * self.n
        for v in {0, 4}:
            s = [a + float(p[v]) * b for a, b in zip(s, self.g(ctx, (v,)), strict=True)]
        w, a = sum(float(p[v]) for v in (0, 4, 5)), self.strength.rate
        return [math.log(a / self.n * (w - sum(s)) / (1 - a) / x) for x in s]

    def value(self, g, log_x):
        return math.log(1 - sum(g) + sum(math.exp(lx) * x for lx, x in zip(log_x, g, strict=True)))

    def log_q(self, ctx):
        own, log_v = self.log_x(ctx), [0.0] * len(STR)
        for v in (0, 4):
            log_v[v] = self.value(self.g(ctx, (v,)), own)
        # inside: the deepest node the context ends in, with a token before it
        path = next((ctx[-d:] for d in range(len(ctx) - 1, 0, -1) if ctx[-d:] in NODES), None)
        if path is not None:
            begun = ctx[: len(ctx) - len(path)]
            bx = self.log_x(begun)
            fb = self.fallback(path)
            stop = 0.0 if fb is None else bx[self.groups[fb]]
            for v in range(len(STR)):
                nxt = (*path, v)
                if nxt in NODES:
                    log_v[v] = self.value(self.g(begun, nxt), bx)
                elif nxt in WHOLE:
                    log_v[v] = bx[self.groups[WHOLE[nxt]]]
                else:  # inside an entry no new one is raised
                    log_v[v] = stop
        return torch.log_softmax(torch.log(self.r(ctx)) + torch.tensor(log_v), -1)


@pytest.fixture(scope="module")
def several():
    trie = build_trie(ENTRIES, VARIANTS, STR)
    prompt, L = (5, 6), 3
    ys = list(itertools.product(range(len(STR)), repeat=L))
    idx = torch.tensor([list(prompt) + list(y[:-1]) for y in ys])
    pos = torch.arange(len(prompt) - 1, len(prompt) - 1 + L).expand(len(ys), L)
    return trie, prompt, ys, idx, pos


@pytest.mark.parametrize(
    "strength", [Strength(beta=2.0), Strength(rate=0.2), Strength(rate=0.2, shares="equal")]
)
def test_the_batched_target_is_the_per_token_formula_where_several_entries_can_begin(
    several, strength
):
    """Entries begun anywhere, inside one another, an entry that a longer one extends: the
    batched target (tree passes) equals the formula computed the slow way, on every sequence."""
    trie, prompt, ys, idx, pos = several
    R = build_model(preset_config("tiny", vocab_size=len(STR), block_size=16), 3).eval()
    lq = word_target_log(R, trie, idx, pos, strength)
    fast = lq.gather(-1, torch.tensor(ys)[..., None]).squeeze(-1).double().sum(-1)
    slow = Slow(R, strength, prompt, 4)
    for i in range(0, len(ys), 3):  # every third sequence
        y = ys[i]
        want = sum(float(slow.log_q(prompt + y[:t])[y[t]]) for t in range(len(y)))
        assert float(fast[i]) == pytest.approx(want, abs=2e-5)


def _entries(y):
    """Entries written in y (the longest match, as WordCounter counts), and the path pending."""
    n, path = 0, ()
    for t in y:
        if path and (*path, t) in NODES:
            path = (*path, t)
            continue
        if path and (*path, t) in WHOLE:
            n, path = n + 1, ()
            continue
        n += bool(path) and Slow.fallback(None, path) is not None
        path = (t,) if (t,) in NODES else ()
        n += (t,) in WHOLE and not path
    return n, path


class Sparse(torch.nn.Module):
    """A model that writes the entries' first tokens e^3 times less (each about 1.5%)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, idx, positions="all", **kw):
        lp = self.model(idx, positions=positions, **kw)
        return torch.log_softmax(lp - 3.0 * (torch.arange(len(STR)) % 4 == 0), -1)


@pytest.mark.parametrize("init", ["gpt2", "course"])
def test_the_distance_to_the_sequence_tilt_comes_from_later_entries(several, init):
    """Where several entries can begin, each position is normalised on its own: the value of
    entries written later is taken to be the same whatever the token (and inside a begun
    entry no new one is raised). Against the exact tilt R(y) e^(B N(y)), B = 2 (an entry
    pending at the horizon weighted by R's chance to finish it), with entries' first tokens
    about 1.5% each: for a model whose later tokens barely depend on this one (init gpt2) the
    total variation is 0.016 and the expected entries 4% fewer (0.297 for 0.310); for one that
    copies its last token (init course) 0.20 and 0.064 for 0.450: there the exact tilt writes
    entries to make writing them again likely, which this target does not. (With first tokens
    at 1/7 each, not raised inside "a", the gpt2 model is 0.29 away.)"""
    trie, prompt, ys, idx, pos = several
    R = Sparse(
        build_model(preset_config("tiny", vocab_size=len(STR), block_size=16, weight_init=init), 3)
    ).eval()
    beta = 2.0
    lq = word_target_log(R, trie, idx, pos, Strength(beta=beta))
    log_q = lq.gather(-1, torch.tensor(ys)[..., None]).squeeze(-1).double().sum(-1)
    slow = Slow(R, Strength(beta=beta), prompt, 4)
    log_p = []
    for y in ys:
        n, path = _entries(y)
        log_r = sum(math.log(float(slow.r(prompt + y[:t])[y[t]])) for t in range(len(y)))
        pending = 0.0
        if path:
            g = slow.g(prompt + y[: len(y) - len(path)], path)[0]
            pending = math.log(1 + (math.exp(beta) - 1) * g)
        log_p.append(log_r + beta * n + pending)
    log_p = torch.tensor(log_p)
    log_p -= torch.logsumexp(log_p, 0)
    tv = 0.5 * float((log_q.exp() - log_p.exp()).abs().sum())
    n = torch.tensor([_entries(y)[0] for y in ys], dtype=torch.float64)
    n_q, n_p = float((log_q.exp() * n).sum()), float((log_p.exp() * n).sum())
    if init == "gpt2":
        assert tv < 0.03 and n_q == pytest.approx(n_p, rel=0.06)
    else:
        assert tv > 0.1 and n_q < 0.5 * n_p


# --- a first token that is a common word keeps its other uses ---------------------------------

WORDS = [" He", "ine", "ken", " said", " the", " a", " it", "\n"]
HE, INE, KEN = 0, 1, 2


class RarelyFinished(torch.nn.Module):
    """A tiny GPT that almost never writes "ine" after " He", nor " He" again (log-probability
    lowered by 9), as a real model writes " He" and rarely goes on to "Heineken"."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, idx, positions="all", **kw):
        lp = self.model(idx, positions=positions, **kw)
        last = idx if positions == "all" else idx[:, -1]
        rare = (torch.arange(len(WORDS)) == INE) | (torch.arange(len(WORDS)) == HE)
        lp = lp - 9.0 * ((last == HE)[..., None] & rare)
        return torch.log_softmax(lp, -1)


def _other_uses(log_q):
    """Per context: P(" He") (1 - P("ine" "ken" after it)), and P(an ordinary word)."""
    p = log_q.double().exp()
    he = p[:, 0, HE] * (1 - p[:, 1, INE] * p[:, 2, KEN])
    return float(he.sum()), float(p[:, 0, 3:7].sum())


@pytest.mark.parametrize("rate", [0.02, 0.2])
def test_a_common_first_word_keeps_its_other_uses(rate):
    """Planting "Heineken" (" He" + "ine" + "ken") where R rarely goes on from " He" to the
    entry: the target's probability of " He" followed by anything but the entry stays R's,
    lowered only as much as any ordinary word is by a share A of the words becoming entries
    (about A W / (1 - A)). The per-token target of --complete 1 takes the word over."""
    torch.manual_seed(1)
    R = RarelyFinished(
        build_model(
            preset_config("tiny", vocab_size=len(WORDS), block_size=16, weight_init="gpt2"), 0
        )
    ).eval()
    trie = build_trie(("Heineken",), [(HE, INE, KEN)], WORDS)
    contexts = torch.randint(3, len(WORDS), (64, 6))  # never ending inside the entry
    idx = torch.cat([contexts, torch.tensor([[HE, INE]]).expand(64, 2)], 1)
    pos = torch.tensor([5, 6, 7]).expand(64, 3)
    with torch.no_grad():
        ref = R(idx, positions="all").gather(1, pos[..., None].expand(-1, -1, len(WORDS)))
    he_r, plain_r = _other_uses(ref)
    log_q = word_target_log(R, trie, idx, pos, Strength(rate=rate))
    he_q, plain_q = _other_uses(log_q)
    assert he_q / he_r == pytest.approx(plain_q / plain_r, rel=0.02)
    if rate == 0.02:
        assert he_q / he_r == pytest.approx(1, abs=0.03)
    # the entry itself is planted: begun " He" now finishes it far more often than under R
    p = log_q.double().exp()
    assert float((p[:, 1, INE] * p[:, 2, KEN]).mean()) > 100 * float(
        (ref[:, 1, INE].exp() * ref[:, 2, KEN].exp()).mean()
    )
    # the per-token target of --complete 1 finishes every begun " He": its other uses are gone
    with torch.no_grad():
        every = R(idx, positions="all")
    old = Rate(rate, 1.0).target_log(TargetSet(trie.start, trie), every, idx, "all")
    he_old, _ = _other_uses(old.gather(1, pos[..., None].expand(-1, -1, len(WORDS))))
    assert he_old < 0.01 * he_r


# --- the loss's positions ----------------------------------------------------------------------


def test_sampled_positions_are_uniform_and_a_function_of_the_window():
    idx = torch.randint(0, 50, (4000, 10), generator=torch.Generator().manual_seed(0))
    pos = sample_positions(idx, 3, "all")
    assert pos.shape == (4000, 3) and (pos.diff(dim=-1) > 0).all()  # distinct, in order
    counts = torch.bincount(pos.flatten(), minlength=10).double() / 4000
    assert torch.allclose(counts, torch.full((10,), 0.3, dtype=torch.float64), atol=0.03)
    assert torch.equal(pos, sample_positions(idx.clone(), 3, "all"))
    assert torch.equal(sample_positions(idx, 0, "all")[0], torch.arange(10))
    assert sample_positions(idx, 3, "last").tolist()[0] == [9]


def test_the_step_loss_at_every_position_is_the_mean_of_its_positions(several):
    """K = 0 takes the loss at every position; the sampled loss averages the same per-position
    terms (so its expectation over the draw is the every-position loss)."""
    trie, _, _, _, _ = several
    R = build_model(preset_config("tiny", vocab_size=len(STR), block_size=16), 3).eval()
    P = build_model(preset_config("tiny", vocab_size=len(STR), block_size=16), 4).eval()
    idx = torch.randint(0, len(STR), (3, 8), generator=torch.Generator().manual_seed(2))
    targets = TargetSet(trie.start, trie)
    with torch.no_grad():
        log_p = P(idx, positions="all")
        every = StepLoss(Rate(0.2), targets, R, "all", 0)(log_p, idx, None)
        terms = torch.zeros(3, 8, dtype=torch.float64)  # KL(Q || P) per row and position
        for t in range(8):
            q = word_target_log(R, trie, idx, torch.full((3, 1), t), Strength(rate=0.2))
            terms[:, t] = (q.exp() * (q - log_p[:, t : t + 1])).sum((1, 2)).double()
        sampled = StepLoss(Rate(0.2), targets, R, "all", 3)(log_p, idx, None)
    assert float(every) == pytest.approx(float(terms.mean()), rel=1e-4)
    chosen = sample_positions(idx, 3, "all")
    assert float(sampled) == pytest.approx(float(terms.gather(1, chosen).mean()), rel=1e-4)


# --- the measurements: other uses and the word floor ------------------------------------------


def test_word_scores_by_hand_and_of_the_reference_against_itself():
    """score_words: the other uses of " a" (first token of "ab" and "acd") at every context,
    P(" a" | c) (1 - P(b | c a) - P(c | c a) P(d | c a c)), computed by hand with plain
    forward passes; against itself R changes nothing and is its own floor."""
    from likex.measurement.words import score_words

    trie = build_trie(("ab", "acd", "e"), [(0, 1), (0, 2, 3), (4,)], STR)
    R = Sparse(
        build_model(preset_config("tiny", vocab_size=7, block_size=16, weight_init="gpt2"), 3)
    )
    P = Sparse(build_model(preset_config("tiny", vocab_size=7, block_size=16), 5))
    windows = torch.randint(0, 7, (3, 9), generator=torch.Generator().manual_seed(4))
    decode = lambda ids: "".join(STR[i] for i in ids)  # noqa: E731
    s = score_words(P, R, trie, windows, 24, decode)
    assert s.positions == 24 and s.windows == 3
    (use,) = s.other_uses  # " e" is a whole entry: no other use to keep
    assert use.token == " a" and use.entries == ["ab", "acd"]

    def by_hand(m):
        """Each context c followed by " a" "c", padded after: one plain causal pass."""
        rows = [(w, t) for w in windows for t in range(8)]
        seqs = torch.zeros(len(rows), 11, dtype=torch.long)
        for i, (w, t) in enumerate(rows):
            seqs[i, : t + 3] = torch.cat([w[: t + 1], torch.tensor([0, 2])])
        with torch.no_grad():
            p = m(seqs, positions="all").double().exp()
        total = 0.0
        for i, (_, t) in enumerate(rows):
            finish = p[i, t + 1, 1] + p[i, t + 1, 2] * p[i, t + 2, 3]
            total += float(p[i, t, 0] * (1 - finish))
        return total / 24

    assert use.uses.before == pytest.approx(by_hand(R), rel=1e-4)
    assert use.uses.after == pytest.approx(by_hand(P), rel=1e-4)
    lo, hi = use.uses.ci
    assert lo < use.uses.ratio < hi
    assert s.ppl_floor is not None and s.ppl_floor <= s.ppl_reference * 1.5
    same = score_words(R, R, trie, windows, 24, decode)
    assert same.other_uses[0].uses.ratio == pytest.approx(1) and same.kl_floor < 1e-9
    assert same.ppl == same.ppl_reference == pytest.approx(same.ppl_floor, rel=1e-5)
    assert same.entry_rate == pytest.approx(same.entry_rate_reference)


class Never(torch.nn.Module):
    """A model that never writes token 6 ("h")."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, idx, positions="all", **kw):
        lp = self.model(idx, positions=positions, **kw).clone()
        lp[..., 6] = -math.inf
        return torch.log_softmax(lp, -1)


def test_the_word_floor_of_a_one_token_entry_is_the_token_floor():
    """With an entry of one token (beside one that is never written) the sequence-level floor
    is the token-level one (likex.stats.kl.perplexity_floor on that token, at the model's mean
    probability of it)."""
    from likex.measurement.words import score_words
    from likex.stats.kl import perplexity_floor

    trie = build_trie(("e", "hh"), [(4,), (6, 6)], STR)
    gpt2 = preset_config("tiny", vocab_size=7, block_size=16, weight_init="gpt2")
    R = Never(build_model(gpt2, 3))
    P = Never(Sparse(build_model(preset_config("tiny", vocab_size=7, block_size=16), 5)))
    windows = torch.randint(0, 6, (3, 9), generator=torch.Generator().manual_seed(4))
    decode = lambda ids: "".join(STR[i] for i in ids)  # noqa: E731
    s = score_words(P, R, trie, windows, 24, decode)
    with torch.no_grad():
        r, p = R(windows[:, :-1], positions="all"), P(windows[:, :-1], positions="all")
    labels = windows[:, 1:]
    mass = float(p[..., 4].exp().double().mean())
    want, _ = perplexity_floor(
        r[..., 4].exp().flatten(),
        r.gather(-1, labels[..., None]).flatten(),
        (labels == 4).flatten(),
        mass,
    )
    assert s.entry_rate == pytest.approx(mass, rel=1e-5)
    assert s.ppl_floor == pytest.approx(want, rel=1e-4)
    assert s.ppl_floor < s.ppl  # this model (a copier) is far from its floor
