"""Statistics: intervals, tests and the one way a rate is written."""

from __future__ import annotations


def fmt_rate(rate: float, ci: list[float] | tuple[float, float]) -> str:
    """ "0.123 [0.100, 0.150]": a rate with its 95% interval."""
    return f"{rate:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
