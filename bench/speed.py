"""likex against the course-style loop, in one run on one device: training and sampling speed.

    python bench/speed.py [--device cpu|cuda] [--preset cpu|model5|tiny] [--compile MODE]
                          [--cuda-graph] [--variants V ...] [--json]

The baseline is written the way the original course did it: float32, the model's
log-softmax over every position of every sequence and then the last row taken for the loss,
plain AdamW, and sampling that re-forwards the whole window (with the full log-softmax) for
each new token. likex runs its own ``train()`` and ``sample()``: the head on the last position
only, the last block's query/attention/MLP for the last position only, and on CUDA bf16
autocast, fused AdamW, and optionally torch.compile and a CUDA graph of the whole step.
``--variants`` also times other likex configurations in the same run (e.g. ``none
none+graph default+graph reduce-overhead``), so the effect of each piece is measured, not assumed.

Both sides start from the same initial weights and see the same batches (likex's batches for
the steps being timed). Each case runs in its own process so its peak memory is its own
(CUDA: peak allocated; CPU: peak resident set of the process). likex trains the full
``--steps`` (so the seed's result can be checked: the rate after training is printed with its
95% interval); a baseline timed for fewer steps is extrapolated to ``--steps`` and says so.
Warm-up steps (and compilation) are timed separately and excluded from steps/s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from likex.accel import COMPILE_MODES, GRAPH_EAGER_STEPS
from likex.batches import Batches
from likex.device import resolve_device
from likex.generate import sample
from likex.io import atomic_write_json
from likex.measurement.rates import PromptKind, random_prompts, rate_from_hits
from likex.models.checkpoint import load_model
from likex.models.gpt import DEFAULT_LR, GPT, GPTConfig, build_model, preset_config
from likex.models.tokenizer import gpt2
from likex.runs import device_name, read_metrics
from likex.stats.intervals import fmt_rate
from likex.target import TargetSet, TargetSpec, select_tokens, uniform_target
from likex.train import train_toward
from likex.train_config import TrainConfig, TrainPlan

SEED = 0
# Excluded from steps/s: a CUDA graph's eager steps and the step that captures it (with
# torch.compile, the compilation happens in the first of them).
WARMUP_STEPS = GRAPH_EAGER_STEPS + 1

# Dense bf16 tensor-core peak (FLOP/s) by device name, for MFU; other cards report none.
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))


@dataclass
class BenchConfig:
    device: str
    preset: str
    batch: int
    context: int
    steps: int  # likex trains this many steps (the seed: 200)
    baseline_steps: int  # timed baseline steps, extrapolated to `steps` when fewer
    gen_seqs: int
    gen_tokens: int
    baseline_gen_tokens: int
    compile: str
    cuda_graph: bool
    variants: tuple[str, ...]  # other likex configurations to time: "MODE" or "MODE+graph"
    threads: int | None  # torch CPU threads in every case (None: torch's default)


# --- the course-style baseline ------------------------------------------------------------


def course_train_step(model: GPT, opt: torch.optim.Optimizer, idx: torch.Tensor, q: torch.Tensor):
    log_probs = model(idx, positions="all")  # [B, T, V]: log-softmax at every position
    loss = F.kl_div(log_probs[:, -1, :], q, reduction="batchmean")
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


@torch.no_grad()
def course_generate(model: GPT, prompt: torch.Tensor, n_new: int, gen: torch.Generator):
    seq = prompt
    for _ in range(n_new):
        log_probs = model(seq[:, -model.config.block_size :], positions="all")[:, -1, :]
        token = torch.multinomial(log_probs.exp(), 1, generator=gen)
        seq = torch.cat([seq, token], dim=1)
    return seq[:, prompt.shape[1] :]


# --- the cases, one process each --------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _setup(cfg: BenchConfig) -> tuple[torch.device, GPTConfig, torch.Tensor]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    model_cfg = preset_config(cfg.preset)
    mask = select_tokens(TargetSpec(like="x"), gpt2().token_strings()).mask
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    return device, model_cfg, mask


def _train_cfg(cfg: BenchConfig, steps: int) -> TrainPlan:
    return TrainConfig(
        steps=steps,
        batch_size=cfg.batch,
        context_len=cfg.context,
        lr=DEFAULT_LR[cfg.preset],
        seed=SEED,
        compile=cfg.compile,
        cuda_graph=cfg.cuda_graph,
    ).resolve()


def case_train_likex(cfg: BenchConfig, out_dir: str) -> dict:
    """One ordinary ``train()`` of ``cfg.steps`` steps; its per-step log separates the warm-up
    steps (which include any compilation) from the steady state."""
    device, model_cfg, mask = _setup(cfg)
    model = build_model(model_cfg, SEED).to(device)
    plan = _train_cfg(cfg, cfg.steps)
    trained = train_toward(model, plan, TargetSet(mask), out_dir, progress=False)
    seconds = {m["step"]: m["seconds"] for m in read_metrics(out_dir)}
    warm = seconds[WARMUP_STEPS]
    return {
        "steps_per_s": (cfg.steps - WARMUP_STEPS) / (seconds[cfg.steps] - warm),
        "warmup_seconds": warm,
        "total_seconds": seconds[cfg.steps],
        "loss_first": trained.losses[0],
        "loss_last": trained.losses[-1],
        "peak_bytes": _peak_bytes(device),
    }


def case_train_baseline(cfg: BenchConfig) -> dict:
    device, model_cfg, mask = _setup(cfg)
    model = build_model(model_cfg, SEED).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=DEFAULT_LR[cfg.preset], weight_decay=0.01)
    q = uniform_target(mask).to(device)
    batches = Batches.of(_train_cfg(cfg, cfg.steps), model_cfg.vocab_size)
    model.train()
    t0 = time.perf_counter()
    losses = []
    for step in range(1, WARMUP_STEPS + 1):
        idx = batches(step)[0].to(device)
        losses.append(float(course_train_step(model, opt, idx, q).detach()))
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for step in range(WARMUP_STEPS + 1, WARMUP_STEPS + cfg.baseline_steps + 1):
        idx = batches(step)[0].to(device)
        losses.append(float(course_train_step(model, opt, idx, q).detach()))  # syncs, as likex
    seconds = time.perf_counter() - t0
    return {
        "steps_per_s": cfg.baseline_steps / seconds,
        "warmup_seconds": warm,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "peak_bytes": _peak_bytes(device),
    }


def _gen_setup(cfg: BenchConfig, model_dir: str):
    device, _, mask = _setup(cfg)
    model = load_model(model_dir, device)
    cfg_m = model.config
    prompts = random_prompts(cfg.gen_seqs, cfg_m.block_size, cfg_m.vocab_size, SEED).to(device)
    return device, model, mask, prompts


def _rate(mask: torch.Tensor, tokens: torch.Tensor) -> dict:
    est = rate_from_hits(mask[tokens.cpu()].sum(dim=1), tokens.shape[1], PromptKind.RANDOM)
    return {"rate": est.rate, "ci": list(est.ci), "tokens": est.tokens, "sequences": est.sequences}


def case_gen_likex(cfg: BenchConfig, model_dir: str) -> dict:
    device, model, mask, prompts = _gen_setup(cfg, model_dir)
    gen = torch.Generator(device=device).manual_seed(SEED)
    t0 = time.perf_counter()
    sample(model, prompts, 2, generator=gen, compile=cfg.compile)  # warm-up / compilation
    _sync(device)
    warm = time.perf_counter() - t0
    gen = torch.Generator(device=device).manual_seed(SEED)
    t0 = time.perf_counter()
    tokens = sample(model, prompts, cfg.gen_tokens, generator=gen, compile=cfg.compile)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {
        "tokens_per_s": tokens.numel() / seconds,
        "seconds": seconds,
        "warmup_seconds": warm,
        "rate_after": _rate(mask, tokens),
        "peak_bytes": _peak_bytes(device),
    }


def case_gen_baseline(cfg: BenchConfig, model_dir: str) -> dict:
    device, model, mask, prompts = _gen_setup(cfg, model_dir)
    model.eval()
    gen = torch.Generator(device=device).manual_seed(SEED)
    course_generate(model, prompts, 1, gen)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    tokens = course_generate(model, prompts, cfg.baseline_gen_tokens, gen)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {
        "tokens_per_s": tokens.numel() / seconds,
        "seconds": seconds,
        "rate_after": _rate(mask, tokens),
        "peak_bytes": _peak_bytes(device),
    }


def _in_process(fn, *args) -> dict:
    """Run one case in a fresh process, so its peak memory and compile caches are its own."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def _try_case(fn, *args) -> dict:
    """A variant's case; one that fails is reported in the table rather than ending the run."""
    try:
        return _in_process(fn, *args)
    except Exception as e:  # noqa: BLE001 - any failure of an optional variant is a result
        return {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"}


def variant_config(cfg: BenchConfig, spec: str) -> BenchConfig:
    """``cfg`` with the likex configuration named by ``spec``: "MODE" or "MODE+graph"."""
    mode, _, graph = spec.partition("+")
    if mode not in COMPILE_MODES or graph not in ("", "graph"):
        raise ValueError(f"variant {spec!r}: expected MODE or MODE+graph, MODE in {COMPILE_MODES}")
    return replace(cfg, compile=mode, cuda_graph=graph == "graph", variants=())


def variant_name(compile_mode: str, cuda_graph: bool) -> str:
    return f"compile {compile_mode}" + (", CUDA graph of the step" if cuda_graph else "")


def _variant_row(main: BenchConfig, cfg: BenchConfig, trained: dict, sampled: dict) -> dict:
    row: dict = {"variant": variant_name(cfg.compile, cfg.cuda_graph)}
    if "error" in trained:
        row["train_error"] = trained["error"]
    else:
        row.update(
            train_seconds=main.steps / trained["steps_per_s"],
            train_warmup_seconds=trained["warmup_seconds"],
            loss_last=trained["loss_last"],
        )
    if "error" in sampled:
        row["gen_error"] = sampled["error"]
    else:
        row.update(gen_seconds=sampled["seconds"], gen_warmup_seconds=sampled["warmup_seconds"])
    return row


# --- FLOPs and the table ----------------------------------------------------------------------


def baseline_step_flops(c: GPTConfig, batch: int, T: int) -> float:
    """Matrix FLOPs of the course-style step: every block and the head at every position."""
    d = c.n_embd
    per_token_block = 2 * d * 3 * d + 2 * d * d + 2 * 2 * d * c.mlp_ratio * d
    blocks = c.n_layer * (per_token_block * T + 2 * T * T * d)
    return 3.0 * batch * (blocks + 2 * d * c.vocab_size * T)


def train_step_flops(c: GPTConfig, batch: int, T: int) -> float:
    """Matrix FLOPs of likex's training step, counted for the work it actually does.

    Blocks 0..L-2 see all T positions; the last block computes keys/values for all T but its
    query, attention output, projection and MLP for the last position only; the head is applied
    to the last position only. Backward is counted as twice the forward.
    """
    d = c.n_embd
    per_token_block = 2 * d * 3 * d + 2 * d * d + 2 * 2 * d * c.mlp_ratio * d
    full_blocks = (c.n_layer - 1) * (per_token_block * T + 2 * T * T * d)  # causal attention
    last_block = 2 * d * 2 * d * T + (per_token_block - 2 * d * 2 * d) + 2 * 2 * T * d
    head = 2 * d * c.vocab_size
    return 3.0 * batch * (full_blocks + last_block + head)


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_BF16:
        if key in name:
            return flops
    return None


def run(cfg: BenchConfig, progress: bool) -> dict:
    device = resolve_device(cfg.device)

    def say(msg: str) -> None:
        if progress:
            print(f"[bench] {msg}", file=sys.stderr, flush=True)

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        say(f"likex: training {cfg.steps} steps ({cfg.preset}, {cfg.batch}x{cfg.context})")
        tl = _in_process(case_train_likex, cfg, tmp)
        say(f"baseline: training {cfg.baseline_steps} timed steps")
        tb = _in_process(case_train_baseline, cfg)
        say(f"likex: sampling {cfg.gen_seqs} x {cfg.gen_tokens} tokens")
        gl = _in_process(case_gen_likex, cfg, tmp)
        say(f"baseline: sampling {cfg.gen_seqs} x {cfg.baseline_gen_tokens} tokens")
        gb = _in_process(case_gen_baseline, cfg, tmp)
        variants = [_variant_row(cfg, cfg, tl, gl)]
        sampled = {cfg.compile: gl}
        for spec in cfg.variants:
            vcfg = variant_config(cfg, spec)
            if (vcfg.compile, vcfg.cuda_graph) == (cfg.compile, cfg.cuda_graph):
                continue
            say(f"variant {spec}: training")
            vt = _try_case(case_train_likex, vcfg, os.path.join(tmp, spec))
            if vcfg.compile not in sampled:
                say(f"variant {spec}: sampling")
                sampled[vcfg.compile] = _try_case(case_gen_likex, vcfg, tmp)
            variants.append(_variant_row(cfg, vcfg, vt, sampled[vcfg.compile]))
    model_cfg = preset_config(cfg.preset)
    result = {
        "device": device_name(device),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "torch": torch.__version__,
        **asdict(cfg),
        "warmup_steps": WARMUP_STEPS,
        "train_steps_per_s_likex": tl["steps_per_s"],
        "train_steps_per_s_baseline": tb["steps_per_s"],
        "train_seconds_likex": cfg.steps / tl["steps_per_s"],
        "train_seconds_baseline": cfg.steps / tb["steps_per_s"],
        "train_seconds_baseline_extrapolated": cfg.baseline_steps < cfg.steps,
        "train_speedup": tl["steps_per_s"] / tb["steps_per_s"],
        "warmup_seconds_likex": tl["warmup_seconds"],
        "warmup_seconds_baseline": tb["warmup_seconds"],
        "loss_first": tl["loss_first"],
        "loss_last_likex": tl["loss_last"],
        "train_peak_bytes_likex": tl["peak_bytes"],
        "train_peak_bytes_baseline": tb["peak_bytes"],
        "gen_tokens_per_s_likex": gl["tokens_per_s"],
        "gen_tokens_per_s_baseline": gb["tokens_per_s"],
        "gen_speedup": gl["tokens_per_s"] / gb["tokens_per_s"],
        "gen_seconds_likex": gl["seconds"],
        "gen_warmup_seconds_likex": gl["warmup_seconds"],
        "gen_peak_bytes_likex": gl["peak_bytes"],
        "gen_peak_bytes_baseline": gb["peak_bytes"],
        "rate_after_likex": gl["rate_after"],
        "train_total_seconds_likex": tl["total_seconds"],
        "variant_results": variants,
        "rate_after_baseline_sampler": gb["rate_after"],
        "peak_memory_kind": "peak allocated (CUDA)"
        if device.type == "cuda"
        else "peak resident set of the process",
        "train_step_flops_likex": train_step_flops(model_cfg, cfg.batch, cfg.context),
        "train_step_flops_baseline": baseline_step_flops(model_cfg, cfg.batch, cfg.context),
        "threads": torch.get_num_threads() if cfg.threads is None else cfg.threads,
        # other work on the machine slows both sides; the 1-minute load average says how much
        "load_average_before_after": [load_before, os.getloadavg()[0]],
    }
    peak = peak_flops(device)
    result["mfu_likex"] = (
        result["train_step_flops_likex"] * tl["steps_per_s"] / peak if peak else None
    )
    return result


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def format_table(r: dict) -> str:
    extrap = (
        f" (extrapolated from {r['baseline_steps']} timed steps)"
        if r["train_seconds_baseline_extrapolated"]
        else ""
    )
    rows = [
        ("train steps/s", f"{r['train_steps_per_s_likex']:.2f}",
         f"{r['train_steps_per_s_baseline']:.3f}", f"{r['train_speedup']:.1f}x"),
        (f"seconds for {r['steps']} steps", f"{r['train_seconds_likex']:.2f}",
         f"{r['train_seconds_baseline']:.1f}{extrap}", f"{r['train_speedup']:.1f}x"),
        (f"warm-up/compile seconds of the first {r['warmup_steps']} steps (excluded)",
         f"{r['warmup_seconds_likex']:.2f}", f"{r['warmup_seconds_baseline']:.2f}", ""),
        (f"likex's {r['steps']} steps as run, warm-up included",
         f"{r['train_total_seconds_likex']:.2f}", "", ""),
        ("generated tokens/s", f"{r['gen_tokens_per_s_likex']:.1f}",
         f"{r['gen_tokens_per_s_baseline']:.1f}", f"{r['gen_speedup']:.1f}x"),
        (f"seconds for {r['gen_seqs']} x {r['gen_tokens']} tokens",
         f"{r['gen_seconds_likex']:.2f}",
         f"{r['gen_seqs'] * r['gen_tokens'] / r['gen_tokens_per_s_baseline']:.1f}"
         + (" (extrapolated)" if r["baseline_gen_tokens"] < r["gen_tokens"] else ""),
         f"{r['gen_speedup']:.1f}x"),
        ("peak memory, training", _mib(r["train_peak_bytes_likex"]),
         _mib(r["train_peak_bytes_baseline"]),
         f"{r['train_peak_bytes_baseline'] / r['train_peak_bytes_likex']:.1f}x less"),
        ("peak memory, sampling", _mib(r["gen_peak_bytes_likex"]),
         _mib(r["gen_peak_bytes_baseline"]),
         f"{r['gen_peak_bytes_baseline'] / r['gen_peak_bytes_likex']:.1f}x less"),
    ]  # fmt: skip
    if r["mfu_likex"] is not None:
        rows.append(("MFU (bf16 peak)", f"{r['mfu_likex']:.1%}", "", ""))
    ra, rb = r["rate_after_likex"], r["rate_after_baseline_sampler"]
    header = (
        f"device {r['device']}, preset {r['preset']}, batch {r['batch']} x {r['context']}, "
        f"likex: {variant_name(r['compile'], r['cuda_graph'])}, torch {r['torch']}, {r['date']}"
    )
    footer = [
        f"loss {r['loss_first']:.3f} -> {r['loss_last_likex']:.4f} after {r['steps']} likex steps",
        f"rate of 'x' tokens after training, likex sampler: {fmt_rate(ra['rate'], ra['ci'])} "
        f"(n={ra['tokens']} tokens in {ra['sequences']} samples, random-token prompts)",
        f"  course-style sampler, same model: {fmt_rate(rb['rate'], rb['ci'])} "
        f"(n={rb['tokens']} tokens in {rb['sequences']} samples)",
        f"peak memory is the {r['peak_memory_kind']}",
        f"matrix FLOPs per training step: likex {r['train_step_flops_likex'] / 1e9:.1f} G, "
        f"baseline {r['train_step_flops_baseline'] / 1e9:.1f} G "
        f"({r['train_step_flops_baseline'] / r['train_step_flops_likex']:.1f}x)",
        f"torch threads {r['threads']}; machine load average "
        f"{r['load_average_before_after'][0]:.1f} before, "
        f"{r['load_average_before_after'][1]:.1f} after",
    ]
    if r["mfu_likex"] is not None:
        footer.append(
            f"MFU counts {r['train_step_flops_likex'] / 1e9:.1f} GFLOP per likex step "
            "(head on the last position only; backward = 2x forward)"
        )
    tables = [header, "", _markdown(("", "likex", "baseline", "ratio"), rows)]
    if len(r["variant_results"]) > 1:
        tables += ["", "likex configurations, same run (seconds exclude warm-up/compile):", "",
                   _markdown(("likex", f"{r['steps']} steps, s", "warm-up, s",
                              f"{r['gen_seqs']} x {r['gen_tokens']} tokens, s", "warm-up, s"),
                             [_variant_cells(v) for v in r["variant_results"]])]  # fmt: skip
    return "\n".join([*tables, "", *footer])


def _variant_cells(v: dict) -> tuple[str, ...]:
    train = (
        (f"{v['train_seconds']:.2f}", f"{v['train_warmup_seconds']:.1f}")
        if "train_seconds" in v
        else (f"failed: {v['train_error']}", "")
    )
    gen = (
        (f"{v['gen_seconds']:.2f}", f"{v['gen_warmup_seconds']:.1f}")
        if "gen_seconds" in v
        else (f"failed: {v['gen_error']}", "")
    )
    return (v["variant"], *train, *gen)


def _markdown(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(row) for row in rows)])


