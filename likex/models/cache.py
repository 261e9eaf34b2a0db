"""A cache of the named models' dequantized weights.

Reading SmolLM2's GGUF makes transformers dequantize every tensor, seconds of every command on
a small CPU. The first load writes the dequantized model once, in transformers' own format
(safetensors, memory-mapped when read back), to a user cache folder: ``LIKEX_CACHE``, else
``$XDG_CACHE_HOME/likex``, else ``~/.cache/likex``. A cached copy is used only when it was made
from the very file installed now (the source's checksum names it) and its own files are
unchanged (each one's checksum, in its manifest): a stale or damaged copy is rebuilt, never
trusted. A cache folder that cannot be written costs the time it would have saved, nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from likex.models.checkpoint import file_sha256
from likex.models.hf import HFCausalLM, load_hf

CACHE_ENV = "LIKEX_CACHE"
MANIFEST = "likex_cache.json"


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "likex"


def _valid(entry: Path, source_sha256: str) -> bool:
    """The copy in ``entry`` was made from this source and none of its files changed."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("source_sha256") != source_sha256 or not files:
            return False
        return all(file_sha256(entry / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _write(entry: Path, model: HFCausalLM, source_sha256: str) -> None:
    """``model`` saved into ``entry`` with its manifest, replacing any copy there; the folder
    appears whole or not at all."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}."))
    try:
        model.save_pretrained(tmp)
        files = sorted(p.name for p in tmp.iterdir() if p.is_file())
        manifest = {
            "source_sha256": source_sha256,
            "files": {f: file_sha256(tmp / f) for f in files},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        shutil.rmtree(entry, ignore_errors=True)
        tmp.rename(entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_model(
    name: str,
    source_sha256: str,
    build: Callable[[], HFCausalLM],
    device: torch.device | str = "cpu",
) -> HFCausalLM:
    """The model ``name`` built from a source whose checksum is ``source_sha256``: from the
    cache when a valid copy is there, else by ``build()`` (its copy then written for next
    time)."""
    entry = cache_root() / f"{name}-{source_sha256[:16]}"
    if _valid(entry, source_sha256):
        return load_hf(str(entry), device, label=name)
    model = build()
    # an unwritable cache: the next load dequantizes again, as it would without a cache
    with contextlib.suppress(OSError):
        _write(entry, model, source_sha256)
    return model.to(device)
