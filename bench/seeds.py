"""The seed experiment across seeds: does `likex run`'s default hold, and how long does it take?

    python bench/seeds.py [--seeds 0,1,2,3,4] [--out bench/out/seeds] [-- extra likex run args]

Runs `likex run --json` once per seed (a separate process, so wall time includes start-up and
measurement) and prints a Markdown table of what each run measured.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from likex.stats.intervals import fmt_rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--out", default="bench/out/seeds")
    parser.add_argument("extra", nargs="*", help="more `likex run` arguments (after --)")
    args = parser.parse_args()
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        out = Path(args.out) / f"seed{seed}"
        cmd = [
            sys.executable,
            "-m",
            "likex",
            "run",
            "--json",
            "--quiet",
            "--seed",
            str(seed),
            "--out",
            str(out),
            *args.extra,
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        rows.append((seed, wall, json.loads(proc.stdout)))

    def ci(r: dict, key: str) -> str:
        return fmt_rate(r[key], r[f"{key}_ci"])

    r0 = rows[0][2]
    print(
        f"preset {r0['preset']}, {r0['params']:,} params, {r0['steps']} steps, {r0['device']}; "
        f"prompts: {r0['prompts']}"
    )
    print()
    print(
        "| seed | loss first -> last | x before | x after | rate before (95% CI), n | "
        "rate after (95% CI), n | train s | measure s | wall s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for seed, wall, r in rows:
        n = r["gen_tokens"]
        print(
            f"| {seed} | {r['loss_first']:.3f} -> {r['loss_last']:.4f} | {r['x_before']}/{n} | "
            f"{r['x_after']}/{n} | {ci(r, 'rate_before')}, {r['samples_before']} | "
            f"{ci(r, 'rate_after')}, {r['samples']} | {r['train_seconds']:.1f} | "
            f"{r['measure_seconds']:.1f} | {wall:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
