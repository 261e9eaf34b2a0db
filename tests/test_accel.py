"""The fast path: exact float32 on a CPU; bf16 autocast, fused AdamW, compile on CUDA.

The CUDA tests are marked ``gpu`` and skipped without one; bench/gpu.sh runs them.
"""

import json
from dataclasses import replace

import pytest
import torch

from likex.accel import (
    GRAPH_EAGER_STEPS,
    autocast_for,
    check_cuda_graph,
    compiled,
    inference_model,
)
from likex.cli import main
from likex.errors import LikexError
from likex.generate import sample, window_step
from likex.models.gpt import GPTConfig, build_model
from likex.pipelines.run import resume_experiment
from likex.target import TargetSet
from likex.train import make_optimizer, train_toward
from likex.train_config import TrainConfig

CFG = GPTConfig(vocab_size=512, block_size=64, n_layer=2, n_head=4, n_embd=64)
MASK = torch.arange(512) % 9 == 0
TARGETS = TargetSet(MASK)


def test_cpu_path_stays_float32():
    model = build_model(CFG, 0)
    idx = torch.randint(0, 512, (2, 16))
    with autocast_for(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
        inside = model(idx, positions="last")
    torch.testing.assert_close(inside, model(idx, positions="last"), rtol=0, atol=0)
    assert inside.dtype == torch.float32


def test_unknown_compile_mode_is_refused():
    with pytest.raises(LikexError, match="compile mode 'fastest' is unknown"):
        TrainConfig(compile="fastest", lr=1e-3).resolve()
    assert compiled(window_step, "none") is window_step


def test_cuda_graph_is_refused_where_it_cannot_run(tmp_path, capsys):
    with pytest.raises(LikexError, match="needs a CUDA device"):
        plan = TrainConfig(steps=2, context_len=64, cuda_graph=True, lr=1e-3).resolve()
        train_toward(build_model(CFG, 0), plan, TARGETS, tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()
    for mode in ("reduce-overhead", "max-autotune"):  # they record CUDA graphs themselves
        with pytest.raises(LikexError, match="with compile none or default"):
            check_cuda_graph(torch.device("cuda"), mode, distributed=False)
    with pytest.raises(LikexError, match="under torchrun"):
        check_cuda_graph(torch.device("cuda"), "default", distributed=True)
    out = tmp_path / "run"
    args = ["run", "--preset", "tiny", "--steps", "2", "--cuda-graph", "--out", str(out)]
    assert main([*args, "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--cuda-graph needs a CUDA device" in err
    assert not out.exists()


def test_cpu_sampling_uses_the_model_itself():
    model = build_model(CFG, 0)
    net, context = inference_model(model)
    assert net is model
    with context:
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.gpu
def test_cuda_training_uses_bf16_autocast_and_fused_adamw(tmp_path):
    model = build_model(CFG, 0).cuda()
    cfg = TrainConfig(steps=30, batch_size=8, context_len=64, lr=1e-2).resolve()
    assert make_optimizer(model, cfg).defaults["fused"]
    with autocast_for(torch.device("cuda")):
        out = model(torch.randint(0, 512, (2, 64), device="cuda"), positions="last")
        assert out.dtype == torch.float32  # the log-softmax is taken in float32
        hidden = model.blocks[0].mlp.fc(torch.zeros(1, 64, device="cuda"))
        assert hidden.dtype == torch.bfloat16
    result = train_toward(model, cfg, TARGETS, tmp_path, progress=False)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights
    assert result.loss_last < 0.2 * result.loss_first


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_training_matches_eager(tmp_path, mode):
    cfg = TrainConfig(steps=6, batch_size=8, context_len=64, lr=1e-3)
    eager = train_toward(build_model(CFG, 0).cuda(), cfg.resolve(), TARGETS, tmp_path / "eager",
                         progress=False)  # fmt: skip
    cfg = replace(cfg, compile=mode)
    fast = train_toward(build_model(CFG, 0).cuda(), cfg.resolve(), TARGETS, tmp_path / mode,
                        progress=False)  # fmt: skip
    torch.testing.assert_close(
        torch.tensor(fast.losses), torch.tensor(eager.losses), rtol=2e-2, atol=2e-2
    )


@pytest.mark.gpu
def test_compiled_window_decoding_matches_eager():
    model = build_model(CFG, 0).cuda().eval()
    prompt = torch.randint(0, 512, (4, 64), device="cuda")  # a full window, as in the seed
    step = compiled(window_step, "reduce-overhead")
    with torch.no_grad(), autocast_for(torch.device("cuda")):
        for _ in range(3):  # warm-up, recording, replay
            fast = step(model, prompt).clone()
        slow = window_step(model, prompt)
    torch.testing.assert_close(fast, slow, rtol=2e-2, atol=5e-2)
    tokens = sample(model, prompt, 20, torch.Generator("cuda").manual_seed(0),
                    compile="reduce-overhead")  # fmt: skip
    assert tokens.shape == (4, 20) and int(tokens.max()) < 512


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["none", "default"])
def test_graphed_training_matches_eager(tmp_path, mode):
    steps = GRAPH_EAGER_STEPS + 5  # eager steps, the capture, then replays
    cfg = TrainConfig(steps=steps, batch_size=8, context_len=64, lr=1e-3)
    eager = train_toward(build_model(CFG, 0).cuda(), cfg.resolve(), TARGETS, tmp_path / "eager",
                         progress=False)  # fmt: skip
    cfg = replace(cfg, compile=mode, cuda_graph=True)
    model = build_model(CFG, 0).cuda()
    graphed = train_toward(model, cfg.resolve(), TARGETS, tmp_path / "graph", progress=False)
    torch.testing.assert_close(
        torch.tensor(graphed.losses), torch.tensor(eager.losses), rtol=2e-2, atol=2e-2
    )
    # the replays really train: the loss keeps falling after the capture
    assert graphed.losses[-1] < graphed.losses[GRAPH_EAGER_STEPS]


@pytest.mark.gpu
def test_graphed_training_resumes(tmp_path):
    args = ["run", "--preset", "tiny", "--device", "cuda", "--cuda-graph", "--batch-size", "8",
            "--samples", "4", "--gen-tokens", "8", "--quiet"]  # fmt: skip
    straight, part = tmp_path / "straight", tmp_path / "part"
    assert main([*args, "--steps", "16", "--out", str(straight)]) == 0
    assert main([*args, "--steps", "8", "--out", str(part)]) == 0
    resume_experiment(part, steps=16, progress=False)
    losses = {}
    for run in (straight, part):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        losses[run] = torch.tensor([json.loads(line)["loss"] for line in lines])
    assert len(losses[part]) == 16
    torch.testing.assert_close(losses[part], losses[straight], rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
def test_sampling_uses_a_bf16_copy_that_follows_the_weights():
    model = build_model(CFG, 0).cuda()
    net, _ = inference_model(model)
    assert net is not model and net.wte.weight.dtype == torch.bfloat16
    assert net.lm_head.weight is net.wte.weight  # still tied
    with torch.no_grad():
        model.wte.weight.mul_(2)
    again, _ = inference_model(model)
    assert again is net  # the same module: a compiled decode step is reused
    torch.testing.assert_close(again.wte.weight.float(), model.wte.weight, rtol=1e-2, atol=1e-2)
    prompt = torch.randint(0, 512, (4, 64), device="cuda")
    with torch.no_grad(), autocast_for(torch.device("cuda")):
        reference = model(prompt, positions="last")
    torch.testing.assert_close(net(prompt, positions="last"), reference, rtol=5e-2, atol=1e-1)
