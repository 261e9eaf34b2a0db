import math

import torch

from likex.loss import KLToTarget, next_token_loss
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


def test_next_token_loss_is_the_mean_negative_log_likelihood():
    g = torch.Generator().manual_seed(2)
    log_p = torch.log_softmax(torch.randn(2, 3, 7, generator=g), -1)
    labels = torch.randint(0, 7, (2, 3), generator=g)
    by_hand = -sum(float(log_p[b, t, labels[b, t]]) for b in range(2) for t in range(3)) / 6
    assert math.isclose(float(next_token_loss(log_p, labels)), by_hand, rel_tol=1e-6)


def test_a_shared_target_equals_one_target_per_position():
    g = torch.Generator().manual_seed(3)
    log_p = torch.log_softmax(torch.randn(2, 4, 6, generator=g), -1)
    q = torch.softmax(torch.randn(6, generator=g), -1)
    shared = KLToTarget()(log_p, q)
    per_position = KLToTarget()(log_p, q.expand(2, 4, 6))
    by_hand = (q * (q.log() - log_p)).sum(-1).mean()  # mean over the 8 positions
    assert torch.allclose(shared, per_position) and torch.allclose(shared, by_hand, atol=1e-6)
