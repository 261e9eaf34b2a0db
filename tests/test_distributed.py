"""DDP on the CPU: two gloo processes, as torchrun launches them."""

import json
import os
import socket
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from likex.batches import Batches
from likex.loss import KLToTarget
from likex.models.checkpoint import load_model, save_model
from likex.models.gpt import GPTConfig, build_model
from likex.target import TargetSet, uniform_target
from likex.train import make_optimizer, train_toward
from likex.train_config import TrainConfig

CFG = GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=32)
# SGD, not Adam: Adam's update ignores the gradient's scale, so it would hide gradients
# that were summed over ranks instead of averaged.
TRAIN = TrainConfig(
    steps=4, batch_size=4, context_len=32, optimizer="sgd", lr=0.5, seed=3
).resolve()
MASK = torch.arange(300) % 7 == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # two ranks share the CPU cores, as torchrun would arrange
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        # Different initial weights per rank on purpose: DDP must start everyone from rank 0's.
        model = build_model(CFG, seed=rank)
        result = train_toward(model, TRAIN, TargetSet(MASK), out, progress=False)
        save_model(model, os.path.join(out, f"rank{rank}"))
        with open(os.path.join(out, f"losses{rank}.json"), "w") as f:
            json.dump(result.losses, f)
    finally:
        dist.destroy_process_group()


def test_two_ranks_stay_in_sync_and_match_one_process_on_the_global_batch(tmp_path):
    mp.spawn(ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [load_model(tmp_path / f"rank{r}").state_dict() for r in range(2)]
    for name in ranks[0]:
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    # rank 0 alone wrote the log: one line per step, not one per rank
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == TRAIN.steps

    # One process on the union of both ranks' batches, the global batch of 8.
    model = build_model(CFG, seed=0)
    opt = make_optimizer(model, TRAIN)
    q, kl = uniform_target(MASK), KLToTarget()
    losses = []
    for step in range(1, TRAIN.steps + 1):
        batches = Batches.of(TRAIN, 300)
        idx = torch.cat([batches(step, rank=r)[0] for r in range(2)])
        loss = kl(model(idx, positions="last"), q)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    ddp_losses = json.loads((tmp_path / "losses0.json").read_text())
    assert ddp_losses == json.loads((tmp_path / "losses1.json").read_text())
    torch.testing.assert_close(torch.tensor(ddp_losses), torch.tensor(losses), rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    start = build_model(CFG, seed=0).state_dict()
    moved = max(float((value - start[name]).abs().max()) for name, value in ranks[0].items())
    assert moved > 1e-2  # the comparison below is far tighter than what training changed
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ranks[0][name], value, rtol=1e-4, atol=1e-5)


TINY_RUN = ["run", "--preset", "tiny", "--quiet", "--samples", "2", "--ci-width", "0",
            "--gen-tokens", "8", "--batch-size", "4"]  # fmt: skip


def test_torchrun_cli_run_and_resume(tmp_path):
    out = tmp_path / "run"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
              "2", "-m", "likex"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run([*launch, *TINY_RUN, "--steps", "4", "--save-every", "2",
                            "--out", str(out), "--json"],
                           capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    result = json.loads(first.stdout)  # rank 0 alone prints
    assert result["steps"] == 4
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    again = subprocess.run([*launch, "run", "--resume", str(out), "--steps", "6", "--quiet"],
                           capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_ranks_launched_with_different_arguments_stop_with_one_line(tmp_path):
    port = free_port()
    procs = []
    for rank, lr in ((0, "0.01"), (1, "0.02")):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1"}  # fmt: skip
        cmd = [sys.executable, "-m", "likex", *TINY_RUN, "--lr", lr, "--out", str(tmp_path / "r")]
        procs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 2
        assert err.startswith("likex: error: torchrun ranks disagree") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
