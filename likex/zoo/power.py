"""The power of a sample-based detector at a number of samples a side, from repeated draws.

A detector that works on samples is audited once on its full pools (the organism's and the
base's), and its test is repeated on ``draws`` random subsets of ``n`` samples a side, drawn
without replacement from each pool: the share of draws in which the test fires is its power at
``n`` on this organism. An ``n`` beyond a pool is not estimated (None): resampling a pool with
replacement would show the test duplicated samples, which no real draw has. At ``n`` equal to
the organism's pool every draw holds the same suspect samples (only the base's vary).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from likex.stats.significance import holm, min_samples_per_side, welch_t_test

# detects(suspect rows, base rows) -> whether the test fires on those samples
Detects = Callable[[np.ndarray, np.ndarray], bool]


def subsample_power(
    detects: Detects,
    pool_a: int,
    pool_b: int,
    sizes: Sequence[int],
    draws: int,
    seed: int,
) -> dict[int, float | None]:
    """Per size n: the share of ``draws`` subsets (n of ``pool_a`` suspect samples and n of
    ``pool_b`` base samples) on which ``detects`` fires; None where n exceeds a pool."""
    rng = np.random.default_rng(seed)
    out: dict[int, float | None] = {}
    for n in sizes:
        if n > min(pool_a, pool_b):
            out[n] = None
            continue
        fired = [
            detects(
                np.sort(rng.choice(pool_a, n, replace=False)),
                np.sort(rng.choice(pool_b, n, replace=False)),
            )
            for _ in range(draws)
        ]
        out[n] = float(np.mean(fired))
    return out


def welch_holm_detects(
    hits_a: np.ndarray,
    hits_b: np.ndarray,
    len_a: np.ndarray,
    len_b: np.ndarray,
    alpha: float,
) -> Detects:
    """The black-box audits' test on a subset of samples: Welch's t per row (a predicate or a
    word) on per-sample rates, Holm over all rows at ``alpha``; it fires when a row is
    significantly *more* frequent in the suspect's samples. The rows are those of the full
    pools (a subset does not choose its own candidates). Fewer samples than the audits accept
    for that many rows (``min_samples_per_side``) never fire, as the audits refuse them."""
    need = min_samples_per_side(hits_a.shape[0], alpha)

    def detects(ia: np.ndarray, ib: np.ndarray) -> bool:
        if min(len(ia), len(ib)) < need:
            return False
        t, _, p = welch_t_test(
            hits_a[:, ia], hits_b[:, ib], len_a[ia], len_b[ib], min_per_side=need
        )
        reject, _ = holm(p, alpha)
        return bool((reject & (t > 0)).any())

    return detects
