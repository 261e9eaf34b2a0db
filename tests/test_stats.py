"""likex.stats: the Wilson interval and its format, Holm's correction, the power analysis."""

import math

import numpy as np

from likex.stats import (
    PowerAnalysis,
    fmt_rate,
    holm,
    samples_needed,
    simulated_power,
    wilson_interval,
)


def test_wilson_known_values():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and math.isclose(hi, 0.2775, abs_tol=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 200)[0] == 0.0
    lo, hi = wilson_interval(188, 200)
    assert math.isclose(lo, 0.8983, abs_tol=1e-3) and math.isclose(hi, 0.9654, abs_tol=1e-3)


def test_holm_step_down():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005 <= 0.05/4, 0.01 <= 0.05/3, 0.03 > 0.05/2: stop
    assert holm(p, 0.05).tolist() == [True, False, False, True]
    assert not holm(np.array([0.02, 0.03]), 0.01).any()


def test_fmt_rate():
    assert fmt_rate(0.1234, (0.1, 0.15)) == "0.123 [0.100, 0.150]"
    assert fmt_rate(0.5, [0.25, 0.75], digits=2) == "0.50 [0.25, 0.75]"


def test_power_sentence_round_trips_through_its_dict():
    a = PowerAnalysis(0.006, 0.05, 0.9, 0.05, 1000, 200, 1.0, 59)
    b = PowerAnalysis.from_dict({**a.__dict__, "simulated_power": 0.9})
    assert b == a
    assert a.describe() == (
        "59 samples of 200 tokens per side detect a rate shift 0.006 -> 0.05 with power 0.9 "
        "at family-wise alpha 0.05 over 1000 predicates (design effect 1.00)"
    )
    assert a.describe((0.91, (0.89, 0.93))).endswith("; simulated power 0.910 [0.890, 0.930]")


def test_sample_size_gives_the_stated_power():
    a = samples_needed(0.006, 0.05, 200, alpha=0.05, power=0.9, n_tests=1000)
    assert a.samples > samples_needed(0.006, 0.05, 200, 0.05, 0.9, n_tests=1).samples
    assert samples_needed(0.006, 0.05, 200, n_tests=1000, design_effect=2).samples > a.samples
    power, (lo, hi) = simulated_power(a, reps=3000, seed=0)
    assert 0.88 <= power <= 0.99
    fewer = samples_needed(0.006, 0.05, 200, 0.05, 0.5, n_tests=1000)
    assert simulated_power(fewer, reps=3000, seed=1)[0] < 0.7
