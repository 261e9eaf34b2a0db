"""Checkpoints: safetensors for tensors, JSON for everything else. Nothing is unpickled.

A model directory holds ``model.safetensors`` and ``model.json`` (the GPTConfig). A training
run adds ``optimizer.safetensors`` + ``trainer_state.json`` so ``--resume`` continues exactly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from safetensors.torch import load_model as st_load_model
from safetensors.torch import save_model as st_save_model
from torch import nn

from likex.errors import LikexError
from likex.io import atomic_write, atomic_write_json
from likex.models.gpt import GPT, GPTConfig
from likex.models.hf import HF_DIR, HF_STEP_FILE, HFCausalLM, is_hf_name, load_hf
from likex.models.named import NAMED_MODELS, is_named
from likex.models.tokenizer import Tokenizer, gpt2

MODEL_FILE = "model.safetensors"
MODEL_CONFIG = "model.json"
OPTIMIZER_FILE = "optimizer.safetensors"
TRAINER_STATE = "trainer_state.json"


def read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise LikexError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LikexError(f"{what} is corrupt ({path}): {e}") from e


def save_model(model: GPT, directory: str | Path, step: int | None = None) -> None:
    """Weights and config; ``step`` goes into the file's metadata so a resume can check that
    the weights and the optimizer state belong together."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(model, HFCausalLM):  # transformers' own format, loadable without likex
        model.save_pretrained(d / HF_DIR, step=step)
        return
    metadata = {"step": str(step)} if step is not None else None
    # save_model (not save_file) because the head is tied to the embedding: it stores the
    # shared tensor once and load_model re-ties it.
    atomic_write(d / MODEL_FILE, lambda tmp: st_save_model(model, tmp, metadata=metadata))
    atomic_write_json(d / MODEL_CONFIG, model.config.to_dict())


def load_model(directory: str | Path, device: torch.device | str = "cpu") -> GPT:
    d = Path(directory)
    if not d.is_dir():
        raise LikexError(f"model directory not found: {d}")
    if not (d / MODEL_FILE).is_file():
        raise LikexError(f"no {MODEL_FILE} in {d}: not a likex model directory")
    raw = read_json(d / MODEL_CONFIG, "model config")
    if not isinstance(raw, dict):
        raise LikexError(f"model config is corrupt ({d / MODEL_CONFIG}): not an object")
    try:
        cfg = GPTConfig.from_dict(raw)
    except TypeError as e:
        raise LikexError(f"model config is corrupt ({d / MODEL_CONFIG}): {e}") from e
    model = GPT(cfg)
    try:
        st_load_model(model, str(d / MODEL_FILE), strict=True, device="cpu")
    except Exception as e:  # safetensors raises several types for a damaged file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LikexError(f"checkpoint {d / MODEL_FILE} is corrupt or incompatible: {msg}") from e
    return model.to(device)


def model_step(directory: str | Path) -> int | None:
    """The training step recorded in a model file's metadata, if any."""
    hf_step = Path(directory) / HF_DIR / HF_STEP_FILE
    if hf_step.is_file():
        return read_json(hf_step, "transformers model's step").get("step")
    try:
        with safe_open(str(Path(directory) / MODEL_FILE), framework="pt") as f:
            step = (f.metadata() or {}).get("step")
    except Exception as e:
        raise LikexError(f"checkpoint {Path(directory) / MODEL_FILE} is corrupt: {e}") from e
    return int(step) if step is not None else None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_optimizer(optimizer: torch.optim.Optimizer, step: int, directory: str | Path) -> None:
    """Optimizer moments as tensors, hyperparameters and the step as JSON."""
    d = Path(directory)
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    atomic_write(d / OPTIMIZER_FILE, lambda tmp: save_file(tensors, tmp))
    atomic_write_json(
        d / TRAINER_STATE,
        {"step": step, "param_groups": sd["param_groups"], "scalars": scalars},
    )


def load_optimizer(optimizer: torch.optim.Optimizer, directory: str | Path) -> int:
    """Restore the optimizer in place; returns the step the state was saved at."""
    d = Path(directory)
    meta = read_json(d / TRAINER_STATE, "trainer state")
    if not (d / OPTIMIZER_FILE).is_file():
        raise LikexError(f"no {OPTIMIZER_FILE} in {d}: nothing to resume")
    try:
        flat = load_file(str(d / OPTIMIZER_FILE))
        state: dict[int, dict[str, Any]] = {}
        for key, value in flat.items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = value
        for idx, values in meta.get("scalars", {}).items():
            state.setdefault(int(idx), {}).update(values)
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except LikexError:
        raise
    except Exception as e:
        raise LikexError(f"optimizer state in {d} is corrupt or incompatible: {e}") from e
    return int(meta["step"])


def load_model_and_tokenizer(
    spec: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, Tokenizer]:
    """A named real model (``smollm2-135m``), ``hf:NAME_OR_PATH``, a run folder holding
    ``hf/``, or a likex model/run folder."""
    spec = str(spec)
    saved = Path(spec) / HF_DIR
    if is_named(spec):
        folder, gguf_file = NAMED_MODELS[spec].location()
        model = load_hf(folder, device, gguf_file=gguf_file, label=spec)
    elif is_hf_name(spec):
        model = load_hf(spec, device)
    elif saved.is_dir():
        model = load_hf(str(saved), device)
    else:
        model = load_model(spec, device)
    return model, tokenizer_of(model)


def is_pretrained(spec: str | Path) -> bool:
    """Whether ``spec`` names a transformers model (named, hf:, or a run folder holding one):
    a pretrained model, which a scratch preset's settings would wreck."""
    spec = str(spec)
    return is_named(spec) or is_hf_name(spec) or (Path(spec) / HF_DIR).is_dir()


def tokenizer_of(model: nn.Module) -> Tokenizer:
    """A transformers model carries its own tokenizer; likex's GPT speaks GPT-2's."""
    return model.tokenizer if isinstance(model, HFCausalLM) else gpt2()
