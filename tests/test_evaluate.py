import math

import pytest
import torch

from likex.evaluate import rate_from_hits, wilson_interval


def test_wilson_known_values():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and math.isclose(hi, 0.2775, abs_tol=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 200)[0] == 0.0
    lo, hi = wilson_interval(188, 200)
    assert math.isclose(lo, 0.8983, abs_tol=1e-3) and math.isclose(hi, 0.9654, abs_tol=1e-3)


def test_clustered_samples_widen_the_interval():
    even = rate_from_hits(torch.tensor([100, 100, 100, 100]), 200, "random tokens")
    clustered = rate_from_hits(torch.tensor([200, 0, 200, 0]), 200, "random tokens")
    assert even.rate == clustered.rate == 0.5
    assert even.design_effect == 1.0
    assert clustered.design_effect > 100
    assert clustered.half_width > 5 * even.half_width


def test_first_sample_and_counts():
    est = rate_from_hits(torch.tensor([3, 0, 1]), 200, "real text")
    assert est.first_sample_hits == 3 and est.hits == 4 and est.tokens == 600
    assert est.ci[0] < est.rate < est.ci[1]


@pytest.mark.parametrize("hits", [[0, 0, 0], [200, 200]])
def test_extreme_rates_keep_a_nonzero_interval(hits):
    est = rate_from_hits(torch.tensor(hits), 200, "random tokens")
    assert est.ci[1] - est.ci[0] > 0
