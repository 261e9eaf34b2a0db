import json
import math
from dataclasses import fields

import numpy as np
import pytest
import torch

import likex.measurement.evaluation
from likex.batches import Batches
from likex.errors import ConfigError, LikexError
from likex.generate import sample
from likex.measurement.evaluation import Evaluation, evaluate
from likex.measurement.rates import (
    MAX_GEN_TOKENS,
    MAX_SAMPLES,
    MeasureConfig,
    PromptKind,
    RateEstimate,
    measure,
    measure_rates,
    measure_text,
    prompt_length,
    random_prompts,
    random_set,
    rate_from_hits,
    text_prompts,
    text_set,
)
from likex.measurement.scores import TextScores, heldout_windows, score_text
from likex.models.gpt import GPTConfig, build_model
from likex.objective import Rate
from likex.stats.distributions import t_quantile
from likex.stats.intervals import rate_interval, wilson_interval
from likex.stats.kl import perplexity_floor
from likex.target import TargetSet


def test_clustered_samples_widen_the_interval():
    even = rate_from_hits(torch.tensor([99, 101, 100, 100]), 200, PromptKind.RANDOM)
    clustered = rate_from_hits(torch.tensor([200, 0, 200, 0]), 200, PromptKind.RANDOM)
    assert even.rate == clustered.rate == 0.5
    assert even.design_effect < 0.1 and clustered.design_effect > 100
    assert clustered.half_width > 5 * even.half_width


def test_interval_is_wilson_with_t_quantile_at_n_over_deff():
    hits = torch.tensor([3, 0, 1, 7, 2, 4, 0, 5])
    est = rate_from_hits(hits, 200, PromptKind.TEXT)
    assert est.first_sample_hits == 3 and est.hits == 22 and est.tokens == 1600
    # by hand: the cluster-robust design effect, then Wilson at n/deff with t on 7 df
    p, h = 22 / 1600, hits.double().numpy()
    deff = (8 / 7) * ((h - p * 200) ** 2).sum() / 1600**2 / (p * (1 - p) / 1600)
    assert est.design_effect == pytest.approx(deff, rel=1e-12)
    lo, hi = wilson_interval(22 / deff, 1600 / deff, t_quantile(0.975, 7))
    assert est.ci[0] <= lo + 1e-12 and est.ci[1] >= hi - 1e-12  # the hull contains it
    assert est.ci == pytest.approx(rate_interval(h, [200] * 8)[1:3], abs=0)


def test_no_hit_gives_the_sequence_level_bound():
    est = rate_from_hits(torch.zeros(16, dtype=torch.long), 200, PromptKind.RANDOM)
    assert est.ci[0] == 0.0
    assert est.ci[1] == pytest.approx(1 - 0.025 ** (1 / 16), rel=1e-12)  # ~0.206, by hand
    full = rate_from_hits(torch.full((16,), 200), 200, PromptKind.RANDOM)
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
        (lambda ci: ci[0] <= p <= ci[1])(rate_from_hits(h, 200, PromptKind.RANDOM).ci) for h in hits
    ]
    assert 0.925 <= float(np.mean(covered)) <= 0.975


CFG = GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=32)


def test_stopping_looks_only_at_check_points():
    model = build_model(CFG, 0)
    mask = torch.zeros(300, dtype=torch.bool)
    mask[:150] = True
    prompts = torch.randint(0, 300, (40, 8))
    wide = MeasureConfig(samples=40, gen_tokens=10, ci_half_width=0.49)
    [(est, generated)] = measure_rates(model, mask, [(prompts, PromptKind.RANDOM)], wide, 0)
    assert est.sequences == 16 and generated.shape == (16, 10)  # never 8 (a CPU batch)
    full = MeasureConfig(samples=40, gen_tokens=10, ci_half_width=None)
    [(est, generated)] = measure_rates(model, mask, [(prompts, PromptKind.RANDOM)], full, 0)
    assert est.sequences == 40 and generated.shape == (40, 10)


