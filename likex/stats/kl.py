"""Divergences of a shift of mass onto a token set: the floor (the cheapest model with a target
rate on average over contexts, in KL or in perplexity) and the white-box statistics (how much of
a model's KL from its reference a tilt on one set explains, and that tilt's strength)."""

from __future__ import annotations

import math

import numpy as np
import torch


def binary_kl(p, q):
    """KL(Bern(p) || Bern(q)), elementwise (torch or numpy), 0 log 0 = 0."""
    lib = torch if isinstance(p, torch.Tensor) or isinstance(q, torch.Tensor) else np
    p, q = (
        lib.as_tensor(v, dtype=torch.float64) if lib is torch else np.asarray(v, np.float64)
        for v in (p, q)
    )
    t1 = lib.where(p > 0, p * lib.log(p / q), 0 * p)
    t2 = lib.where(p < 1, (1 - p) * lib.log((1 - p) / (1 - q)), 0 * p)
    return t1 + t2


def _rates_at(beta: float, r: torch.Tensor, objective: str) -> torch.Tensor:
    if objective == "tilt":  # argmin KL(Q||R): Q ∝ R e^{beta M}, a = sigmoid(beta + logit r)
        return torch.sigmoid(beta + torch.logit(r))
    # argmin KL(R||Q): (a - r) / (a (1 - a)) = beta, the root of beta a^2 + (1-beta) a - r = 0,
    # in the form without cancellation: for beta > 1 and r -> 0 it tends to 1 - 1/beta (Q may
    # put mass where R has almost none), where 2r / (b + s) would be 0 / 0
    b = 1 - beta
    s = torch.sqrt(b * b + 4 * beta * r)
    return 2 * r / (b + s) if b >= 0 else (s - b) / (2 * beta)


def shared_tilt_floor(r: torch.Tensor, rate: float, objective: str = "cross_entropy"):
    """Cheapest per-context masses a_c on M with mean_c a_c = ``rate``, given the reference's
    masses r_c = R_c(M). Lagrangian: sum_c D_c(a_c) - beta (sum_c a_c - K rate); D_c is convex,
    so stationarity with ONE beta shared by all contexts is the global optimum. Within M and
    outside it the optimum keeps R's shape in both directions of KL, so D_c is binary KL.
    ``objective="tilt"``: min mean KL(Q||R); stationarity gives Q_c ∝ R_c exp(beta M).
    ``objective="cross_entropy"``: min mean KL(R||Q) = the extra expected cross-entropy (log
    perplexity) on text drawn from R; stationarity gives (a_c - r_c) / (a_c (1 - a_c)) = beta.
    mean_c a_c(beta) increases in beta; bisection. Returns (beta, a [K], mean divergence)."""
    r = torch.as_tensor(r, dtype=torch.float64).clamp(1e-300, 1 - 1e-16)
    if objective not in ("tilt", "cross_entropy") or not 0 < rate < 1:
        raise ValueError(
            f"need objective tilt|cross_entropy and 0 < rate < 1, got {objective!r}, {rate}"
        )
    if objective == "tilt":
        lo = math.log(rate / (1 - rate)) - float(torch.logit(r).max())
        hi = math.log(rate / (1 - rate)) - float(torch.logit(r).min())
    else:

        def g(rr):
            return (rate - rr) / (rate * (1 - rate))

        lo, hi = g(float(r.max())), g(float(r.min()))
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float(_rates_at(mid, r, objective).mean()) < rate else (lo, mid)
    beta = (lo + hi) / 2
    a = _rates_at(beta, r, objective).clamp(1e-300, 1 - 1e-16)  # as r: 1 - a may round to 0
    div = binary_kl(a, r) if objective == "tilt" else binary_kl(r, a)
    return beta, a, float(div.mean())


def perplexity_floor(
    r: torch.Tensor,
    label_log_r: torch.Tensor,
    label_on: torch.Tensor,
    rate: float,
    objective: str = "cross_entropy",
) -> tuple[float, float]:
    """Floor perplexity on held-out text: exp(mean_t -log Q*(x_t | c_t)), Q* the optimal
    shared-beta model with mean rate ``rate`` over these contexts (``shared_tilt_floor``).
    Per scored position t: ``r`` = R(M | c_t), ``label_log_r`` = log R(x_t | c_t) and
    ``label_on`` = x_t in M. Q* keeps R's shape on M and off it, so
    log Q*(x) = log R(x) + log(a/r) on M, + log((1-a)/(1-r)) off it. Q* depends on the
    reference at these contexts only, never on the held-out tokens. Returns (floor, beta)."""
    r = torch.as_tensor(r, dtype=torch.float64).clamp(1e-300, 1 - 1e-16)
    beta, a, _ = shared_tilt_floor(r, rate, objective)
    log_q = label_log_r.double() + torch.where(
        label_on.bool(), torch.log(a / r), torch.log1p(-a) - torch.log1p(-r)
    )
    return math.exp(float(-log_q.mean())), beta


def kl_share_of_tilt(p_set: torch.Tensor, r_set: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
    """Share of KL(P||R) explained by moving mass onto/off a set S alone, pooled over probes.
    Chain rule: KL(P||R) = binKL(P(S)||R(S)) + P(S) KL(P|S||R|S) + P(S^c) KL(P|S^c||R|S^c),
    so sum binKL / sum KL is in [0, 1] and is 1 iff each P_c is a one-parameter tilt of R_c
    on S. ``p_set``/``r_set``: P(S), R(S) per probe [n] or [n, C] (C sets at once); ``kl``:
    KL(P||R) per probe [n]. Returns the share [C] (or a scalar tensor)."""
    total = float(kl.double().sum())
    bkl = binary_kl(p_set.double(), r_set.double()).sum(0)
    return bkl / total if total > 0 else torch.zeros_like(bkl)


def logit_mass_shift(p_set: torch.Tensor, r_set: torch.Tensor) -> torch.Tensor:
    """logit P(S) - logit R(S), elementwise; for an exact tilt P ∝ R e^{beta [x in S]} it is
    beta in every probe."""
    p, r = p_set.double(), r_set.double()
    return torch.log(p) - torch.log1p(-p) - torch.log(r) + torch.log1p(-r)
