"""likex on a real pretrained model (SmolLM2-135M, offline) against what a user would otherwise
write, measured in the same run on the same machine.

    python bench/real_model.py [--cases eval eval-again lora lora-block full step generate]
        [--steps 30]
        [--json] [--keep DIR]

CLI cases, each ``python -m likex ... --json --quiet`` in its own process (wall time from the
start of the process, peak resident memory from ``os.wait4``):

* ``eval``: ``likex eval --model smollm2-135m --like x`` (the dequantized model cached),
  sampling anew: the benchmark empties likex's measurement memo (likex.measurement.memo)
  first, and keeps it from ``LIKEX_REMEASURE``;
* ``eval-again``: the same command once more, its samples read back from the memo;
* ``lora``: the README's 30-step rate-0.1 recipe (generated contexts, every position) with
  ``--adapter lora``, measurement before and after included (the start's measurement is the
  base's: read back from the memo when ``eval`` ran before it in this benchmark);
* ``lora-block``: the ``lora`` run with ``--context-block 8``: the generated contexts of 8
  steps written in one sampling batch (32 rows) at the first step of each block;
* ``full``: the same run fine-tuning every weight.

In-process cases, likex against a plain transformers (+ peft) loop doing the same work:

* ``step``: training steps on the same corpus windows (4 x 64 tokens, every position, the
  rate-0.1 target from the frozen base), likex's ``train`` against a hand-written loop with
  ``peft.get_peft_model`` and ``torch.optim.AdamW``; seconds per step after two warm-up steps;
* ``generate``: sampling the same number of sequences and new tokens at the same batch,
  likex's ``sample`` against ``model.generate(do_sample=True, top_k=0)`` on the model as
  transformers loads it; tokens per second; and likex's ``sample`` under bf16 autocast
  against its float32 self.

The load average is printed with every number: on a shared machine it inflates them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

from likex.measurement import memo
from likex.models.cache import cache_root

CLI_CASES = ("eval", "eval-again", "lora", "lora-block", "full")
LOOP_CASES = ("step", "generate")
WARMUP = 2  # steps not timed: first-call allocations


def run_cli(args: list[str]) -> dict:
    """``python -m likex ARGS --json --quiet``: its result, wall seconds and peak RSS."""
    load = os.getloadavg()[0]
    env = {**os.environ, "LIKEX_REMEASURE": "0"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "likex", *args, "--json", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"likex {' '.join(args)} failed:\n{err.decode()[-2000:]}")
    return {
        "seconds": seconds,
        "peak_rss_gb": usage.ru_maxrss / 2**20,  # kilobytes on Linux
        "load": (load, os.getloadavg()[0]),
        "result": json.loads(out),
    }


def cli_args(case: str, steps: int, rate: float, out: str) -> list[str]:
    if case in ("eval", "eval-again"):
        return ["eval", "--model", "smollm2-135m", "--like", "x"]
    args = ["train", "--init", "smollm2-135m", "--mode", "rate", "--rate", str(rate)]
    args += ["--corpus", "builtin", "--contexts", "generated", "--positions", "all"]
    args += ["--steps", str(steps), "--out", out]
    if case == "lora-block":
        return [*args, "--adapter", "lora", "--context-block", "8"]
    return [*args, "--adapter", "lora"] if case == "lora" else args


def _windows(tokenizer, steps: int, batch: int = 4, length: int = 64) -> list[torch.Tensor]:
    from likex.data import corpus_split, corpus_windows, step_generator

    train, _ = corpus_split("builtin", tokenizer, length)
    return [
        corpus_windows(train, batch, length, step_generator(0, s))[:, :-1] for s in range(steps)
    ]


def _plain_model():
    """SmolLM2-135M as a user loads it with transformers alone (likex's cached copy of the
    dequantized GGUF, read by ``from_pretrained``: no likex code, no likex weight layout)."""
    from transformers import AutoModelForCausalLM

    from likex.models.cache import cache_root

    folder = next(p for p in cache_root().iterdir() if p.name.startswith("smollm2-135m-"))
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def step_case(steps: int, rate: float) -> dict:
    """Seconds per LoRA training step after two warm-up steps, likex against plain
    transformers + peft on the same windows with the same target and optimizer."""
    import peft

    from likex.models.adapter import AdapterConfig, add_lora
    from likex.models.start import Pretrained
    from likex.runs import read_metrics
    from likex.target import TargetSpec, rate_target_log, select_tokens
    from likex.train import train_toward
    from likex.train_config import TrainConfig

    start = Pretrained("smollm2-135m")
    model, tokenizer = start.load()
    targets = select_tokens(TargetSpec(like="x"), tokenizer.token_strings())
    windows = _windows(tokenizer, steps + WARMUP)
    adapted = add_lora(model, AdapterConfig(adapter="lora"), start.record(), seed=0)
    cfg = TrainConfig(
        steps=steps + WARMUP, batch_size=4, context_len=64, mode="rate", rate=rate,
        contexts="corpus", positions="all",
    )  # fmt: skip
    plan = cfg.resolve(start, adapter=True)
    corpus = torch.cat([torch.cat([w, w[:, -1:]], 1).flatten() for w in windows])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train_toward(adapted, plan, targets, tmp, adapted.base_view(), corpus, progress=False)
        wall = time.perf_counter() - t0
        seconds = [row["seconds"] for row in read_metrics(tmp)]
    likex = (seconds[-1] - seconds[WARMUP - 1]) / steps

    net = peft.get_peft_model(
        _plain_model(), peft.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")
    )
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=plan.lr)
    times = []
    for idx in windows:
        t0 = time.perf_counter()
        with torch.no_grad(), net.disable_adapter():
            log_r = torch.log_softmax(net(idx).logits.float(), -1)
        log_q = rate_target_log(log_r, targets.mask, rate)
        log_p = torch.log_softmax(net(idx).logits.float(), -1)
        loss = torch.nn.functional.kl_div(
            log_p.flatten(0, 1), log_q.flatten(0, 1), reduction="batchmean", log_target=True
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        float(loss)
        times.append(time.perf_counter() - t0)
    return {
        "likex_s_per_step": likex,
        "likex_wall_s": wall,
        "baseline_s_per_step": sum(times[WARMUP:]) / steps,
    }


def generate_case(samples: int, tokens: int) -> dict:
    """New tokens per second at likex's sampling batch, likex's ``sample`` against
    transformers' ``generate`` (multinomial sampling from the softmax, no top-k)."""
    from likex.generate import sample
    from likex.measurement.rates import random_prompts
    from likex.models.start import Pretrained
    from likex.throughput import sampling_batch

    model, _ = Pretrained("smollm2-135m").load()
    model.eval()
    batch = sampling_batch(model)
    prompts = random_prompts(samples, 64, model.config.vocab_size, seed=0)
    gen = torch.Generator().manual_seed(0)

    def likex_tokens_per_s(context: contextlib.AbstractContextManager) -> float:
        t0 = time.perf_counter()
        with context:
            for i in range(0, samples, batch):
                sample(model, prompts[i : i + batch], tokens, gen)
        return samples * tokens / (time.perf_counter() - t0)

    likex = likex_tokens_per_s(contextlib.nullcontext())
    # bf16 on a CPU: autocast over the same sampling (faster only where the CPU has bf16
    # arithmetic, AVX512-BF16 or AMX; likex samples in float32)
    bf16 = likex_tokens_per_s(torch.autocast("cpu", dtype=torch.bfloat16))
    hf = _plain_model()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, samples, batch):
            chunk = prompts[i : i + batch]
            hf.generate(
                chunk, attention_mask=torch.ones_like(chunk), do_sample=True, top_k=0,
                max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=0,
            )  # fmt: skip
    baseline = samples * tokens / (time.perf_counter() - t0)
    return {
        "batch": min(batch, samples),  # the rows each call samples
        "samples": samples,
        "tokens": tokens,
        "likex_tokens_per_s": likex,
        "likex_bf16_tokens_per_s": bf16,
        "baseline_tokens_per_s": baseline,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=[*CLI_CASES, *LOOP_CASES])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rate", type=float, default=0.1)
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", metavar="DIR", help="write the CLI cases' run folders here")
    a = p.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = a.keep or scratch
        for case in a.cases:
            load = os.getloadavg()[0]
            if case in CLI_CASES:
                if case == "eval":
                    shutil.rmtree(cache_root() / memo.FOLDER, ignore_errors=True)
                rows[case] = run_cli(cli_args(case, a.steps, a.rate, os.path.join(tmp, case)))
            elif case == "step":
                rows[case] = {**step_case(10, a.rate), "load": (load, os.getloadavg()[0])}
            elif case == "generate":
                rows[case] = {**generate_case(32, 100), "load": (load, os.getloadavg()[0])}
            else:
                raise SystemExit(f"unknown case {case!r}")
    if a.json:
        print(json.dumps(rows, indent=1, default=str))
        return
    print(table(rows))


