import pytest
import torch

from likex.evaluate import rate_from_hits


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
