"""likex on a real pretrained model (SmolLM2-135M, offline) with default settings: wall time
and peak memory of the CLI, each command in its own process.

    python bench/real_model.py [--cases eval rate] [--steps 30] [--rate 0.1] [--json]

Cases: ``eval`` is ``likex eval --model smollm2-135m --like x`` (random and real-text rates,
perplexity); ``rate`` is a rate-mode run with its before/after measurement
(``likex train --init smollm2-135m --mode rate --rate A --corpus builtin --contexts corpus
--steps N``). Peak memory is the child's own peak resident set (``os.wait4``). The load
average is printed next to every timing: on a shared machine it inflates them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def run_case(args: list[str]) -> dict:
    """Run ``python -m likex ARGS --json --quiet``; its result, wall seconds and peak RSS."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "likex", *args, "--json", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"likex {' '.join(args)} failed:\n{err.decode()[-2000:]}")
    return {
        "args": args,
        "seconds": seconds,
        "peak_rss_gb": usage.ru_maxrss / 2**20,  # kilobytes on Linux
        "load_before": load,
        "load_after": os.getloadavg()[0],
        "result": json.loads(out),
    }


def fmt_rate(r: dict, key: str) -> str:
    """``key`` and ``key_ci`` of a likex JSON result as "rate [lo, hi]"."""
    if r.get(key) is None:
        return "-"
    lo, hi = r[f"{key}_ci"]
    return f"{r[key]:.3f} [{lo:.3f}, {hi:.3f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=["eval", "rate"], choices=["eval", "rate"])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rate", type=float, default=0.1)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in a.cases:
            if case == "eval":
                args = ["eval", "--model", "smollm2-135m", "--like", "x"]
            else:
                args = ["train", "--init", "smollm2-135m", "--mode", "rate"]
                args += ["--rate", str(a.rate), "--corpus", "builtin", "--contexts", "corpus"]
                args += ["--steps", str(a.steps), "--out", os.path.join(tmp, "rate")]
            rows.append({"case": case, **run_case(args)})
    if a.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'case':6} {'wall s':>8} {'peak GB':>8} {'load':>11}  measured")
    for row in rows:
        r = row["result"]
        if row["case"] == "eval":
            what = f"random {fmt_rate(r.get('rate'))}, text {fmt_rate(r.get('rate_text'))}"
            what += f", ppl {r.get('ppl')}"
        else:
            what = f"text {fmt_rate(r.get('rate_text_before'))} -> {fmt_rate(r.get('rate_text'))}"
            what += f", ppl {r.get('ppl_before')} -> {r.get('ppl')} (floor {r.get('ppl_floor')})"
        load = f"{row['load_before']:.1f}-{row['load_after']:.1f}"
        print(f"{row['case']:6} {row['seconds']:8.0f} {row['peak_rss_gb']:8.2f} {load:>11}  {what}")


if __name__ == "__main__":
    main()