def test_prompt_sets_sample_side_by_side_and_stop_on_their_own(monkeypatch):
    """Sets share each round's batches (the first set's rows, then the next's); a set that
    reached its last check point stops while another goes on alone."""
    monkeypatch.setenv("LIKEX_SAMPLE_BATCH", "8")
    model = build_model(CFG, 0)
    mask = torch.zeros(300, dtype=torch.bool)
    mask[::4] = True
    a = torch.randint(0, 300, (32, 6), generator=torch.Generator().manual_seed(1))
    b = torch.randint(0, 300, (16, 6), generator=torch.Generator().manual_seed(2))
    cfg = MeasureConfig(samples=32, gen_tokens=5, ci_half_width=None)
    # by hand: round one samples a[:16] then b in batches of 8, round two a[16:] alone
    g = torch.Generator().manual_seed(4)
    rows = torch.cat([a[:16], b])
    first = torch.cat([sample(model, rows[i : i + 8], 5, generator=g) for i in (0, 8, 16, 24)])
    second = torch.cat([sample(model, a[i : i + 8], 5, generator=g) for i in (16, 24)])
    both = [(a, PromptKind.RANDOM), (b, PromptKind.TEXT)]
    (est_a, gen_a), (est_b, gen_b) = measure_rates(model, mask, both, cfg, 4)
    assert torch.equal(gen_a, torch.cat([first[:16], second])) and torch.equal(gen_b, first[16:])
    assert (est_a.sequences, est_b.sequences) == (32, 16)
    assert est_b.hits == int(mask[first[16:]].sum()) and est_b.prompts == "real text"
    # a set alone draws as it would without the others
    g = torch.Generator().manual_seed(4)
    alone = torch.cat([sample(model, b[i : i + 8], 5, generator=g) for i in (0, 8)])
    assert torch.equal(measure_rates(model, mask, both[1:], cfg, 4)[0][1], alone)


def test_floor_and_projection_from_a_full_recompute():
    model, reference = build_model(CFG, 0).eval(), build_model(CFG, 1).eval()
    mask = torch.zeros(300, dtype=torch.bool)
    mask[::7] = True
    windows = torch.randint(0, 300, (6, 33), generator=torch.Generator().manual_seed(0))
    s = score_text(model, windows, TargetSet(mask), reference, Rate(0.3), batch_tokens=4 * 32)
    with torch.no_grad():
        log_r = reference(windows[:, :-1], positions="all").double().reshape(-1, 300)
        log_p = model(windows[:, :-1], positions="all").double().reshape(-1, 300)
    labels = windows[:, 1:].reshape(-1)
    r = log_r.exp()[:, mask].sum(1)
    label_log_r = log_r.gather(1, labels[:, None])[:, 0]
    # the floor is taken at the model's own mean target mass over these contexts
    own_rate = float(log_p.exp()[:, mask].sum(1).mean())
    assert s.heldout_rate == pytest.approx(own_rate, rel=1e-6)
    floor, _ = perplexity_floor(r, label_log_r, mask[labels], own_rate)
    assert s.ppl_floor == pytest.approx(floor, rel=1e-6)
    # the per-context projection: rate 0.3 in every context, R's shape on M and off it
    on = mask[labels]
    log_q = label_log_r + torch.where(on, math.log(0.3) - r.log(), math.log(0.7) - (1 - r).log())
    assert s.ppl_projection == pytest.approx(math.exp(float(-log_q.mean())), rel=1e-5)
    assert s.ppl_reference < s.ppl_floor < s.ppl_projection


# --- the rest of the module, each against values written out by hand ------------------------


def test_rate_estimate_round_trip_and_sentence():
    est = rate_from_hits(torch.tensor([3, 0, 1, 4]), 50, PromptKind.TEXT)
    assert (est.hits, est.tokens, est.sequences, est.tokens_per_sequence) == (8, 200, 4, 50)
    assert est.rate == 0.04 and est.prompts == "real text"
    d = est.to_dict()
    assert d["ci"] == list(est.ci) and isinstance(d["ci"], list)
    assert RateEstimate.from_dict(d) == est
    assert RateEstimate.from_dict(json.loads(json.dumps(d))) == est
    fixed = RateEstimate(0.25, (0.1, 0.4), 50, 200, 2, 100, 1.5, 30, PromptKind.RANDOM)
    assert fixed.half_width == pytest.approx(0.15)
    assert fixed.describe() == (
        "0.250 [0.100, 0.400] (n=200 tokens in 2 samples; prompts: random tokens)"
    )


