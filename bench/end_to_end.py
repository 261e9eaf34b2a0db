"""``likex run`` end to end, one fresh process per run: where every second goes.

    python bench/end_to_end.py [--base "--preset model5"] [--flags "" "--cuda-graph" ...]
                               [--repeat 2] [--save FILE]

Each flag set runs ``--repeat`` times in a row (the second run of a compiled configuration
shows what torch's compile caches save). A row gives the wall clock measured from outside,
process start included; the CPU seconds of the process (user + system, all its threads); and
the run's own breakdown from its result.json (``timings``: start-up, model, measurement
before, training, measurement after, checkpoint, report; "other" is the wall clock they leave:
config and metrics files, the report's text, the interpreter's exit). The machine's load
average before and after is printed, since wall clock on a shared machine is inflated.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("startup", "model", "measure_before", "train", "measure_after", "checkpoint", "report")
HEADER = (
    "flags", "run", "wall s", "CPU s", "start-up", "model", "before", "train", "after",
    "checkpoint", "report", "other", "train_seconds", "rate after (95% CI)",
)  # fmt: skip


def run_once(base: list[str], flags: list[str]) -> dict:
    """One ``likex run`` in a fresh process: its result and what it cost from outside."""
    with tempfile.TemporaryDirectory(prefix="likex-e2e-") as tmp:
        cmd = [sys.executable, "-m", "likex", "run", *base, *flags, "--quiet", "--json"]
        cmd += ["--out", str(Path(tmp) / "run")]
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "result": json.loads(done.stdout)}


def row(flags: str, n: int, measured: dict) -> list[str]:
    r = measured["result"]
    t = r["timings"]
    parts = [t[p] or 0.0 for p in PARTS]
    other = measured["wall"] - sum(parts)
    lo, hi = r["rate_after_ci"]
    return [
        flags or "(none)",
        str(n),
        f"{measured['wall']:.1f}",
        f"{measured['cpu']:.1f}",
        *(f"{p:.1f}" for p in parts),
        f"{other:.1f}",
        f"{r['train_seconds']:.1f}",
        f"{r['rate_after']:.3f} [{lo:.3f}, {hi:.3f}]",
    ]


def table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base", default="", help="flags of every run, e.g. '--preset model5'")
    p.add_argument("--flags", nargs="+", default=[""], help="one flag set per string")
    p.add_argument("--repeat", type=int, default=1, help="runs per flag set, in a row")
    p.add_argument("--save", help="also write every run's measurements to this JSON file")
    args = p.parse_args()
    base = shlex.split(args.base)
    load_before = os.getloadavg()
    rows, runs = [], []
    for flags in args.flags:
        for n in range(1, args.repeat + 1):
            measured = run_once(base, shlex.split(flags))
            runs.append({"flags": flags, "run": n, **measured})
            rows.append(row(flags, n, measured))
            print(table(rows[-1:]).splitlines()[-1], flush=True)  # progress, one row per run
    load_after = os.getloadavg()
    r = runs[0]["result"]
    print(f"\nlikex run {args.base} FLAGS --quiet --json; device {r['device']}; "
          f"{time.strftime('%Y-%m-%d')}")  # fmt: skip
    print(table(rows))
    print(
        f"\nwall: measured outside the process, its start included; CPU: user + system seconds "
        f"of the process; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    if args.save:
        Path(args.save).write_text(json.dumps({"base": args.base, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
