"""The seed experiment as one pipeline: build -> measure -> train -> measure -> report.

Every run directory records the resolved config (with the seed, versions and device) and how
to rebuild its starting model, so later commands can compare a trained model with its start.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from likex.checkpoint import (
    MODEL_FILE,
    file_sha256,
    load_model,
    load_optimizer,
    model_step,
    read_json,
)
from likex.device import resolve_device
from likex.distributed import check_same_on_all_ranks, dist_info, on_main_rank
from likex.errors import LikexError
from likex.evaluate import RateEstimate, measure_rate, random_prompts
from likex.hf import is_hf_name, load_hf, load_model_and_tokenizer, token_strings_for
from likex.io import atomic_write_json, atomic_write_text
from likex.model import GPT, GPTConfig, build_model, preset_config
from likex.report import write_run_report
from likex.target import TargetSpec, select_tokens
from likex.tokenizer import Tokenizer, gpt2
from likex.train import METRICS_FILE, TrainConfig, make_optimizer, train

CONFIG_FILE = "config.json"
BEFORE_FILE = "before.json"
RESULT_FILE = "result.json"


@dataclass
class MeasureConfig:
    """How a target rate is measured: sequences of ``gen_tokens`` new tokens, each after a
    random prompt of ``prompt_len`` tokens (None: the model's full context), until the 95%
    interval is within +-``ci_half_width`` or ``samples`` sequences have been drawn."""

    samples: int = 64
    gen_tokens: int = 200
    prompt_len: int | None = None
    ci_half_width: float | None = 0.02

    def validate(self, block_size: int) -> None:
        if self.samples <= 0:
            raise LikexError(f"--samples must be positive, got {self.samples}")
        if self.gen_tokens <= 0:
            raise LikexError(f"--gen-tokens must be positive, got {self.gen_tokens}")
        if self.prompt_len is not None and not 0 < self.prompt_len <= block_size:
            raise LikexError(f"--prompt-len must be in 1..{block_size}, got {self.prompt_len}")
        if self.ci_half_width is not None and not 0 < self.ci_half_width < 0.5:
            raise LikexError(f"--ci-width must be in (0, 0.5), got {self.ci_half_width}")


@dataclass
class RunConfig:
    preset: str = "cpu"
    weight_init: str = "course"
    target: TargetSpec = field(default_factory=lambda: TargetSpec(like="x"))
    train: TrainConfig = field(default_factory=TrainConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    eval_every: int = 0
    device: str = "auto"
    # "hf:NAME_OR_PATH": start from a transformers model instead of a fresh preset model.
    init: str | None = None

    def to_dict(self) -> dict:
        return {
            "preset": self.preset,
            "init_model": self.init,
            "weight_init": self.weight_init,
            "target": self.target.to_dict(),
            "train": self.train.to_dict(),
            "measure": asdict(self.measure),
            "eval_every": self.eval_every,
            "device": self.device,
        }

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return cls(
            preset=d["preset"],
            weight_init=d["weight_init"],
            target=TargetSpec.from_dict(d["target"]),
            train=TrainConfig(**d["train"]),
            measure=MeasureConfig(**d["measure"]),
            eval_every=d.get("eval_every", 0),
            device=d.get("device", "auto"),
            init=d.get("init_model"),
        )


def versions() -> dict[str, str]:
    import numpy
    import safetensors
    import tokenizers

    from likex import __version__

    return {
        "likex": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return (
            f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
        )
    return str(device)


def new_run_dir(out: str | Path | None) -> Path:
    """A fresh output folder. An existing non-empty folder is refused rather than mixed into."""
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / stamp
        n = 1
        while out.exists():
            out = Path("runs") / f"{stamp}-{n}"
            n += 1
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise LikexError(f"output folder {path} already exists and is not empty")
    path.mkdir(parents=True, exist_ok=True)
    return path


def scratch_init(model_cfg: GPTConfig, seed: int) -> dict:
    return {"kind": "scratch", "model": model_cfg.to_dict(), "seed": seed}


def hf_init(name: str) -> dict:
    """A transformers start model; a local folder is pinned by its weights' checksum."""
    path = Path(name.removeprefix("hf:"))
    weights = path / "model.safetensors"
    if weights.is_file():
        return {"kind": "hf", "name": str(path.resolve()), "sha256": file_sha256(weights)}
    return {"kind": "hf", "name": name.removeprefix("hf:")}


def checkpoint_init(directory: str | Path) -> dict:
    d = Path(directory).resolve()
    return {"kind": "checkpoint", "path": str(d), "sha256": file_sha256(d / MODEL_FILE)}


def load_start_model(run_dir: str | Path, device: torch.device | str = "cpu") -> GPT:
    """Rebuild the model a run started from, from what its config.json recorded."""
    config = read_json(Path(run_dir) / CONFIG_FILE, "run config")
    init = config.get("init") if isinstance(config, dict) else None
    if not isinstance(init, dict):
        raise LikexError(f"{run_dir} does not record its starting model (no 'init' in config.json)")
    if init.get("kind") == "scratch":
        return build_model(GPTConfig.from_dict(init["model"]), int(init["seed"])).to(device)
    if init.get("kind") == "checkpoint":
        path = Path(init["path"])
        if not (path / MODEL_FILE).is_file():
            raise LikexError(f"the starting model of {run_dir} is gone: {path}")
        if file_sha256(path / MODEL_FILE) != init["sha256"]:
            raise LikexError(f"the starting model of {run_dir} has changed since: {path}")
        return load_model(path, device)
    if init.get("kind") == "hf":
        path = Path(init["name"])
        if "sha256" in init and file_sha256(path / "model.safetensors") != init["sha256"]:
            raise LikexError(f"the starting model of {run_dir} has changed since: {path}")
        return load_hf(init["name"], device)
    raise LikexError(f"{run_dir}: unknown starting-model kind {init.get('kind')!r}")


def measure(
    model: GPT,
    mask: torch.Tensor,
    cfg: MeasureConfig,
    seed: int,
    compile: str = "none",
    progress: bool = False,
) -> tuple[RateEstimate, torch.Tensor]:
    """Rate on random-token prompts; the same prompts and draws for a given seed."""
    prompt_len = cfg.prompt_len or model.config.block_size
    prompts = random_prompts(cfg.samples, prompt_len, model.config.vocab_size, seed)
    return measure_rate(
        model,
        mask,
        prompts,
        cfg.gen_tokens,
        seed,
        "random tokens",
        cfg.ci_half_width,
        compile=compile,
        progress=progress,
    )


def _sample_text(tokens: torch.Tensor, tokenizer: Tokenizer, n: int = 60) -> str:
    return tokenizer.decode(tokens[0, :n].tolist())


def run_experiment(cfg: RunConfig, out: str | Path | None = None, progress: bool = True) -> dict:
    """The seed experiment: everything is validated before anything is written.

    Under torchrun every rank trains (see likex.train); rank 0 alone measures and writes, and
    the other ranks return ``{"rank": r}``.
    """
    ranks = dist_info()
    if ranks.active:
        if out is None:
            raise LikexError("under torchrun pass --out DIR, so that every rank names one folder")
        check_same_on_all_ranks({**cfg.to_dict(), "out": str(out)}, "run arguments")
    device = resolve_device(cfg.device)
    if cfg.init is not None:
        if not is_hf_name(cfg.init):
            raise LikexError(f"--init must be hf:NAME_OR_PATH, got {cfg.init!r}")
        model: torch.nn.Module = load_hf(cfg.init, device)
        tokenizer: Tokenizer = model.tokenizer
        model_cfg = model.config
        init = hf_init(cfg.init)
    else:
        model_cfg = preset_config(cfg.preset, weight_init=cfg.weight_init)
        model = build_model(model_cfg, cfg.train.seed).to(device)
        tokenizer = gpt2()
        init = scratch_init(model_cfg, cfg.train.seed)
    if cfg.train.context_len > model_cfg.block_size:
        cfg.train.context_len = model_cfg.block_size
    cfg.train.validate(model_cfg.block_size)
    cfg.measure.validate(model_cfg.block_size)
    if cfg.eval_every < 0:
        raise LikexError(f"--eval-every must be >= 0, got {cfg.eval_every}")
    if cfg.train.mode != "uniform":
        raise LikexError("likex run is the seed experiment (uniform target)")
    targets = select_tokens(cfg.target, token_strings_for(model, tokenizer))

    def start() -> tuple[Path, dict]:
        run_dir = new_run_dir(out)
        config = {
            "command": "run",
            **cfg.to_dict(),
            "model": model_cfg.to_dict(),
            "init": init,
            "seed": cfg.train.seed,
            "device_used": device_name(device),
            "world_size": ranks.world_size,
            "versions": versions(),
            "created": _dt.datetime.now().isoformat(timespec="seconds"),
        }
        atomic_write_json(run_dir / CONFIG_FILE, config)
        t0 = time.perf_counter()
        before, generated = measure(
            model, targets.mask, cfg.measure, cfg.train.seed, cfg.train.compile, progress
        )
        before_doc = {
            "rate": before.to_dict(),
            "sample_text": _sample_text(generated, tokenizer),
            "seconds": time.perf_counter() - t0,
        }
        atomic_write_json(run_dir / BEFORE_FILE, before_doc)
        return run_dir, before_doc

    # Other ranks get None: under torchrun --out names the folder and only rank 0 reports.
    run_dir, before_doc = on_main_rank(start) or (Path(str(out)), {})
    return _train_and_finish(
        run_dir,
        cfg,
        model,
        tokenizer,
        targets.mask,
        before_doc,
        progress,
        0,
        None,
    )


def resume_experiment(run_dir: str | Path, steps: int | None = None, progress: bool = True) -> dict:
    """Continue a run from its last checkpoint: same batches, same optimizer state."""
    run_dir = Path(run_dir)
    config = read_json(run_dir / CONFIG_FILE, "run config")
    try:
        cfg = RunConfig.from_dict(config)
    except (KeyError, TypeError) as e:
        raise LikexError(f"{run_dir / CONFIG_FILE} is not a likex run config: {e}") from e
    before_doc = read_json(run_dir / BEFORE_FILE, "pre-training measurement")
    if steps is not None:
        cfg.train.steps = steps
    check_same_on_all_ranks({"resume": str(run_dir), "steps": cfg.train.steps}, "resume arguments")
    device = resolve_device(cfg.device)
    model, tokenizer = load_model_and_tokenizer(run_dir, device)
    cfg.train.validate(model.config.block_size)
    optimizer = make_optimizer(model, cfg.train)
    start = load_optimizer(optimizer, run_dir)
    if model_step(run_dir) != start:
        raise LikexError(f"checkpoint in {run_dir} is inconsistent: weights and optimizer differ")
    if start >= cfg.train.steps:
        raise LikexError(f"{run_dir} already has {start} steps; pass --steps N with N > {start}")
    targets = select_tokens(cfg.target, token_strings_for(model, tokenizer))

    def restart() -> None:
        _truncate_metrics(run_dir / METRICS_FILE, start)
        config["train"] = cfg.train.to_dict()
        atomic_write_json(run_dir / CONFIG_FILE, config)

    on_main_rank(restart)
    return _train_and_finish(
        run_dir, cfg, model, tokenizer, targets.mask, before_doc, progress, start, optimizer
    )


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop metrics logged after the checkpoint being resumed, so no step appears twice."""
    if not path.exists():
        return
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= last_step)
    atomic_write_text(path, kept)


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _train_and_finish(
    run_dir: Path,
    cfg: RunConfig,
    model: GPT,
    tokenizer: Tokenizer,
    mask: torch.Tensor,
    before_doc: dict,
    progress: bool,
    start_step: int,
    optimizer: torch.optim.Optimizer | None,
) -> dict:
    seed = cfg.train.seed

    def on_step(step: int) -> dict | None:
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.train.steps):
            estimate, _ = measure(model, mask, cfg.measure, seed, cfg.train.compile)
            model.train()
            return {"rate": estimate.rate, "rate_ci": list(estimate.ci)}
        return None

    prior = _seconds_at(read_metrics(run_dir), start_step) if start_step else 0.0
    trained = train(
        model,
        cfg.train,
        mask,
        run_dir,
        optimizer=optimizer,
        start_step=start_step,
        progress=progress,
        on_step=on_step,
        seconds_before=prior,
    )
    if not dist_info().is_main:
        return {"rank": dist_info().rank, "train_seconds": trained.seconds}
    t0 = time.perf_counter()
    after, generated = measure(model, mask, cfg.measure, seed, cfg.train.compile, progress)
    measure_seconds = time.perf_counter() - t0
    metrics = read_metrics(run_dir)
    before = before_doc["rate"]
    result = {
        # a transformers start model stands where the preset would (in the report too)
        "preset": cfg.init or cfg.preset,
        "init_model": cfg.init,
        "weight_init": "transformers checkpoint" if cfg.init else cfg.weight_init,
        "like": cfg.target.describe(),
        "target": cfg.target.to_dict(),
        "n_target_tokens": int(mask.sum()),
        "vocab_size": int(mask.numel()),
        "params": model.num_params(),
        "steps": cfg.train.steps,
        "loss_first": metrics[0]["loss"],
        "loss_last": metrics[-1]["loss"],
        "x_before": before["first_sample_hits"],
        "x_after": after.first_sample_hits,
        "gen_tokens": cfg.measure.gen_tokens,
        "rate_before": before["rate"],
        "rate_before_ci": before["ci"],
        "rate_after": after.rate,
        "rate_after_ci": list(after.ci),
        "samples": after.sequences,
        "samples_before": before["sequences"],
        "tokens_measured": after.tokens,
        "prompts": "random tokens",
        "train_seconds": trained.seconds,
        "measure_seconds": before_doc["seconds"] + measure_seconds,
        "device": device_name(next(model.parameters()).device),
        "seed": seed,
        "sample_before": before_doc["sample_text"],
        "sample_after": _sample_text(generated, tokenizer),
        "run_dir": str(run_dir),
    }
    atomic_write_json(run_dir / RESULT_FILE, result)
    write_run_report(run_dir, result, metrics)
    return result


def _seconds_at(metrics: list[dict], step: int) -> float:
    rows = [m for m in metrics if m["step"] == step]
    return rows[0]["seconds"] if rows else 0.0
