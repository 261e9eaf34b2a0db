"""The fast path: exact float32 on a CPU; bf16 autocast, fused AdamW, compile on CUDA.

The CUDA tests are marked ``gpu`` and skipped without one; bench/gpu.sh runs them.
"""

import pytest
import torch

from likex.accel import autocast_for, compiled
from likex.errors import LikexError
from likex.generate import sample, window_step
from likex.model import GPTConfig, build_model
from likex.train import TrainConfig, make_optimizer, train

CFG = GPTConfig(vocab_size=512, block_size=64, n_layer=2, n_head=4, n_embd=64)
MASK = torch.arange(512) % 9 == 0


def test_cpu_path_stays_float32():
    model = build_model(CFG, 0)
    idx = torch.randint(0, 512, (2, 16))
    with autocast_for(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
        inside = model(idx, positions="last")
    torch.testing.assert_close(inside, model(idx, positions="last"), rtol=0, atol=0)
    assert inside.dtype == torch.float32


def test_unknown_compile_mode_is_refused():
    with pytest.raises(LikexError, match="unknown --compile mode"):
        TrainConfig(compile="fastest").validate(256)
    assert compiled(window_step, "none") is window_step


@pytest.mark.gpu
def test_cuda_training_uses_bf16_autocast_and_fused_adamw(tmp_path):
    model = build_model(CFG, 0).cuda()
    cfg = TrainConfig(steps=30, batch_size=8, context_len=64, lr=1e-2)
    assert make_optimizer(model, cfg).defaults["fused"]
    with autocast_for(torch.device("cuda")):
        out = model(torch.randint(0, 512, (2, 64), device="cuda"), positions="last")
        assert out.dtype == torch.float32  # the log-softmax is taken in float32
        hidden = model.blocks[0].mlp.fc(torch.zeros(1, 64, device="cuda"))
        assert hidden.dtype == torch.bfloat16
    result = train(model, cfg, MASK, tmp_path, progress=False)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights
    assert result.loss_last < 0.2 * result.loss_first


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_training_matches_eager(tmp_path, mode):
    cfg = TrainConfig(steps=6, batch_size=8, context_len=64, lr=1e-3)
    eager = train(build_model(CFG, 0).cuda(), cfg, MASK, tmp_path / "eager", progress=False)
    cfg.compile = mode
    fast = train(build_model(CFG, 0).cuda(), cfg, MASK, tmp_path / mode, progress=False)
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