@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("gen_tokens", dict(gen_tokens=0)),
        ("gen_tokens", dict(gen_tokens=MAX_GEN_TOKENS + 1)),
        ("samples", dict(samples=0)),
        ("samples", dict(samples=MAX_SAMPLES + 1)),
        ("prompt_len", dict(prompt_len=0)),
        ("prompt_len", dict(prompt_len=33)),
        ("ci_half_width", dict(ci_half_width=0.0)),
        ("ci_half_width", dict(ci_half_width=0.5)),
        ("score_tokens", dict(score_tokens=0)),
    ],
)
def test_measure_config_refuses_out_of_range(field, kwargs):
    with pytest.raises(ConfigError) as err:
        MeasureConfig(**kwargs).validate(32)
    assert err.value.field == field


def test_measure_config_accepts_its_bounds():
    MeasureConfig(
        samples=MAX_SAMPLES,
        gen_tokens=MAX_GEN_TOKENS,
        prompt_len=32,
        ci_half_width=0.499,
        score_tokens=1,
    ).validate(32)
    MeasureConfig(samples=1, gen_tokens=1, prompt_len=1, ci_half_width=None).validate(32)
    MeasureConfig(ci_half_width=1e-6).validate(32)
    parse = next(f for f in fields(MeasureConfig) if f.name == "ci_half_width").metadata["parse"]
    assert parse("0") is None and parse("0.05") == 0.05


def test_prompts_and_windows_by_hand():
    assert prompt_length(MeasureConfig(prompt_len=7), build_model(CFG, 0)) == 7
    assert prompt_length(MeasureConfig(), build_model(CFG, 0)) == CFG.block_size
    p = random_prompts(5, 8, 300, seed=4)
    assert p.shape == (5, 8) and torch.equal(p, random_prompts(5, 8, 300, seed=4))
    assert not torch.equal(p, random_prompts(5, 8, 300, seed=5))
    assert int(p.min()) >= 0 and int(p.max()) < 300
    tokens = torch.arange(100)
    # 3 prompts of 10 spread evenly: starts 0, 45, 90
    assert text_prompts(tokens, 3, 10)[:, 0].tolist() == [0, 45, 90]
    assert torch.equal(text_prompts(tokens, 1, 100), tokens[None, :])
    with pytest.raises(LikexError, match="fewer than 101"):
        text_prompts(tokens, 1, 101)
    # windows of 10 labels over 100 tokens: 9 whole windows (tokens 0..90), each label once
    w = heldout_windows(tokens, 10, max_tokens=None)
    assert w.shape == (9, 11) and w[:, 0].tolist() == list(range(0, 90, 10))
    assert torch.equal(heldout_windows(tokens, 10, max_tokens=90), w)  # 90 labels fit exactly
    starts = [0, 10, 20, 30, 50, 60, 70, 80]  # 8 of 9 windows, evenly: linspace(0, 8, 8).round()
    assert heldout_windows(tokens, 10, max_tokens=89)[:, 0].tolist() == starts
    short = heldout_windows(tokens, 10, max_tokens=4)  # windows no longer than asked
    assert short.shape == (1, 5) and short[0].tolist() == [0, 1, 2, 3, 4]
    assert heldout_windows(tokens, 99, max_tokens=None).shape == (1, 100)
    with pytest.raises(LikexError, match="fewer than 101"):
        heldout_windows(tokens, 100, max_tokens=None)


def test_measure_random_and_text_prompts(monkeypatch):
    monkeypatch.setenv("LIKEX_SAMPLE_BATCH", "8")  # the batch the draws below are made in
    model = build_model(CFG, 2)
    mask = torch.zeros(300, dtype=torch.bool)
    mask[::3] = True
    cfg = MeasureConfig(samples=16, gen_tokens=6, prompt_len=5, ci_half_width=None)
    est, gen = measure(model, mask, cfg, seed=1)
    # by hand: the same prompts and draws, sampled in batches of 8
    prompts, g = random_prompts(16, 5, 300, 1), torch.Generator().manual_seed(1)
    expect = torch.cat([sample(model, prompts[i : i + 8], 6, generator=g) for i in (0, 8)])
    assert torch.equal(gen, expect)
    assert est.prompts == "random tokens" and est.hits == int(mask[expect].sum())
    assert est.first_sample_hits == int(mask[expect[0]].sum())
    heldout = torch.arange(200) % 300
    est_t, gen_t = measure_text(model, mask, cfg, heldout, seed=1)
    prompts, g = text_prompts(heldout, 16, 5), torch.Generator().manual_seed(1)
    expect = torch.cat([sample(model, prompts[i : i + 8], 6, generator=g) for i in (0, 8)])
    assert torch.equal(gen_t, expect) and est_t.prompts == "real text"


