"""Checkpoints: safetensors for tensors, JSON for everything else. Nothing is unpickled.

A model directory holds ``model.safetensors`` and ``model.json`` (the GPTConfig), ``hf/`` for
a transformers model, or ``adapter/`` for a LoRA adapter (likex.models.adapter). A training run
keeps its checkpoints as one atomic unit each: ``checkpoints/step-NNNNNNNNN/`` holds the model,
``optimizer.safetensors`` and ``trainer_state.json`` (the step; the batches are a pure function
of (seed, step), so the step is the whole data position, except that generated contexts
written in blocks of steps keep the unfinished block in ``contexts.safetensors``, likex.batches),
and ``manifest.json``, written last,
naming the step, the SHA-256 of every file and the run it belongs to (``stamp``: its run id and
settings, likex.runs). The folder is built under a temporary name and renamed into place, so a
kill at any moment leaves either the old checkpoint or the new one, never a mix; a save that
fails (a full disk) removes its partial files and leaves the old one as it was. The run
folder's own model files are hard links to the newest checkpoint's, so the run folder is also a
model folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from safetensors.torch import load_model as st_load_model
from safetensors.torch import save_model as st_save_model

from likex.errors import LikexError, clip_path, describe_os_error
from likex.io import atomic_write, atomic_write_json, temp_dir
from likex.models import LanguageModel
from likex.models.adapter import ADAPTER_DIR, ADAPTER_RECORD, AdaptedLM
from likex.models.gpt import GPT, GPTConfig, check_fits
from likex.models.hf import HF_DIR, HF_STEP_FILE, HFCausalLM

MODEL_FILE = "model.safetensors"
MODEL_CONFIG = "model.json"
OPTIMIZER_FILE = "optimizer.safetensors"
CONTEXTS_FILE = "contexts.safetensors"
TRAINER_STATE = "trainer_state.json"
CHECKPOINTS_DIR = "checkpoints"
MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"step-(\d{9})")


def read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise LikexError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LikexError(f"{what} is corrupt ({path}): {e}") from e


def save_model(model: LanguageModel, directory: str | Path, step: int | None = None) -> None:
    """Weights and config; ``step`` goes into the file's metadata so a resume can check that
    the weights and the optimizer state belong together."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(model, AdaptedLM):  # the adapter alone, in peft's format
        model.save(d / ADAPTER_DIR, step=step)
        return
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
        raise LikexError(f"model directory not found: {clip_path(d)}")
    if not (d / MODEL_FILE).is_file():
        raise LikexError(f"no {MODEL_FILE} in {clip_path(d)}: not a likex model directory")
    raw = read_json(d / MODEL_CONFIG, "model config")
    if not isinstance(raw, dict):
        raise LikexError(f"model config is corrupt ({d / MODEL_CONFIG}): not an object")
    try:
        cfg = GPTConfig.from_dict(raw)
        check_fits(cfg)  # its shapes are bounded; its weights must fit before they are made
    except (TypeError, LikexError) as e:
        raise LikexError(f"{d / MODEL_CONFIG} is unusable: {e}") from e
    model = GPT(cfg)
    try:
        st_load_model(model, str(d / MODEL_FILE), strict=True, device="cpu")
    except Exception as e:  # safetensors raises several types for a damaged file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LikexError(f"checkpoint {d / MODEL_FILE} is corrupt or incompatible: {msg}") from e
    return model.to(device)


def model_step(directory: str | Path) -> int | None:
    """The training step recorded in a model file's metadata, if any."""
    for saved, what in ((HF_DIR, HF_STEP_FILE), (ADAPTER_DIR, ADAPTER_RECORD)):
        path = Path(directory) / saved / what
        if path.is_file():
            record = read_json(path, "saved model's step")
            return record.get("step") if isinstance(record, dict) else None
    try:
        with safe_open(str(Path(directory) / MODEL_FILE), framework="pt") as f:
            step = (f.metadata() or {}).get("step")
    except Exception as e:
        raise LikexError(f"checkpoint {Path(directory) / MODEL_FILE} is corrupt: {e}") from e
    return int(step) if step is not None and step.isdigit() else None


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256; a file unchanged since it was last hashed in this process (same
    size and modification time) is not read again (a model is pinned by its checksum at every
    load and in every record)."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHED:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _HASHED[key] = h.hexdigest()
    return _HASHED[key]


