"""Coverage of likex's 95% rate interval and the null false-positive rate of its black-box
test, by simulation (the large versions of tests/test_evaluate.py and tests/test_stats.py).

    PYTHONPATH=. .venv/bin/python bench/coverage.py [--reps 3000]

Sequences of 200 tokens with within-sequence correlation (beta-binomial, rho = (deff-1)/199).
Prints, per (p, deff), the share of runs whose interval (``likex.stats.intervals.rate_interval``, as
``likex.evaluate.rate_from_hits`` uses it) covers p at k = 4, 8, 16, 64 sequences; then the
false-positive rate / nominal of ``welch_t_test`` under the null (both sides deff 3) at the
levels 0.05, 0.005, 0.0005 (Holm's strictest step for 1, 10, 100 tests).
"""

from __future__ import annotations

import argparse

import numpy as np

from likex.stats.intervals import rate_interval
from likex.stats.significance import welch_t_test

L = 200


def draw(rng: np.random.Generator, p: float, deff: float, shape: tuple[int, ...]) -> np.ndarray:
    if deff <= 1:
        return rng.binomial(L, p, size=shape)
    rho = (deff - 1) / (L - 1)
    theta = rng.beta(p * (1 / rho - 1), (1 - p) * (1 / rho - 1), size=shape)
    return rng.binomial(L, theta)


def coverage(reps: int, seed: int) -> None:
    ks = (4, 8, 16, 64)
    print(f"## Coverage of the nominal 95% interval ({reps} runs per cell, L={L})")
    print("| p | deff | " + " | ".join(f"k={k}" for k in ks) + " |")
    print("|---|---|" + "---|" * len(ks))
    rng = np.random.default_rng(seed)
    for p in (0.02, 0.1):
        for deff in (1, 3, 10):
            cells = []
            for k in ks:
                hits = draw(rng, p, deff, (reps, k))
                lengths = np.full(k, L)
                hit = 0
                for h in hits:
                    _, lo, hi, _, _ = rate_interval(h, lengths)
                    hit += lo <= p <= hi
                cells.append(f"{hit / reps:.3f}")
            print(f"| {p} | {deff} | " + " | ".join(cells) + " |")


def null_fpr(reps: int, seed: int) -> None:
    levels = (0.05, 0.005, 0.0005)
    print(f"\n## Welch t over samples, null false-positive rate / nominal ({reps} runs, deff 3)")
    print("| p | n/side | " + " | ".join(f"alpha {a:g}" for a in levels) + " |")
    print("|---|---|" + "---|" * len(levels))
    rng = np.random.default_rng(seed)
    for p in (0.02, 0.1):
        for n in (4, 7, 16, 32):
            a, b = draw(rng, p, 3, (reps, n)) / L, draw(rng, p, 3, (reps, n)) / L
            _, _, pv = welch_t_test(a, b)
            print(
                f"| {p} | {n} | "
                + " | ".join(f"{np.mean(pv <= lv) / lv:.2f}" for lv in levels)
                + " |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3000)
    ap.add_argument("--null-reps", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    coverage(args.reps, args.seed)
    null_fpr(args.null_reps, args.seed + 1)


if __name__ == "__main__":
    main()