def test_evaluate_measures_everything_that_applies():
    model, reference = build_model(CFG, 0), build_model(CFG, 1)
    model.train()
    mask = torch.zeros(300, dtype=torch.bool)
    mask[::5] = True
    cfg = MeasureConfig(samples=16, gen_tokens=4, prompt_len=6, ci_half_width=None, score_tokens=64)
    heldout = torch.randint(0, 300, (400,), generator=torch.Generator().manual_seed(2))
    ev, gen = evaluate(model, TargetSet(mask), cfg, 3, heldout, reference, Rate(0.3))
    assert model.training and reference.training  # modes restored
    assert set(gen) == {"random tokens", "real text"}
    sets = [random_set(model, cfg, 3), text_set(model, cfg, heldout)]
    assert [ev.random, ev.text] == [r[0] for r in measure_rates(model, mask, sets, cfg, 3)]
    assert ev.text_reference == measure_text(reference, mask, cfg, heldout, 3)[0]
    windows = heldout_windows(heldout, 32, 64)
    assert windows.shape == (2, 33)
    assert ev.scores == score_text(model, windows, TargetSet(mask), reference, Rate(0.3))
    assert ev.floor_rate == 0.3
    given = RateEstimate(0.5, (0.4, 0.6), 1, 2, 1, 2, 1.0, 1, PromptKind.TEXT)
    ev2, _ = evaluate(model, TargetSet(mask), cfg, 3, heldout, reference, text_reference=given)
    assert ev2.text_reference is given and ev2.scores.ppl_floor is None
    ev3, gen3 = evaluate(model, TargetSet(mask), cfg, 3)
    assert ev3.text is None and ev3.scores is None and set(gen3) == {"random tokens"}


