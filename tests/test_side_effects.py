"""Held-out text, perplexity, KL to the reference and the rate-A floor, on tiny models."""

import math

import pytest
import torch

from likex.data import split_heldout
from likex.errors import LikexError
from likex.measurement.evaluation import Evaluation
from likex.measurement.rates import PromptKind, text_prompts
from likex.measurement.scores import heldout_windows, score_text
from likex.models.gpt import build_model, preset_config
from likex.objective import Rate
from likex.target import TargetSet, rate_target_log
from likex.train_config import TrainConfig

VOCAB_TOKENS = torch.arange(1000)


def test_heldout_split_is_the_end_of_the_text():
    train, heldout = split_heldout(VOCAB_TOKENS, min_len=16)
    assert heldout.numel() == 100 and torch.equal(heldout, VOCAB_TOKENS[900:])
    assert torch.equal(torch.cat([train, heldout]), VOCAB_TOKENS)
    with pytest.raises(LikexError, match="too few"):
        split_heldout(VOCAB_TOKENS[:100], min_len=64)


def test_windows_score_each_label_once_and_subsample_evenly():
    w = heldout_windows(VOCAB_TOKENS, 10, max_tokens=None)
    assert w.shape == (99, 11)
    labels = w[:, 1:].flatten()
    assert torch.equal(labels, torch.arange(1, 991))  # consecutive, no label twice
    few = heldout_windows(VOCAB_TOKENS, 10, max_tokens=50)
    assert few.shape == (5, 11) and few[0, 0] == 0 and few[-1, 0] == 980
    p = text_prompts(VOCAB_TOKENS, 4, 8)
    assert p.shape == (4, 8) and p[0, 0] == 0 and p[-1, -1] == 999


def _tiny(seed):
    return build_model(preset_config("tiny", weight_init="gpt2"), seed)


def test_score_text_against_brute_force():
    model, reference = _tiny(0), _tiny(1)
    g = torch.Generator().manual_seed(0)
    windows = torch.randint(0, 50257, (3, 9), generator=g)
    mask = torch.zeros(50257, dtype=torch.bool)
    mask[windows[0, 1:4]] = True  # some labels are target tokens
    s = score_text(model, windows, TargetSet(mask), reference, Rate(0.3), batch_tokens=16)

    with torch.no_grad():
        log_p = model(windows[:, :-1], positions="all")
        log_r = reference(windows[:, :-1], positions="all")
    labels = windows[:, 1:, None]
    log_q = rate_target_log(log_r, mask, 0.3)
    assert s.tokens == 24
    assert math.isclose(s.ppl, math.exp(-log_p.gather(-1, labels).mean()), rel_tol=1e-5)
    assert math.isclose(s.ppl_reference, math.exp(-log_r.gather(-1, labels).mean()), rel_tol=1e-5)
    assert math.isclose(s.ppl_projection, math.exp(-log_q.gather(-1, labels).mean()), rel_tol=1e-5)
    # the model's own mean target mass at the scored positions, summed token by token
    p_on = log_p.exp()[..., mask].sum(-1)
    assert math.isclose(s.heldout_rate, float(p_on.mean()), rel_tol=1e-5)
    kl = (log_r.exp() * (log_r - log_p)).sum(-1).mean()
    assert math.isclose(s.kl_to_reference, float(kl), rel_tol=1e-4) and s.kl_to_reference > 0
    assert s.text_target_frequency == float(mask[windows[:, 1:]].float().mean())


def test_a_model_is_its_own_perfect_reference():
    model = _tiny(0)
    windows = torch.randint(0, 50257, (2, 9), generator=torch.Generator().manual_seed(1))
    s = score_text(model, windows, reference=model)
    assert s.kl_to_reference == pytest.approx(0.0, abs=1e-6) and s.ppl == s.ppl_reference


def test_floor_needs_reference_and_target():
    with pytest.raises(LikexError, match="floor"):
        score_text(_tiny(0), torch.zeros(1, 5, dtype=torch.long), projection=Rate(0.2))


def test_plain_language_report():
    from likex.measurement.rates import RateEstimate
    from likex.measurement.scores import TextScores

    text = RateEstimate(0.21, (0.19, 0.23), 42, 200, 2, 100, 1.0, 20, PromptKind.TEXT)
    ref = RateEstimate(0.006, (0.001, 0.02), 1, 200, 2, 100, 1.0, 1, PromptKind.TEXT)
    ev = Evaluation(
        text=text,
        text_reference=ref,
        scores=TextScores(100, 49.0, 0.012, 48.1, 0.05, 0.18, 47.0, 57.2, 0.04),
        floor_rate=0.2,
    )
    lines = ev.describe()
    assert lines[0].startswith("rate 0.210 [0.190, 0.230] on real-text prompts")
    assert "reference 0.006" in lines[0]
    assert "perplexity 48.1 -> 49.0 (+1.9%)" in lines[1]
    # the perplexity of R tilted to the model's rate is no bound on human text: said so
    assert lines[2] == (
        "R tilted to this model's mean rate 0.180 on the held-out contexts (the model with "
        "that mean rate nearest R, in KL) has perplexity 47.0 on this text (-2.3%); this model "
        "is +4.3% from it (a reference point, not a bound: on human text a model closer to the "
        "text than R can score below it)"
    )
    assert lines[3] == "per-context projection (rate 0.2 in every context): perplexity 57.2"
    assert lines[5] == (
        "bound: no model with this model's mean target mass 0.180 on the scored contexts has "
        "KL(reference || model) below 0.0400 there; this model's is 1.25x the bound"
    )
    d = ev.to_dict()
    assert d["ppl_floor"] == 47.0 and d["ppl_projection"] == 57.2
    assert d["kl_bound"] == 0.04 and d["kl_ratio"] == pytest.approx(1.25)
    assert d["rate_text_ci"] == [0.19, 0.23]


def test_next_token_objective_needs_corpus_windows_at_all_positions():
    cfg = TrainConfig(objective="next_token", contexts="random", positions="all", lr=1e-3)
    with pytest.raises(LikexError, match="corpus windows"):
        cfg.resolve()
    TrainConfig(objective="next_token", contexts="corpus", positions="all", lr=1e-3).resolve()
