"""SIGKILL at many points of a run that checkpoints every step, inside the saves included:
after each kill, --resume must finish the run with weights bit-identical to the uninterrupted
run (on the CPU), or, where no complete checkpoint was written yet, refuse in one line."""

import json
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from likex.errors import LikexError
from likex.models.adapter import ADAPTER_DIR, ADAPTER_WEIGHTS
from likex.models.checkpoint import (
    CHECKPOINTS_DIR,
    OPTIMIZER_FILE,
    latest_checkpoint,
    load_model,
)

# A server that imports likex once, runs no torch operation itself (so forking it is safe),
# and per line "K OUT" forks a child running the run below that SIGKILLs itself just before
# its K-th rename, replace or link (every file a run publishes goes through one; K=0: never),
# then forks another child for `--resume OUT`. It answers one JSON line per request: the
# run's exit signal or status, its count of those calls, and the resume's status and error.
SERVER = r"""
import json, os, signal, sys, traceback
import likex.pipelines.run
from likex.cli import main
from likex.errors import LikexError

def child(fn):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stdout carries only the answers
        try:
            doc = fn()
        except LikexError as e:
            doc = {"error": str(e)}
        except BaseException:
            doc = {"error": "crash: " + traceback.format_exc()}
        os.write(w, json.dumps(doc).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status), json.loads(text or "{}")

def killed_run(kill_at, args):
    seen = 0
    def counted(fn):
        def call(*a, **kw):
            nonlocal seen
            seen += 1
            if seen == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **kw)
        return call
    os.replace, os.rename, os.link = counted(os.replace), counted(os.rename), counted(os.link)
    return {"status": main(args), "events": seen}

def resume(out):
    likex.pipelines.run.resume_experiment(out, progress=False)
    return {"status": 0}

args = json.loads(sys.argv[1])
for line in sys.stdin:
    k, out = line.split()
    signal_, run = child(lambda: killed_run(int(k), [*args, "--out", out]))
    resumed = child(lambda: resume(out))[1] if int(k) else {}
    print(json.dumps({"signal": signal_, **run, "resume": resumed}), flush=True)
"""
STEPS = 3
ARGS = [
    "run", "--preset", "tiny", "--device", "cpu", "--quiet", "--steps", str(STEPS),
    "--save-every", "1", "--batch-size", "4", "--samples", "2", "--ci-width", "0",
    "--gen-tokens", "8",
]  # fmt: skip


def start_server(args: list[str]):
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, json.dumps(args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def ask(kill_at: int, out) -> dict:
        proc.stdin.write(f"{kill_at} {out}\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    return proc, ask


@pytest.fixture(scope="module")
def server():
    proc, ask = start_server(ARGS)
    yield ask
    proc.stdin.close()
    proc.wait()


@pytest.fixture(scope="module")
def straight(server, tmp_path_factory):
    out = tmp_path_factory.mktemp("kill") / "straight"
    answer = server(0, out)
    assert answer["status"] == 0, answer
    return out, answer["events"]


def weights(run_dir) -> dict[str, torch.Tensor]:
    return dict(load_model(run_dir).state_dict())


@pytest.mark.slow
def test_resume_after_sigkill_anywhere_is_exact(server, straight, tmp_path):
    reference, events = straight
    expected = weights(reference)
    # A save is ten events (five files written, the folder renamed, two files linked into
    # place): every event of the second step's save, the first save's last events around its
    # rename, the two writes before it, and the last writes of the run (report, result.json).
    save = 10
    first = 3  # config.json and before.json come first
    points = [1, 2, first + 5, first + 6, *range(first + save, first + 2 * save)]
    points += [events - 2, events - 1, events]
    exact, refused = 0, []
    for k in points:
        out = tmp_path / f"k{k}"
        answer = server(k, out)
        assert answer["signal"] == signal.SIGKILL, (k, answer)
        error = answer["resume"].get("error")
        if error is not None:
            # killed before the first checkpoint was complete: nothing to resume, one line
            assert "no complete checkpoint" in error or "not found" in error, (k, error)
            assert latest_step(out) is None
            refused.append(k)
            continue
        got = weights(out)
        assert got.keys() == expected.keys()
        for name, tensor in expected.items():
            assert torch.equal(got[name], tensor), (k, name)
        assert json.loads((out / "result.json").read_text())["steps"] == STEPS
        steps = [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(1, STEPS + 1)), k
        exact += 1
        shutil.rmtree(out)
    print(f"{len(points)} kill points: {exact} resumed exactly, {refused} refused (no checkpoint)")
    # refused exactly where the kill came before the first checkpoint's folder was renamed in
    assert refused == [1, 2, first + 5] and exact == len(points) - 3


@pytest.mark.slow
def test_an_adapter_run_resumes_exactly_after_sigkill(tmp_path):
    """The same for a LoRA adapter run: its checkpoint (the adapter in peft's format, the
    adapter's optimizer state) resumes to bit-identical adapter weights."""
    proc, ask = start_server([*ARGS, "--adapter", "lora"])
    try:
        straight = tmp_path / "straight"
        answer = ask(0, straight)
        assert answer["status"] == 0, answer
        expected = load_file(straight / ADAPTER_DIR / ADAPTER_WEIGHTS)
        events = answer["events"]
        # kill points through the middle of the run (the second step's save among them)
        points = list(range(events // 3, 2 * events // 3, 2))
        resumed = 0
        for k in points:
            out = tmp_path / f"k{k}"
            answer = ask(k, out)
            assert answer["signal"] == signal.SIGKILL, (k, answer)
            error = answer["resume"].get("error")
            if error is not None:
                assert "no complete checkpoint" in error, (k, error)
                continue
            got = load_file(out / ADAPTER_DIR / ADAPTER_WEIGHTS)
            assert got.keys() == expected.keys()
            assert all(torch.equal(got[n], t) for n, t in expected.items()), k
            assert json.loads((out / "result.json").read_text())["steps"] == STEPS
            resumed += 1
        assert resumed >= len(points) // 2, (resumed, points)
    finally:
        proc.stdin.close()
        proc.wait()


def latest_step(run_dir):
    try:
        return latest_checkpoint(run_dir)[1]
    except LikexError:
        return None


def test_checkpoint_whose_parts_disagree_is_refused(straight, tmp_path):
    """The issue's reproduction: a later optimizer file copied into an earlier checkpoint."""
    reference, _ = straight
    early = tmp_path / "early"
    shutil.copytree(reference, early)  # the finished run; now pretend it stopped at step 2
    (ckpt,) = (early / CHECKPOINTS_DIR).iterdir()
    older = ckpt.with_name("step-000000002")
    ckpt.rename(older)
    manifest = json.loads((older / "manifest.json").read_text())
    manifest["step"] = 2
    (older / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LikexError, match="inconsistent"):
        latest_checkpoint(early)
    # the weights and optimizer agree with the manifest's hashes but not with its step; and a
    # file swapped in from another checkpoint differs from its recorded hash
    manifest["step"] = 3
    (older / "manifest.json").write_text(json.dumps(manifest))
    older.rename(ckpt)
    (ckpt / OPTIMIZER_FILE).write_bytes(b"junk")
    with pytest.raises(LikexError, match=f"inconsistent: {OPTIMIZER_FILE}"):
        latest_checkpoint(early)