_HASHED: dict[tuple[str, int, int], str] = {}


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
    if not isinstance(meta, dict) or not _is_step(meta.get("step")):
        raise LikexError(f"trainer state {d / TRAINER_STATE} is corrupt: no integer step")
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
    return meta["step"]


def load_contexts(checkpoint: str | Path) -> tuple[int, torch.Tensor] | None:
    """The block of generated contexts a checkpoint kept (``save_checkpoint``), or None."""
    path = Path(checkpoint) / CONTEXTS_FILE
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            first = int((f.metadata() or {})["first_step"])
            rows = f.get_tensor("contexts")
    except Exception as e:  # safetensors raises several types for a damaged file
        raise LikexError(f"checkpoint {path} is corrupt: {e}") from e
    if rows.dtype != torch.long or rows.dim() != 2 or first < 1:
        raise LikexError(f"checkpoint {path} holds no block of token ids")
    return first, rows


def _is_step(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def save_checkpoint(
    model: LanguageModel,
    optimizer: torch.optim.Optimizer,
    step: int,
    run_dir: str | Path,
    stamp: Mapping[str, Any] | None = None,
    contexts: tuple[int, torch.Tensor] | None = None,
) -> Path:
    """Write the checkpoint of ``step`` as one unit (see the module's docstring; ``stamp``
    goes into its manifest; ``contexts``: a block of generated contexts the next steps use,
    with its first step), make the run folder's model files point at it, and drop older
    checkpoints. Returns its folder. A write that fails (a full disk, no permission) removes
    the new checkpoint's files, keeps the older ones, and says so in one line."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    final = root / f"step-{step:09d}"
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir(root, ".tmp-")
        save_model(model, tmp, step=step)
        save_optimizer(optimizer, step, tmp)
        if contexts is not None:
            first, rows = contexts
            meta = {"first_step": str(first)}
            save_file({"contexts": rows.cpu().contiguous()}, str(tmp / CONTEXTS_FILE), meta)
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        manifest = {"step": step, "files": {f: file_sha256(tmp / f) for f in files}}
        atomic_write_json(tmp / MANIFEST, {**manifest, **(stamp or {})})
        if final.exists():  # the same step saved again: the new folder replaces it
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (OSError, SafetensorError)):
            raise LikexError(
                f"cannot write the checkpoint of step {step} in {clip_path(root)}: "
                f"{_write_error(e)}; its partial files are removed"
            ) from e
        raise
    try:
        _publish(final, Path(run_dir))
    except OSError as e:
        raise LikexError(
            f"the checkpoint of step {step} is complete in {clip_path(final)}, but the run "
            f"folder's model files could not be linked to it: {describe_os_error(e)}"
        ) from e
    for other in root.iterdir():
        if other != final:
            shutil.rmtree(other, ignore_errors=True)
    return final


def _write_error(e: OSError | SafetensorError) -> str:
    """The reason a write failed, in the system's words: safetensors wraps them
    ("Error while serializing: I/O error: No space left on device (os error 28) at ...")."""
    if isinstance(e, OSError):
        return describe_os_error(e)
    text = str(e)
    found = re.search(r"I/O error: (.*?) \(os error \d+\)", text)
    return found.group(1) if found else (text.splitlines()[0] if text else type(e).__name__)


def _publish(checkpoint: Path, run_dir: Path) -> None:
    """Hard-link the checkpoint's model files into the run folder, each replaced atomically."""
    for entry in checkpoint.iterdir():
        if entry.name in (OPTIMIZER_FILE, TRAINER_STATE, MANIFEST, CONTEXTS_FILE):
            continue
        if entry.is_dir():  # hf/: a new linked tree swapped in whole
            tmp = temp_dir(run_dir, f".{entry.name}.")
            for f in entry.rglob("*"):
                if f.is_file():
                    (tmp / f.relative_to(entry)).parent.mkdir(parents=True, exist_ok=True)
                    _link(f, tmp / f.relative_to(entry))
            old = run_dir / f".{entry.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            if (run_dir / entry.name).exists():
                os.rename(run_dir / entry.name, old)
            os.rename(tmp, run_dir / entry.name)
            shutil.rmtree(old, ignore_errors=True)
        else:
            atomic_write(run_dir / entry.name, lambda t, src=entry: _link(src, Path(t)))


def _link(src: Path, dst: Path) -> None:
    """``dst`` becomes a hard link to ``src`` (a copy where the filesystem has none)."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def latest_checkpoint(run_dir: str | Path, run_id: str | None = None) -> tuple[Path, int]:
    """The newest complete checkpoint of a run and its step, its files checked against its
    manifest: every file listed, none added, none a symbolic link, and (where both the run
    and the manifest name one) the run id the same. A folder without a manifest is skipped
    (never complete); one whose parts disagree is refused, never silently resumed."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if root.is_symlink():
        raise LikexError(f"{clip_path(root)} is a symbolic link: a run's checkpoints are its own")
    found = sorted(
        (p for p in root.iterdir() if _STEP_DIR.fullmatch(p.name)) if root.is_dir() else (),
        reverse=True,
    )
    for folder in found:
        if not (folder / MANIFEST).is_file() and not folder.is_symlink():
            continue
        manifest = read_manifest(folder)
        step = manifest["step"]
        _check_files(folder, manifest["files"])
        theirs = manifest.get("run_id")
        if run_id is not None and theirs is not None and theirs != run_id:
            raise LikexError(
                f"checkpoint {clip_path(folder)} belongs to another run (run id {theirs}, this "
                f"run's is {run_id}): it was copied in; remove it"
            )
        state = read_json(folder / TRAINER_STATE, "trainer state")
        if not isinstance(state, dict) or state.get("step") != step or model_step(folder) != step:
            raise LikexError(
                f"checkpoint {folder} is inconsistent: its weights, optimizer and manifest "
                "name different steps"
            )
        return folder, step
    raise LikexError(f"no complete checkpoint in {run_dir}: nothing to resume; start it again")


def read_manifest(folder: Path) -> dict:
    """A checkpoint's manifest, its step and file list checked for form."""
    if folder.is_symlink() or (folder / MANIFEST).is_symlink():
        raise LikexError(f"checkpoint {clip_path(folder)} is a symbolic link: refused")
    manifest = read_json(folder / MANIFEST, "checkpoint manifest")
    step = manifest.get("step") if isinstance(manifest, dict) else None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not _is_step(step) or f"step-{step:09d}" != folder.name:
        raise LikexError(f"checkpoint {folder} is inconsistent: its manifest names no step")
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise LikexError(f"checkpoint {folder} is inconsistent: its manifest lists no files")
    return manifest


def _check_files(folder: Path, listed: dict[str, str]) -> None:
    """Every file of the checkpoint is in its manifest with its SHA-256, and nothing else is
    there: a manifest that lists fewer files (none, say) does not make a checkpoint."""
    present = {}
    for p in folder.rglob("*"):
        mode = p.lstat().st_mode
        name = p.relative_to(folder).as_posix()
        if stat.S_ISLNK(mode):
            raise LikexError(f"checkpoint {folder} is inconsistent: {name} is a symbolic link")
        if stat.S_ISREG(mode) and name != MANIFEST:
            present[name] = p
    if not listed:
        raise LikexError(f"checkpoint {folder} is inconsistent: its manifest lists no files")
    unlisted = sorted(set(present) - set(listed))
    if unlisted:
        what = f"{unlisted[0]} is not in its manifest"
        raise LikexError(f"checkpoint {folder} is inconsistent: {what}")
    for name, digest in listed.items():
        if name not in present or file_sha256(present[name]) != digest:
            raise LikexError(
                f"checkpoint {folder} is inconsistent: {name} is missing or differs from "
                "its manifest"
            )
    tops = {name.split("/")[0] for name in listed}
    needed = {OPTIMIZER_FILE, TRAINER_STATE}
    if HF_DIR in tops:
        needed.add(f"{HF_DIR}/{HF_STEP_FILE}")
    elif ADAPTER_DIR in tops:
        needed.add(f"{ADAPTER_DIR}/{ADAPTER_RECORD}")
    else:
        needed |= {MODEL_FILE, MODEL_CONFIG}
    missing = sorted(needed - set(listed))
    if missing:
        raise LikexError(f"checkpoint {folder} is inconsistent: its manifest lists no {missing[0]}")
