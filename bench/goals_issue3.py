"""Summarise the issue-3 goal runs (pretrain, rate sweep, uniform) as Markdown.

Usage: python bench/goals_issue3.py PRETRAIN_DIR SWEEP_DIR UNIFORM_DIR
Reads the result.json / sweep.json files the commands wrote; computes nothing new.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from likex.stats.intervals import fmt_rate


def _ci(r: dict, key: str) -> str:
    return fmt_rate(r[key], r[f"{key}_ci"])


def main(pre: Path, sweep: Path, uniform: Path) -> None:
    p = json.loads((pre / "result.json").read_text())
    print(
        f"pretrain: {p['steps']} steps, {p['train_seconds']:.0f} s training; held-out "
        f"perplexity {p['ppl_before']:.1f} -> {p['ppl_after']:.2f} ({p['heldout_tokens']} tokens)"
    )
    s = json.loads((sweep / "sweep.json").read_text())
    runs = [json.loads((Path(row["run_dir"]) / "result.json").read_text()) for row in s["rows"]]
    if (uniform / "result.json").is_file():
        runs.append(json.loads((uniform / "result.json").read_text()))
    print()
    print(
        "| target | steps | rate, real-text prompts | rate, random prompts | ppl R -> P | "
        "ppl_floor | ppl vs floor | KL(R‖P) | train s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in runs:
        name = f"rate {r['rate_requested']}" if r["mode"] == "rate" else r["mode"]
        floor = r.get("ppl_floor")
        floor_txt = f"{floor:.2f} ({floor / r['ppl_reference'] - 1:+.1%})" if floor else "-"
        vs = f"{r['ppl'] / floor - 1:+.1%}" if floor else "-"
        print(
            f"| {name} | {r['steps']} | {_ci(r, 'rate_text')} n={r['samples_text']} | "
            f"{_ci(r, 'rate_after')} n={r['samples']} | {r['ppl_reference']:.2f} -> "
            f"{r['ppl']:.2f} ({r['ppl'] / r['ppl_reference'] - 1:+.1%}) | {floor_txt} | {vs} | "
            f"{r['kl_to_reference']:.4f} | {r['train_seconds']:.0f} |"
        )
    r0 = runs[0]
    print()
    print(
        f"reference: rate on real-text prompts {_ci(r0, 'rate_text_before')}, on random "
        f"prompts {_ci(r0, 'rate_before')}; target tokens in the held-out text "
        f"{r0['text_target_frequency']:.2%}"
    )


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:4]))