def table(rows: dict) -> str:
    """The Markdown table of the README's speed section."""
    lines = ["| case | likex | baseline | ratio | load |", "| --- | --- | --- | --- | --- |"]
    for case, row in rows.items():
        load = f"{row['load'][0]:.1f}-{row['load'][1]:.1f}"
        if case in CLI_CASES:
            r, t = row["result"], row["result"].get("timings", {})
            rate = f", rate {r['rate_text']:.3f}" if "rate_text" in r else ""
            parts = ", ".join(f"{k} {v:.0f}" for k, v in t.items() if k != "total" and v)
            what = f"{row['seconds']:.0f} s, {row['peak_rss_gb']:.2f} GB{rate} ({parts})"
            lines.append(f"| {case} | {what} | - | - | {load} |")
        elif case == "step":
            ratio = row["likex_s_per_step"] / row["baseline_s_per_step"]
            lines.append(
                f"| LoRA step | {row['likex_s_per_step']:.2f} s | "
                f"{row['baseline_s_per_step']:.2f} s | {ratio:.2f}x | {load} |"
            )
        else:
            ratio = row["likex_tokens_per_s"] / row["baseline_tokens_per_s"]
            lines.append(
                f"| sampling {row['samples']} x {row['tokens']} tokens, batch {row['batch']} | "
                f"{row['likex_tokens_per_s']:.0f} tok/s | "
                f"{row['baseline_tokens_per_s']:.0f} tok/s | {ratio:.2f}x | {load} |"
            )
            bf16 = row["likex_bf16_tokens_per_s"]
            lines.append(
                f"| sampling under bf16 autocast, batch {row['batch']} | {bf16:.0f} tok/s | "
                f"{row['likex_tokens_per_s']:.0f} tok/s (float32) | "
                f"{bf16 / row['likex_tokens_per_s']:.2f}x | {load} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