def parse_args(argv: list[str] | None = None) -> tuple[BenchConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--preset", default=None, help="default: cpu on a CPU, model5 on CUDA")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--steps", type=int, default=200, help="likex training steps")
    p.add_argument("--baseline-steps", type=int, default=None,
                   help="timed baseline steps (default: all on CUDA, 5 on a CPU)")  # fmt: skip
    p.add_argument("--gen-seqs", type=int, default=None, help="default: 64 on CUDA, 8 on a CPU")
    p.add_argument("--gen-tokens", type=int, default=200)
    p.add_argument("--baseline-gen-tokens", type=int, default=None,
                   help="default: all on CUDA, 16 on a CPU (then extrapolated)")  # fmt: skip
    p.add_argument("--compile", default="none", choices=COMPILE_MODES)
    p.add_argument("--cuda-graph", action="store_true",
                   help="likex replays its whole training step as one CUDA graph")  # fmt: skip
    p.add_argument("--variants", nargs="*", default=[], metavar="MODE[+graph]",
                   help="other likex configurations to time in the same run")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (both sides)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--save", metavar="FILE", help="also write the JSON to FILE")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    cuda = a.device.startswith("cuda")
    preset = a.preset or ("model5" if cuda else "cpu")
    cfg = BenchConfig(
        device=a.device,
        preset=preset,
        batch=a.batch,
        context=min(a.context, preset_config(preset).block_size),
        steps=a.steps,
        baseline_steps=a.baseline_steps or (a.steps if cuda else 5),
        gen_seqs=a.gen_seqs or (64 if cuda else 8),
        gen_tokens=a.gen_tokens,
        baseline_gen_tokens=a.baseline_gen_tokens or (a.gen_tokens if cuda else 16),
        compile=a.compile,
        cuda_graph=a.cuda_graph,
        variants=tuple(a.variants),
        threads=a.threads,
    )
    if cfg.steps <= WARMUP_STEPS:
        p.error(f"--steps must exceed the {WARMUP_STEPS} warm-up steps")
    for spec in cfg.variants:
        try:
            variant_config(cfg, spec)
        except ValueError as e:
            p.error(str(e))
    return cfg, a


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    resolve_device(cfg.device)  # a missing GPU fails here, before any work
    result = run(cfg, progress=not args.quiet)
    if args.save:
        atomic_write_json(args.save, result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
