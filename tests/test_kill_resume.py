"""SIGKILL at many points of a run that checkpoints every step, inside the saves included:
after each kill, --resume must finish the run with weights bit-identical to the uninterrupted
run (on the CPU), or, where no complete checkpoint was written yet, refuse in one line."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from likex.cli import main
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


# ---- Ctrl-C and SIGTERM keep the work. A server as above forks, per request, a child that
# runs `likex ARGS` and sends itself a signal at a chosen moment: after its AT-th metrics line
# ("step"), as the AT-th sampling call of a measurement starts ("sample"), or stops for good
# after its AT-th metrics line once it has written its pid into the FIFO named by `pause`
# (the test then does what it wants and kills it). The child's stderr goes to a file.
SIGNAL_SERVER = r"""
import json, os, signal, sys
import likex.measurement.rates, likex.pipelines.persist, likex.pipelines.sweep, likex.train
from likex.cli import main

def run(args, hook, at, sig, err, pause=None):
    pid = os.fork()
    if pid:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    calls = 0
    def fire():
        nonlocal calls
        calls += 1
        if calls != at:
            return
        if pause:
            with open(pause, "w") as f:
                f.write(str(os.getpid()))
            while True:
                signal.pause()
        os.kill(os.getpid(), sig)
    if hook == "step":
        append = likex.train.append_jsonl
        def after_line(path, row):
            append(path, row)
            fire()
        likex.train.append_jsonl = after_line
    else:
        sample = likex.measurement.rates.sample
        def before_sample(*a, **kw):
            fire()
            return sample(*a, **kw)
        likex.measurement.rates.sample = before_sample
    code = main(args)
    sys.stderr.flush()
    os._exit(code)

for line in sys.stdin:
    print(json.dumps({"status": run(**json.loads(line))}), flush=True)
"""
SMALL = ["--samples", "2", "--ci-width", "0", "--gen-tokens", "8"]
# a corpus just long enough for the tiny model's held-out split (builtin's takes seconds)
TEXT = " ".join(f"Sentence {i} says a few plain words about the weather." for i in range(300))


@pytest.fixture(scope="module")
def signals():
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGNAL_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def send(args, hook, at, sig, err, pause=None) -> None:
        request = {"args": [str(a) for a in args], "hook": hook, "at": at, "sig": sig}
        proc.stdin.write(json.dumps({**request, "err": str(err), "pause": pause}) + "\n")
        proc.stdin.flush()

    def answer() -> int:
        return json.loads(proc.stdout.readline())["status"]

    def ask(args, hook, at, sig, err) -> tuple[int, str]:
        send(args, hook, at, sig, err)
        return answer(), err.read_text()

    ask.send, ask.answer = send, answer
    yield ask
    proc.stdin.close()
    proc.wait()


def last_line(err: str) -> str:
    """The last line as a terminal shows it: a progress bar redraws its line with \\r, so a
    message glued onto a bar would share its line."""
    return err.rstrip("\n").split("\n")[-1]


def test_ctrl_c_writes_a_checkpoint_at_the_step_reached(signals, straight, tmp_path):
    """SIGINT after step 2 of 3 (no --save-every: only the interruption saves), with the
    progress bar shown: the message is on its own line, and the resumed run is exact."""
    out = tmp_path / "stopped"
    args = [a for a in ARGS if a != "--quiet"]
    args = args[: args.index("--save-every")] + args[args.index("--save-every") + 2 :]
    status, err = signals([*args, "--out", out], "step", 2, signal.SIGINT, tmp_path / "err")
    assert status == 130, err
    assert "train:" in err  # the bar was shown, and ended its line before the message
    assert last_line(err) == f"likex: interrupted at step 2; --resume {out} continues from step 2"
    assert latest_step(out) == 2 and not (out / "result.json").exists()
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    expected = weights(straight[0])
    for name, tensor in weights(out).items():
        assert torch.equal(tensor, expected[name]), name


def test_sigterm_during_the_measurement_removes_the_run_and_says_so(signals, tmp_path):
    out = tmp_path / "measuring"
    status, err = signals([*ARGS, "--out", out], "sample", 1, signal.SIGTERM, tmp_path / "err")
    assert status == 143, err
    assert last_line(err) == (
        f"likex: interrupted before training (nothing was trained); removed the half-written {out}"
    )
    assert not out.exists()  # nothing left to block a run into it again


def test_two_resumes_at_once(signals, straight, tmp_path, capsys):
    """A resume holds its run folder's lock: a second resume, or a run into it, is refused
    in one line; SIGKILL releases the lock (the kernel's), and the run resumes exactly once."""
    out = tmp_path / "busy"
    shutil.copytree(straight[0], out)
    fifo = tmp_path / "paused"
    os.mkfifo(fifo)
    signals.send(
        ["run", "--resume", out, "--steps", "5", "--quiet"], "step", 1, 0, tmp_path / "e", str(fifo)
    )
    holder = int(fifo.read_text())  # the first resume has written step 4 and holds the lock
    try:
        assert main(["run", "--resume", str(out), "--steps", "5"]) == 2
        err = capsys.readouterr().err
        busy = f"{out} is in use by another likex process (pid {holder}): wait for it to end"
        assert err == f"likex: error: {busy}\n"
        assert main(["run", *ARGS, "--out", str(out)]) == 2
        assert "already exists and is not empty" in capsys.readouterr().err
    finally:  # the holder waits for this signal, whatever happened above
        os.kill(holder, signal.SIGKILL)
        assert signals.answer() == -signal.SIGKILL
    assert main(["run", "--resume", str(out), "--steps", "5", "--quiet"]) == 0
    steps = [json.loads(r)["step"] for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


def test_an_interrupted_sweep_keeps_its_finished_strengths(signals, tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "--init", "scratch", "--preset", "tiny", "--device", "cpu", "--quiet"]
    args += ["--steps", "2", "--batch-size", "4", "--rates", "0.2,0.3,0.4", "--like", "z"]
    (tmp_path / "text.txt").write_text(TEXT)
    args += [*SMALL, "--score-tokens", "64", "--corpus", tmp_path / "text.txt", "--out", out]
    status, err = signals(args, "step", 3, signal.SIGINT, tmp_path / "err")  # rate-0.3, step 1
    assert status == 130, err
    assert last_line(err) == (
        f"likex: rate-0.3 interrupted at step 1; --resume {out}/rate-0.3 continues from step 1; "
        f"finished and kept in {out}: rate-0.2; to run again: --rates 0.3,0.4"
    )
    assert (out / "rate-0.2" / "result.json").exists() and latest_step(out / "rate-0.3") == 1
    assert not (out / "rate-0.4").exists() and not (out / "sweep.json").exists()


def test_an_interrupted_persist_keeps_its_model(signals, straight, tmp_path):
    out = tmp_path / "persist"
    args = ["persist", "--model", straight[0], "--steps", "2", "--eval-every", "2", "--quiet"]
    (tmp_path / "text.txt").write_text(TEXT)
    args += ["--samples", "2", "--gen-tokens", "8", "--device", "cpu", "--out", out]
    args += ["--corpus", tmp_path / "text.txt"]
    status, err = signals(args, "step", 1, signal.SIGTERM, tmp_path / "err")
    assert status == 143, err
    assert last_line(err) == (
        f"likex: interrupted at step 1; {out} keeps the model of step 1 (this command does not "
        "resume)"
    )
    assert latest_step(out) == 1 and load_model(out) is not None