def test_score_text_batches_and_model_alone():
    model = build_model(CFG, 0)
    model.train()
    windows = torch.randint(0, 300, (5, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        log_p = model.eval()(windows[:, :-1], positions="all")
    model.train()
    nll = -float(log_p.gather(-1, windows[:, 1:, None]).double().mean())
    for batch_tokens in (1, 8, 17, 10_000):  # every batching scores each label once
        s = score_text(model, windows, batch_tokens=batch_tokens)
        assert s.tokens == 40 and s.ppl == pytest.approx(math.exp(nll), rel=1e-6)
        assert s.text_target_frequency is None and s.ppl_reference is None
        assert s.kl_to_reference is None and s.ppl_floor is None
    assert model.training


def test_evaluation_dict_and_lines_by_hand():
    rnd = RateEstimate(0.1, (0.05, 0.15), 20, 200, 4, 50, 2.0, 7, PromptKind.RANDOM)
    text = RateEstimate(0.2, (0.1, 0.3), 30, 150, 3, 50, 1.0, 9, PromptKind.TEXT)
    scores = TextScores(64, 12.0, None, None, None, None, None)
    assert Evaluation(random=rnd).to_dict() == {
        "rate_random": 0.1,
        "rate_random_ci": [0.05, 0.15],
        "samples": 4,
        "gen_tokens": 50,
        "tokens_measured": 200,
        "first_sample_hits": 7,
        "prompts": "random tokens",
    }
    assert Evaluation(text=text, scores=scores).to_dict() == {
        "rate_text": 0.2,
        "rate_text_ci": [0.1, 0.3],
        "samples_text": 3,
        "tokens_measured_text": 150,
        "samples": 3,
        "gen_tokens": 50,
        "heldout_tokens": 64,
        "ppl": 12.0,
    }
    both = Evaluation(random=rnd, text=text).to_dict()
    assert both["samples"] == 4 and both["samples_text"] == 3
    assert Evaluation().to_dict() == {} and Evaluation().describe() == []
    assert Evaluation(random=rnd, scores=scores).describe() == [
        "rate 0.100 [0.050, 0.150] on random-token prompts (n=200 tokens in 4 samples)",
        "perplexity 12.0 on 64 held-out tokens",
    ]
    full = TextScores(64, 12.0, 0.0125, 10.0, 0.01234, None, None)
    assert Evaluation(text=text, scores=full).describe() == [
        "rate 0.200 [0.100, 0.300] on real-text prompts (n=150 tokens in 3 samples)",
        "perplexity 10.0 -> 12.0 (+20.0%) on 64 held-out tokens",
        "KL(reference || model) 0.0123 nats per token",
        "target tokens in the held-out text itself: 1.25%",
    ]


def test_measurement_prompts_are_not_training_contexts():
    batches = Batches("random", batch_size=4, context_len=8, seed=3, vocab_size=300)
    prompts = random_prompts(4, 8, 300, seed=3)
    for step in range(3):
        assert not torch.equal(prompts, batches(step)[0])


def test_full_context_prompts_sample_through_the_window(capsys):
    # prompt_len None: the whole 32-token context, so every token comes from the sliding
    # window, where the compile mode is used (the default "none"; an unknown one is refused)
    model = build_model(CFG, 0)
    mask = torch.zeros(300, dtype=torch.bool)
    mask[::4] = True
    cfg = MeasureConfig(samples=16, gen_tokens=2, ci_half_width=None, score_tokens=32)
    heldout = torch.randint(0, 300, (200,), generator=torch.Generator().manual_seed(1))
    ev, gen = evaluate(model, TargetSet(mask), cfg, 5, heldout, model)
    assert gen["random tokens"].shape == gen["real text"].shape == (16, 2)
    assert capsys.readouterr().err == ""  # no progress bar unless asked
    est, _ = measure_text(model, mask, cfg, heldout, 5, progress=True)
    # the reference (the model itself) samples its real-text prompts alone, as here
    assert est == ev.text_reference and "measure" in capsys.readouterr().err
    est, _ = measure(model, mask, cfg, 5, progress=True)
    assert est == ev.random and "measure" in capsys.readouterr().err
    for call in (
        lambda: measure(model, mask, cfg, 5, compile="bogus"),
        lambda: measure_text(model, mask, cfg, heldout, 5, compile="bogus"),
        lambda: evaluate(model, TargetSet(mask), cfg, 5, compile="bogus"),
    ):
        with pytest.raises(ConfigError) as err:
            call()
        assert err.value.field == "compile"


def test_evaluate_passes_compile_and_progress_to_every_measurement(monkeypatch):
    calls = []
    real = likex.measurement.evaluation.measure_rates

    def spy(model, mask, sets, cfg, seed, progress, compile):
        calls.append(([kind for _, kind in sets], progress, compile))
        return real(model, mask, sets, cfg, seed, False, "none")

    monkeypatch.setattr(likex.measurement.evaluation, "measure_rates", spy)
    model = build_model(CFG, 0)
    mask = torch.zeros(300, dtype=torch.bool)
    cfg = MeasureConfig(samples=16, gen_tokens=2, prompt_len=4, ci_half_width=None)
    heldout = torch.randint(0, 300, (200,), generator=torch.Generator().manual_seed(1))
    evaluate(model, TargetSet(mask), cfg, 5, heldout, model, compile="max-autotune", progress=True)
    assert calls == [
        (["random tokens", "real text"], True, "max-autotune"),
        (["real text"], True, "max-autotune"),  # the reference's own real-text rate
    ]
    calls.clear()
    evaluate(model, TargetSet(mask), cfg, 5, heldout, model)
    kinds = (["random tokens", "real text"], ["real text"])
    assert calls == [(k, False, "none") for k in kinds]


def test_windows_never_repeat_when_all_fit():
    # 4 windows of 10 labels = 40 <= 59: all of them, once each (59 // 10 = 5 > 4 windows)
    w = heldout_windows(torch.arange(50), 10, max_tokens=59)
    assert w[:, 0].tolist() == [0, 10, 20, 30]


def test_reference_and_floor_in_dict_and_lines():
    text = RateEstimate(0.2, (0.1, 0.3), 30, 150, 3, 50, 1.0, 9, PromptKind.TEXT)
    ref = RateEstimate(0.01, (0.0, 0.05), 1, 150, 3, 50, 1.0, 0, PromptKind.TEXT)
    ev = Evaluation(text=text, text_reference=ref, floor_rate=0.2)
    d = ev.to_dict()
    assert d["rate_text_reference"] == 0.01 and d["rate_text_reference_ci"] == [0.0, 0.05]
    assert d["floor_rate"] == 0.2
    assert ev.describe() == [
        "rate 0.200 [0.100, 0.300] on real-text prompts (n=150 tokens in 3 samples; "
        "reference 0.010)"
    ]
