import math

import numpy as np
import pytest
import torch

from likex.evaluate import MeasureConfig, measure_rate, rate_from_hits, score_text
from likex.models.gpt import GPTConfig, build_model
from likex.stats import perplexity_floor, rate_interval, t_quantile, wilson_interval


def test_clustered_samples_widen_the_interval():
    even = rate_from_hits(torch.tensor([99, 101, 100, 100]), 200, "random tokens")
    clustered = rate_from_hits(torch.tensor([200, 0, 200, 0]), 200, "random tokens")
    assert even.rate == clustered.rate == 0.5
    assert even.design_effect < 0.1 and clustered.design_effect > 100
    assert clustered.half_width > 5 * even.half_width


def test_interval_is_wilson_with_t_quantile_at_n_over_deff():
    hits = torch.tensor([3, 0, 1, 7, 2, 4, 0, 5])
    est = rate_from_hits(hits, 200, "real text")
    assert est.first_sample_hits == 3 and est.hits == 22 and est.tokens == 1600
    # by hand: the cluster-robust design effect, then Wilson at n/deff with t on 7 df
    p, h = 22 / 1600, hits.double().numpy()
    deff = (8 / 7) * ((h - p * 200) ** 2).sum() / 1600**2 / (p * (1 - p) / 1600)
    assert est.design_effect == pytest.approx(deff, rel=1e-12)
    lo, hi = wilson_interval(22 / deff, 1600 / deff, t_quantile(0.975, 7))
    assert est.ci[0] <= lo + 1e-12 and est.ci[1] >= hi - 1e-12  # the hull contains it
    assert est.ci == pytest.approx(rate_interval(h, [200] * 8)[1:3], abs=0)


def test_no_hit_gives_the_sequence_level_bound():
    est = rate_from_hits(torch.zeros(16, dtype=torch.long), 200, "random tokens")
    assert est.ci[0] == 0.0
    assert est.ci[1] == pytest.approx(1 - 0.025 ** (1 / 16), rel=1e-12)  # ~0.206, by hand
    full = rate_from_hits(torch.full((16,), 200), 200, "random tokens")
    assert full.ci == pytest.approx((0.025 ** (1 / 16), 1.0))


def test_coverage_with_correlated_tokens_at_16_sequences():
    """A small version of bench/coverage.py: p = 0.02 with design effect 10 (beta-binomial
    sequences of 200 tokens); the nominal 95% interval of rate_from_hits covers p in
    0.93-0.97 of runs (the old Wilson-z interval: ~0.89)."""
    rng = np.random.default_rng(0)
    p, rho, reps = 0.02, 9 / 199, 1500
    theta = rng.beta(p * (1 / rho - 1), (1 - p) * (1 / rho - 1), size=(reps, 16))
    hits = torch.from_numpy(rng.binomial(200, theta))
    covered = [
        (lambda ci: ci[0] <= p <= ci[1])(rate_from_hits(h, 200, "random tokens").ci) for h in hits
    ]
    assert 0.925 <= float(np.mean(covered)) <= 0.975


CFG = GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=32)


def test_stopping_looks_only_at_check_points():
    model = build_model(CFG, 0)
    mask = torch.zeros(300, dtype=torch.bool)
    mask[:150] = True
    prompts = torch.randint(0, 300, (40, 8))
    wide = MeasureConfig(samples=40, gen_tokens=10, ci_half_width=0.49)
    est, generated = measure_rate(model, mask, prompts, wide, 0, "random tokens")
    assert est.sequences == 16 and generated.shape == (16, 10)  # never 8 (a CPU batch)
    full = MeasureConfig(samples=40, gen_tokens=10, ci_half_width=None)
    est, generated = measure_rate(model, mask, prompts, full, 0, "random tokens")
    assert est.sequences == 40 and generated.shape == (40, 10)


def test_floor_and_projection_from_a_full_recompute():
    model, reference = build_model(CFG, 0).eval(), build_model(CFG, 1).eval()
    mask = torch.zeros(300, dtype=torch.bool)
    mask[::7] = True
    windows = torch.randint(0, 300, (6, 33), generator=torch.Generator().manual_seed(0))
    s = score_text(model, windows, mask, reference, floor_rate=0.3, batch_tokens=4 * 32)
    with torch.no_grad():
        log_r = reference(windows[:, :-1], positions="all").double().reshape(-1, 300)
    labels = windows[:, 1:].reshape(-1)
    r = log_r.exp()[:, mask].sum(1)
    label_log_r = log_r.gather(1, labels[:, None])[:, 0]
    floor, _ = perplexity_floor(r, label_log_r, mask[labels], 0.3)
    assert s.ppl_floor == pytest.approx(floor, rel=1e-6)
    # the per-context projection: rate 0.3 in every context, R's shape on M and off it
    on = mask[labels]
    log_q = label_log_r + torch.where(on, math.log(0.3) - r.log(), math.log(0.7) - (1 - r).log())
    assert s.ppl_projection == pytest.approx(math.exp(float(-log_q.mean())), rel=1e-5)
    assert s.ppl_reference < s.ppl_floor < s.ppl_projection
