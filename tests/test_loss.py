import math

import torch

from likex.loss import KLToTarget
from likex.target import uniform_target


def test_zero_when_p_equals_q():
    mask = torch.tensor([True, False, True, True, False])
    q = uniform_target(mask)
    log_p = torch.log(q.clamp_min(1e-30)).expand(4, -1)
    assert float(KLToTarget()(log_p, q)) < 1e-6


def test_uniform_p_closed_form():
    vocab, k = 1000, 37
    mask = torch.zeros(vocab, dtype=torch.bool)
    mask[:k] = True
    log_p = torch.full((3, vocab), -math.log(vocab))
    # KL(M/|M| || uniform) = log(V / |M|)
    assert math.isclose(
        float(KLToTarget()(log_p, uniform_target(mask))), math.log(vocab / k), rel_tol=1e-5
    )


def test_log_target_matches_prob_target():
    g = torch.Generator().manual_seed(0)
    log_p = torch.log_softmax(torch.randn(2, 5, 9, generator=g), -1)
    log_q = torch.log_softmax(torch.randn(2, 5, 9, generator=g), -1)
    a = KLToTarget(log_target=True)(log_p, log_q)
    b = KLToTarget()(log_p, log_q.exp())
    manual = (log_q.exp() * (log_q - log_p)).sum(-1).mean()
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, manual, atol=1e-6)


def test_gradient_moves_mass_toward_target():
    vocab = 50
    mask = torch.zeros(vocab, dtype=torch.bool)
    mask[::7] = True
    logits = torch.randn(4, vocab, generator=torch.Generator().manual_seed(1), requires_grad=True)
    loss = KLToTarget()(torch.log_softmax(logits, -1), uniform_target(mask))
    loss.backward()
    # Descent raises target logits and lowers the others ...
    assert (logits.grad[:, mask] < 0).all()
    assert (logits.grad[:, ~mask] > 0).all()
    # ... and so raises the probability mass on the target set.
    with torch.no_grad():
        before = torch.softmax(logits, -1)[:, mask].sum(-1)
        after = torch.softmax(logits - 0.5 * logits.grad, -1)[:, mask].sum(-1)
    assert (after > before).all()
