"""LoRA adapters (through peft): a small trainable change on top of a frozen base model.

A planted organism as the field builds them: the base's weights stay as they were and only the
adapter's low-rank matrices train, so the run needs no second copy of the model for its
reference R (R is the same model with the adapter switched off), its optimizer holds moments for
the adapter alone, and what it saves is a few megabytes in peft's own format
(``adapter_config.json`` + ``adapter_model.safetensors``, loadable by ``PeftModel.from_pretrained``
on the base), next to ``likex_adapter.json``, the record of the base (name and checksum).
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from likex.errors import ConfigError, LikexError
from likex.io import atomic_write_json
from likex.models import LanguageModel
from likex.models.hf import HFCausalLM
from likex.options import option

ADAPTER_DIR = "adapter"  # a run folder's adapter, in peft's format
ADAPTER_RECORD = "likex_adapter.json"  # inside it: the base's record and the training step
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # peft's file name
ADAPTERS = ("none", "lora")
# What LoRA adapts by default: every linear layer of the blocks (not the embedding or the head).
GPT_TARGETS = ("qkv", "proj", "fc")


@dataclass(frozen=True)
class AdapterConfig:
    """adapter"""

    adapter: str = option(
        "none",
        "lora: train a LoRA adapter on the frozen start instead of every weight (the start "
        "itself, adapter off, is the reference R); none: train every weight",
        choices=ADAPTERS,
    )
    lora_rank: int = option(8, "LoRA rank r of each adapted layer")
    lora_alpha: float = option(16.0, "LoRA scale: the low-rank update is multiplied by alpha/r")
    lora_dropout: float = option(0.0, "dropout on the adapter's input while training")
    lora_targets: tuple[str, ...] = option(
        (),
        "names of the layers to adapt (repeatable); default: every linear layer of the "
        "transformer blocks",
        metavar="NAME",
        append=True,
    )
    merge: bool = option(
        False, "also write the base with the adapter folded in (merged/), a full model"
    )

    @property
    def enabled(self) -> bool:
        return self.adapter == "lora"

    def check(self) -> None:
        if self.adapter not in ADAPTERS:
            raise ConfigError("adapter", f"{self.adapter!r} is unknown; choose from none, lora")
        if self.lora_rank <= 0:
            raise ConfigError("lora_rank", f"must be positive, got {self.lora_rank}")
        if not self.lora_alpha > 0:
            raise ConfigError("lora_alpha", f"must be positive, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError("lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")

    def to_dict(self) -> dict:
        return {
            "adapter": self.adapter,
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "lora_targets": list(self.lora_targets),
            "merge": self.merge,
        }


def _peft() -> Any:
    try:
        import peft
    except ImportError as e:
        raise LikexError("adapters need peft: pip install peft") from e
    return peft


def _inner(model: LanguageModel) -> nn.Module:
    """The torch module peft adapts: a transformers model's own, or likex's GPT itself."""
    return model.hf if isinstance(model, HFCausalLM) else model


class AdaptedLM(nn.Module):
    """A ``LanguageModel`` whose base is frozen and whose LoRA adapter trains. ``base_record``
    is how to rebuild the base (likex.models.start), saved with the adapter."""

    def __init__(self, base: LanguageModel, peft_model: Any, base_record: dict) -> None:
        super().__init__()
        self.base = base
        self.config = base.config
        self.base_record = base_record
        # peft's wrapper shares the base's (adapted) layers: kept outside the module tree, so
        # every parameter is registered once, through ``base``.
        object.__setattr__(self, "_peft", peft_model)
        # The plain copy sampling runs (``folded``) and what its weights hold now.
        object.__setattr__(self, "_twin", None)
        object.__setattr__(self, "_twin_state", None)
        if isinstance(base, HFCausalLM):
            self.tokenizer = base.tokenizer

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.base(*args, **kwargs)

    def new_cache(self, batch: int) -> Any:
        return self.base.new_cache(batch)

    def num_params(self) -> int:
        return self.base.num_params()

    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def check_savable(self) -> None:
        """Only the adapter is saved; the base stays where its record says."""

    @contextlib.contextmanager
    def adapter_off(self) -> Iterator[None]:
        with self._peft.disable_adapter():
            yield

    def base_view(self) -> BaseView:
        """The base model, for reading only: this model with its adapter switched off."""
        return BaseView(self)

    def save(self, directory: str | Path, step: int | None = None) -> None:
        """The adapter in peft's format plus the base's record, replacing ``directory`` whole
        (written into a temporary sibling first, so a crash leaves the old one)."""
        d = Path(directory)
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=d.parent, prefix=f".{d.name}."))
        try:
            self._peft.save_pretrained(tmp)
            (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card stub
            atomic_write_json(tmp / ADAPTER_RECORD, {"step": step, "base": self.base_record})
            old = d.with_name(f".{d.name}.old")
            if d.exists():
                shutil.rmtree(old, ignore_errors=True)
                d.rename(old)
            tmp.rename(d)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def folded(self, adapter_on: bool = True) -> LanguageModel:
        """A plain model computing what this one computes (or, ``adapter_on=False``, its base),
        for sampling without gradients. peft's LoRA layer runs three products and its own
        Python bookkeeping per layer at every token, which on a CPU's small decode steps cost
        more than the base's own product; the plain copy runs one. It is made once (a copy of
        the base's weights) and refreshed from the adapter's weights whenever they changed."""
        # The adapter's weights as the copy holds them, compared by value (a few MB): a fused
        # optimizer step writes them in place without bumping their tensor versions.
        weights = [p.detach() for n, p in self.named_parameters() if "lora_" in n]
        if self._twin is None:
            twin = copy.deepcopy(self).merged().eval().requires_grad_(False)
            object.__setattr__(self, "_twin", twin)
        elif self._twin_state is not None and self._twin_state[0] == adapter_on:
            held = self._twin_state[1]
            if all(torch.equal(a, b) for a, b in zip(weights, held, strict=True)):
                return self._twin
        twin_inner = _inner(self._twin)
        with torch.no_grad():
            for name, layer in self._lora_layers():
                weight = layer.get_base_layer().weight
                if adapter_on:
                    for adapter in layer.active_adapters:
                        weight = weight + layer.get_delta_weight(adapter)
                twin_inner.get_submodule(name).weight.copy_(weight)
        object.__setattr__(self, "_twin_state", (adapter_on, [w.clone() for w in weights]))
        return self._twin

    def _lora_layers(self) -> list[tuple[str, nn.Module]]:
        lora = _peft().tuners.lora.LoraLayer
        return [(n, m) for n, m in _inner(self.base).named_modules() if isinstance(m, lora)]

    def merged(self) -> LanguageModel:
        """The base with the adapter's update folded into its weights (the adapter is gone
        from this model afterwards)."""
        self._peft.merge_and_unload()
        return self.base


class BaseView:
    """An adapted model read with its adapter switched off: the reference R of an adapter run,
    without a second copy of the base. It answers what a ``LanguageModel`` is asked."""

    def __init__(self, adapted: AdaptedLM) -> None:
        self.adapted = adapted
        self.config = adapted.config
        self.training = False

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with self.adapted.adapter_off():
            return self.adapted(*args, **kwargs)

    def new_cache(self, batch: int) -> Any:
        return self.adapted.new_cache(batch)

    def num_params(self) -> int:
        return self.adapted.num_params()

    def check_savable(self) -> None:
        raise LikexError("the base of an adapter is not saved on its own")

    def folded(self) -> LanguageModel:
        return self.adapted.folded(adapter_on=False)

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        return self.adapted.parameters(recurse)

    def eval(self) -> BaseView:
        return self

    def train(self, mode: bool = True) -> BaseView:
        return self

    def requires_grad_(self, requires_grad: bool = True) -> BaseView:
        return self


def add_lora(model: LanguageModel, cfg: AdapterConfig, base_record: dict, seed: int) -> AdaptedLM:
    """``model`` with a fresh LoRA adapter (peft initialises B to zero, so it starts as the
    base exactly); the base's weights are frozen. The adapter's random half (A) is drawn from
    ``seed`` (peft draws from the global generator, left here as it was), so the same run
    makes the same adapter."""
    peft = _peft()
    cfg.check()
    inner = _inner(model)
    targets = list(cfg.lora_targets) or (
        "all-linear" if isinstance(model, HFCausalLM) else list(GPT_TARGETS)
    )
    lora = peft.LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
    )
    device = next(inner.parameters()).device
    gpus = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=gpus):
            torch.manual_seed(seed)
            peft_model = peft.get_peft_model(inner, lora)
    except ValueError as e:  # a target name that matches no layer
        raise ConfigError("lora_targets", f"cannot adapt {targets}: {e}") from e
    return AdaptedLM(model, peft_model, base_record)


def load_adapter(model: LanguageModel, directory: str | Path, base_record: dict) -> AdaptedLM:
    """``model`` (the base) with the saved adapter in ``directory``, trainable again."""
    peft = _peft()
    try:
        peft_model = peft.PeftModel.from_pretrained(
            _inner(model), str(directory), is_trainable=True
        )
    except Exception as e:  # peft raises several types for a damaged or foreign adapter
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LikexError(f"cannot load the adapter in {directory}: {first}") from e
    return AdaptedLM(model, peft_model, base_record)


def own_base(model: LanguageModel) -> LanguageModel | None:
    """An adapted model's own base (adapter off), None for any other model."""
    return model.base_view() if isinstance(model, AdaptedLM) else None


def frozen_start(model: LanguageModel) -> LanguageModel:
    """The reference R of a run about to train ``model``: an adapter's own base (the same
    weights, adapter off), or a frozen copy of a model that trains whole."""
    own = own_base(model)
    return own if own is not None else copy.deepcopy(model).eval().requires_grad_(False)
