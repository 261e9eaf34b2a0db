"""Where training starts: the first of the two values that define an experiment.

The user's ``--init`` text (and every other model argument: ``--model``, ``--reference``) is
parsed once, by ``parse_start``, into one of four small frozen types:

* ``Scratch``: a fresh model of a preset, its weights drawn from a seed;
* ``Saved``: a likex GPT in a model or run folder;
* ``Pretrained``: a transformers causal LM: a named real model (``smollm2-135m``),
  ``hf:NAME_OR_PATH``, or a run folder holding ``hf/`` (a trained copy of one);
* ``Adapted``: a LoRA adapter a likex run saved (``adapter/``), on the base it records.

Each loads itself (model + tokenizer), records itself for a run's config.json (pinned by its
weights' checksum, so a later command rebuilds exactly this start or refuses), and gives the
defaults a run from it takes (learning rate, step shape): one rule for run, train, persist and
audit-bench alike. This module is the one place that tells the kinds apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from likex.errors import LikexError, clip_path
from likex.io import folder_arg, input_file
from likex.models import LanguageModel
from likex.models.adapter import ADAPTER_DIR, ADAPTER_RECORD, ADAPTER_WEIGHTS, load_adapter
from likex.models.cache import cached_model
from likex.models.checkpoint import MODEL_FILE, file_sha256, load_model, read_json
from likex.models.gpt import DEFAULT_LR, GPTConfig, build_model, preset_config
from likex.models.hf import HF_DIR, HF_PREFIX, hf_path, is_hf_name, load_hf
from likex.models.named import NAMED_MODELS, check_named
from likex.models.tokenizer import Tokenizer, gpt2

SCRATCH = "scratch"

# Learning rates of the one rule (``Start.defaults``), AdamW, measured in docs/results.md:
# A saved likex model has no preset to take a tuned rate from: the cpu preset's rate.
FINETUNE_LR = 3e-3
# A pretrained transformers model: 3e-3 wrecks it (SmolLM2's loss went 0.29 -> 7.6 -> 8.4 in
# three steps); at 1e-4 a rate-0.1 target on SmolLM2-135M reaches its rate on held-out text in
# 10-15 steps of 4 x 64 tokens with perplexity near the floor.
PRETRAINED_LR = 1e-4
# Next-token pretraining of a scratch model (likex pretrain).
PRETRAIN_LR = 3e-3
# Next-token fine-tuning of a saved likex model on clean text (likex persist).
PERSIST_LR = 1e-3

# A LoRA adapter trains a few small matrices whose update starts at zero and is scaled by
# alpha/r: it takes a larger step than the full model it sits on. Ten times is LoRA's usual
# rule of thumb, not a value tuned here (docs/results.md has the runs made with it).
LORA_LR_FACTOR = 10.0

# Step shapes (contexts per step, tokens per context): a fresh or small likex model trains on
# many long contexts; a pretrained one needs few small steps, each ~20x dearer on a CPU.
SCRATCH_SHAPE = (16, 256)
PRETRAINED_SHAPE = (4, 64)


@dataclass(frozen=True)
class StepDefaults:
    """What a run takes where the user gave no learning rate or step shape."""

    lr: float
    batch_size: int
    context_len: int


@dataclass(frozen=True)
class Scratch:
    """A fresh model: ``config`` with weights drawn from ``seed``. ``preset`` names the preset
    it came from (None when read back from a run's record, which holds the whole config)."""

    config: GPTConfig
    seed: int
    preset: str | None = None

    @classmethod
    def of(cls, preset: str, weight_init: str, seed: int, block_size: int | None = None) -> Scratch:
        config = preset_config(preset, weight_init=weight_init, block_size=block_size)
        return cls(config, seed, preset)

    pretrained = False
    adapter = False  # an adapter on a base it records (then the base is its reference)

    def load(
        self, device: torch.device | str = "cpu", progress: bool = False
    ) -> tuple[LanguageModel, Tokenizer]:
        """The model and its tokenizer on ``device``; ``progress``: a bar where loading takes
        long (a named model's first load dequantizes it)."""
        return build_model(self.config, self.seed).to(device), gpt2()

    def record(self) -> dict:
        return {"kind": "scratch", "model": self.config.to_dict(), "seed": self.seed}

    def defaults(self, next_token: bool = False, adapter: bool = False) -> StepDefaults:
        # pretraining has its own rate; a KL target its preset's tuned one
        if not next_token and self.preset is None:
            raise LikexError("a scratch start read back from a run has no preset: give --lr")
        lr = PRETRAIN_LR if next_token else DEFAULT_LR[self.preset]
        return StepDefaults(lr * LORA_LR_FACTOR if adapter else lr, *SCRATCH_SHAPE)


@dataclass(frozen=True)
class Saved:
    """A likex GPT in a model or run folder; ``sha256`` (from a record) pins its weights."""

    path: str
    sha256: str | None = None

    pretrained = False
    adapter = False

    def load(
        self, device: torch.device | str = "cpu", progress: bool = False
    ) -> tuple[LanguageModel, Tokenizer]:
        folder = Path(self.path)
        if self.sha256 is not None:
            _check_unchanged(folder / MODEL_FILE, self.sha256, self.path)
        return load_model(folder, device), gpt2()

    def record(self) -> dict:
        folder = Path(self.path).resolve()
        digest = self.sha256 or file_sha256(folder / MODEL_FILE)
        return {"kind": "checkpoint", "path": str(folder), "sha256": digest}

    def defaults(self, next_token: bool = False, adapter: bool = False) -> StepDefaults:
        lr = PERSIST_LR if next_token else FINETUNE_LR
        return StepDefaults(lr * LORA_LR_FACTOR if adapter else lr, *SCRATCH_SHAPE)


@dataclass(frozen=True)
class Pretrained:
    """A transformers causal LM, named as the user named it (``smollm2-135m``,
    ``hf:NAME_OR_PATH``, or a run folder holding ``hf/``); ``sha256`` pins its weights."""

    name: str
    sha256: str | None = None

    pretrained = True
    adapter = False

    def _source(self) -> tuple[str, str | None, Path | None]:
        """(what load_hf reads, its GGUF file or None, the weights file to checksum or None)."""
        if self.name in NAMED_MODELS:
            folder, gguf_file = NAMED_MODELS[self.name].location()
            return folder, gguf_file, Path(folder) / gguf_file
        if not hf_path(self.name):  # "hf:" alone: load_hf says what it needs
            return self.name, None, None
        path = Path(hf_path(self.name))
        if (path / HF_DIR).is_dir():  # a run folder holding a trained copy
            path = path / HF_DIR
        if not path.is_dir():
            if not is_hf_name(self.name):
                raise LikexError(f"model directory not found: {self.name}")
            return hf_path(self.name), None, None  # a hub name: no local file to pin
        weights = path / MODEL_FILE
        return str(path), None, weights if weights.is_file() else None

    def load(
        self, device: torch.device | str = "cpu", progress: bool = False
    ) -> tuple[LanguageModel, Tokenizer]:
        source, gguf_file, weights = self._source()
        if self.sha256 is not None and weights is not None:
            _check_unchanged(weights, self.sha256, self.name)
        if self.name in NAMED_MODELS:  # a GGUF: its dequantized weights are cached
            digest = file_sha256(weights)
            build = lambda: load_hf(  # noqa: E731
                source, gguf_file=gguf_file, label=self.name, progress=progress
            )
            model = cached_model(self.name, digest, build, device)
        else:
            model = load_hf(source, device)
        return model, model.tokenizer

    def record(self) -> dict:
        source, _, weights = self._source()
        if self.name in NAMED_MODELS:
            return {"kind": "named", "name": self.name, "sha256": self.sha256 or _sha(weights)}
        if weights is None:  # a hub name (transformers' cache pins it) or no safetensors file
            return {"kind": "hf", "name": source}
        name = str(Path(source).resolve())
        return {"kind": "hf", "name": name, "sha256": self.sha256 or _sha(weights)}

    def defaults(self, next_token: bool = False, adapter: bool = False) -> StepDefaults:
        lr = PRETRAINED_LR * LORA_LR_FACTOR if adapter else PRETRAINED_LR
        return StepDefaults(lr, *PRETRAINED_SHAPE)


@dataclass(frozen=True)
class Adapted:
    """A LoRA adapter a likex run saved (a run or checkpoint folder holding ``adapter/``), on
    the base its record names; ``sha256`` (from a record) pins the adapter's weights."""

    path: str
    sha256: str | None = None

    def _folder(self) -> Path:
        return Path(self.path) / ADAPTER_DIR

    def base(self) -> Start:
        """The start the adapter was trained on, as its record names it."""
        record = read_json(self._folder() / ADAPTER_RECORD, "adapter record")
        base = record.get("base") if isinstance(record, dict) else None
        return start_from_record(base, str(self._folder()))

    adapter = True

    @property
    def pretrained(self) -> bool:
        return self.base().pretrained

    def load(
        self, device: torch.device | str = "cpu", progress: bool = False
    ) -> tuple[LanguageModel, Tokenizer]:
        weights = self._folder() / ADAPTER_WEIGHTS
        if self.sha256 is not None:
            _check_unchanged(weights, self.sha256, self.path)
        base = self.base()
        model, tokenizer = base.load(device, progress)
        return load_adapter(model, self._folder(), base.record()).to(device), tokenizer

    def record(self) -> dict:
        weights = self._folder() / ADAPTER_WEIGHTS
        return {
            "kind": "adapter",
            "path": str(Path(self.path).resolve()),
            "sha256": self.sha256 or file_sha256(weights),
            "base": self.base().record(),
        }

    def defaults(self, next_token: bool = False, adapter: bool = True) -> StepDefaults:
        return self.base().defaults(next_token, adapter=True)


Start = Scratch | Saved | Pretrained | Adapted


def _sha(path: Path | None) -> str | None:
    return None if path is None else file_sha256(path)


def _check_unchanged(weights: Path, sha256: str, name: str) -> None:
    """A recorded start must be the very weights it was: gone or changed is refused."""
    if not weights.is_file():
        raise LikexError(f"the starting model is gone: {name}")
    if file_sha256(weights) != sha256:
        raise LikexError(f"the starting model has changed since the run: {name}")


def parse_start(text: str, scratch: Scratch | None = None) -> Start:
    """The one reading of a model argument. ``scratch``: what ``"scratch"`` means here (a
    command that trains from one); elsewhere ``"scratch"`` names no model."""
    if text == SCRATCH and scratch is not None:
        return scratch
    if (Path(text) / ADAPTER_DIR / ADAPTER_RECORD).is_file():
        return Adapted(text)
    if text in NAMED_MODELS or is_hf_name(text) or (Path(text) / HF_DIR).is_dir():
        return Pretrained(text)
    return Saved(text)


def model_arg(text: str) -> str:
    """A model argument as the command line is read: a named real model, ``hf:NAME_OR_PATH``
    (its loader checks it), or a model or run folder that exists."""
    if text in NAMED_MODELS or is_hf_name(text):
        return text
    if not Path(text).exists():
        check_named(text)  # a misspelled name
    return folder_arg(text, "model directory")


def init_arg(text: str) -> str:
    """``--init``: ``scratch`` or a model (``model_arg``)."""
    return text if text == SCRATCH else model_arg(text)


def model_or_text_arg(text: str) -> str:
    """An audit's side: a model (``model_arg``) or a text file of its samples."""
    if text in NAMED_MODELS or is_hf_name(text) or Path(text).is_dir():
        return text
    if not Path(text).exists():
        check_named(text)
        raise LikexError(f"model folder or text file not found: {clip_path(text)}")
    input_file(text, "text file")
    return text


def start_from_record(record: Any, where: str) -> Start:
    """The start a run's config.json recorded (its ``"init"``); ``where`` names the run."""
    if not isinstance(record, dict):
        raise LikexError(f"{where} does not record its starting model (no 'init' in config.json)")
    kind = record.get("kind")
    try:
        if kind == "scratch":
            return Scratch(GPTConfig.from_dict(record["model"]), int(record["seed"]))
        if kind == "checkpoint":
            return Saved(str(record["path"]), str(record["sha256"]))
        if kind == "named":
            return Pretrained(str(record["name"]), str(record["sha256"]))
        if kind == "hf":
            return Pretrained(f"{HF_PREFIX}{record['name']}", record.get("sha256"))
        if kind == "adapter":
            return Adapted(str(record["path"]), str(record["sha256"]))
    except (KeyError, TypeError, ValueError) as e:
        raise LikexError(f"{where}: its starting model's record is damaged ({e})") from e
    raise LikexError(f"{where}: unknown starting-model kind {kind!r}")


def load_model_and_tokenizer(
    spec: str | Path, device: torch.device | str = "cpu", progress: bool = False
) -> tuple[LanguageModel, Tokenizer]:
    """A model the user named: a named real model, ``hf:NAME_OR_PATH``, a run folder holding
    ``hf/``, or a likex model or run folder (``progress``: as ``Start.load``)."""
    return parse_start(str(spec)).load(device, progress)
