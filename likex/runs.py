"""Run folders: naming, config.json, how to rebuild a run's starting model, metrics I/O.

Every command that writes results writes them into a fresh run folder whose ``config.json``
starts with the same header (``write_config``): the resolved config, the seed, the versions and
the device, so any result can be traced to what made it.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path

import torch

from likex.errors import LikexError
from likex.io import atomic_write_json, atomic_write_text
from likex.models.checkpoint import (
    MODEL_FILE,
    file_sha256,
    load_model,
    load_model_and_tokenizer,
    read_json,
)
from likex.models.gpt import GPT, GPTConfig, build_model
from likex.models.hf import HF_DIR, is_hf_name
from likex.models.named import NAMED_MODELS, is_named
from likex.target import NO_TARGET, TargetSpec
from likex.train import METRICS_FILE

CONFIG_FILE = "config.json"


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
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a parent is a file, no permission, ...
        raise LikexError(f"cannot create output folder {path}: {e.strerror}") from e
    return path


def scratch_init(model_cfg: GPTConfig, seed: int) -> dict:
    return {"kind": "scratch", "model": model_cfg.to_dict(), "seed": seed}


def checkpoint_init(source: str | Path) -> dict:
    """How to find a saved start model again, pinned by its weights' checksum."""
    source = str(source)
    if is_named(source):
        folder, gguf_file = NAMED_MODELS[source].location()
        return {"kind": "named", "name": source, "sha256": file_sha256(Path(folder) / gguf_file)}
    if is_hf_name(source) or (Path(source) / HF_DIR).is_dir():
        path = Path(source.removeprefix("hf:"))
        path = path / HF_DIR if (path / HF_DIR).is_dir() else path
        weights = path / MODEL_FILE
        if weights.is_file():
            return {"kind": "hf", "name": str(path.resolve()), "sha256": file_sha256(weights)}
        return {"kind": "hf", "name": source.removeprefix("hf:")}
    d = Path(source).resolve()
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
    if init.get("kind") == "named":
        folder, gguf_file = NAMED_MODELS[init["name"]].location()
        if file_sha256(Path(folder) / gguf_file) != init["sha256"]:
            raise LikexError(f"the starting model of {run_dir} has changed since: {init['name']}")
        return load_model_and_tokenizer(init["name"], device)[0]
    if init.get("kind") == "hf":
        path = Path(init["name"])
        if "sha256" in init and file_sha256(path / MODEL_FILE) != init["sha256"]:
            raise LikexError(f"the starting model of {run_dir} has changed since: {path}")
        return load_model_and_tokenizer(f"hf:{init['name']}", device)[0]
    raise LikexError(f"{run_dir}: unknown starting-model kind {init.get('kind')!r}")


def run_target(run_dir: str | Path) -> TargetSpec:
    """The target the run in ``run_dir`` was trained on, for commands given none."""
    path = Path(run_dir) / CONFIG_FILE
    config = read_json(path, "run config") if path.is_file() else None
    if isinstance(config, dict) and isinstance(config.get("target"), dict):
        return TargetSpec.from_dict(config["target"])
    raise LikexError(f"no target given: {NO_TARGET}")


def truncate_metrics(path: Path, last_step: int) -> None:
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


def seconds_at(metrics: list[dict], step: int) -> float:
    rows = [m for m in metrics if m["step"] == step]
    return rows[0]["seconds"] if rows else 0.0


def write_config(run_dir: Path, doc: dict, device: torch.device, seed: int) -> None:
    """``config.json``: ``doc`` (the command's resolved config) plus the common header."""
    atomic_write_json(
        run_dir / CONFIG_FILE,
        {
            **doc,
            "seed": seed,
            "device_used": device_name(device),
            "versions": versions(),
            "created": _dt.datetime.now().isoformat(timespec="seconds"),
        },
    )


def read_config(run_dir: str | Path) -> dict:
    """A run folder's config.json, or {} for a folder that holds only a model."""
    path = Path(run_dir) / CONFIG_FILE
    config = read_json(path, "run config") if path.is_file() else {}
    if not isinstance(config, dict):
        raise LikexError(f"{path} is not a likex run config")
    return config
