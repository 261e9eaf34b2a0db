"""Any transformers causal LM behind the small interface the rest of likex uses.

``HFCausalLM`` wraps an ``AutoModelForCausalLM`` so that, like the built-in GPT, it has
``forward(idx, positions="last"|"all", cache, start_pos)`` returning float32 log-probabilities,
``.config.block_size`` / ``.config.vocab_size``, ``num_params()`` and ``new_cache(batch)``.
Training, sampling and measurement then need no branch on the model type.

Models are named ``hf:NAME_OR_PATH`` (a hub name, which needs internet the first time, or a
local folder written by ``save_pretrained``). A trained model is saved with ``save_pretrained``
(weights, config and tokenizer) into ``DIR/hf/`` of a run folder, next to likex's own
``config.json`` (the run config), so ``AutoModelForCausalLM.from_pretrained("DIR/hf")`` loads it
in plain transformers.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from likex.errors import LikexError
from likex.io import atomic_write_json, temp_dir
from likex.models.tokenizer import HFTokenizer, Tokenizer, gpt2

HF_PREFIX = "hf:"
HF_DIR = "hf"  # a run folder's transformers model (save_pretrained format)
HF_STEP_FILE = "likex_step.json"  # the training step of the saved weights, for --resume
# The positions likex uses of a transformers model: its own context (8192 for SmolLM2) would
# become every default length (scoring windows, probes, the windowed sampling fallback), and a
# 8192-token window costs minutes and gigabytes on a CPU. 512 holds a measurement's prompt plus
# its 200 new tokens, so sampling stays on the KV cache.
HF_CONTEXT_CAP = 512
# The default measurement prompt of a pretrained model (MeasureConfig.prompt_len None): a short
# prefix, as the seed's full-context prompts would be for a 256-token model.
HF_PROMPT_LEN = 64


@dataclass(frozen=True)
class HFConfig:
    """What likex needs to know about a transformers model."""

    name: str
    vocab_size: int  # rows of the output head (may exceed the tokenizer's vocabulary)
    block_size: int  # positions likex uses: the model's context, at most HF_CONTEXT_CAP
    max_context: int  # the model's own context

    @property
    def prompt_len(self) -> int:
        """A short prefix (HF_PROMPT_LEN) where no length is given, so that measuring a
        pretrained model costs what its samples need, not what its context allows."""
        return min(HF_PROMPT_LEN, self.block_size)

    def to_dict(self) -> dict:
        return asdict(self)


def is_hf_name(spec: str) -> bool:
    return spec.startswith(HF_PREFIX)


def hf_path(spec: str) -> str:
    """The hub name or folder of ``hf:NAME_OR_PATH`` (the text itself without the prefix)."""
    return spec[len(HF_PREFIX) :] if is_hf_name(spec) else spec


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise LikexError(
            "hf: models need the optional extra: pip install 'likex[hf]' (transformers)"
        ) from e
    # Its warnings and loading/saving bars are not ours to print (likex has --quiet).
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers


def _context_length(config: Any, name: str) -> int:
    for attr in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    raise LikexError(f"cannot tell the context length of {name} from its config")


class HFCausalLM(nn.Module):
    def __init__(self, model: nn.Module, tokenizer: Tokenizer, name: str) -> None:
        super().__init__()
        self.hf = model
        self.tokenizer = tokenizer
        head = model.get_output_embeddings()
        if head is None:
            raise LikexError(f"{name} has no output head: not a causal language model")
        context = _context_length(model.config, name)
        self.config = HFConfig(
            name=name,
            vocab_size=int(head.weight.shape[0]),
            block_size=min(context, HF_CONTEXT_CAP),
            max_context=context,
        )
        params = inspect.signature(model.forward).parameters
        # With logits_to_keep the model applies its head (and any logit scaling or capping
        # it does) to the kept positions only; without it likex applies the head itself.
        self._keeps_logits = "logits_to_keep" in params
        # transformers 5 renamed past_key_values to cache and computes cache positions itself.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._cache_positions = "cache_position" in params

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights are counted once

    def new_cache(self, batch: int) -> Any:
        return _transformers().DynamicCache(config=self.hf.config)

    def forward(
        self,
        idx: torch.Tensor,
        positions: str = "all",
        cache: Any = None,
        start_pos: int = 0,
        attn_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Log-probabilities of the next token: [B, V] for "last", [B, T, V] for "all".

        ``attn_mask`` [B, T, T] (True: the query may attend to the key) and ``position_ids``
        [B, T] replace the causal line and its positions (no cache; likex.models.tree): the
        mask goes to the model as a custom 4D mask, which transformers uses as it is."""
        T = idx.shape[1]
        kwargs: dict[str, Any] = {"use_cache": cache is not None}
        if attn_mask is not None or position_ids is not None:
            if attn_mask is None or position_ids is None or cache is not None:
                raise ValueError("attn_mask and position_ids go together, without a cache")
            if int(position_ids.max()) >= self.config.max_context:
                raise ValueError(
                    f"position {int(position_ids.max())} is beyond the context of "
                    f"{self.config.max_context}"
                )
            where = position_ids
            kwargs["attention_mask"] = self._custom_mask(attn_mask)
        else:
            if start_pos + T > self.config.block_size:
                raise ValueError(
                    f"sequence of {start_pos + T} tokens exceeds the context of "
                    f"{self.config.block_size}"
                )
            where = torch.arange(start_pos, start_pos + T, device=idx.device)[None]
        if cache is not None:
            kwargs[self._cache_arg] = cache
            if self._cache_positions:
                kwargs["cache_position"] = where[0]
        if self._keeps_logits:
            keep = 1 if positions == "last" else 0  # 0 keeps every position
            out = self.hf(idx, position_ids=where, logits_to_keep=keep, **kwargs)
            logits = out.logits
        else:
            hidden = self.hf.base_model(idx, position_ids=where, **kwargs)[0]
            if positions == "last":
                hidden = hidden[:, -1:]
            logits = self.hf.get_output_embeddings()(hidden)
        if positions == "last":
            logits = logits[:, -1]
        return F.log_softmax(logits.float(), dim=-1)

    def _custom_mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """[B, 1, T, T] as the attention implementation takes it: boolean for sdpa (True:
        attend), additive (0 or the dtype's minimum) for the eager one."""
        if getattr(self.hf.config, "_attn_implementation", "sdpa") != "eager":
            return allowed[:, None]
        dtype = next(self.hf.parameters()).dtype
        blocked = torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=allowed.device)
        return torch.where(allowed, torch.zeros((), dtype=dtype, device=allowed.device), blocked)[
            :, None
        ]

    def check_savable(self) -> None:
        """Refuse before training what save_pretrained would refuse after it."""
        quantizer = getattr(self.hf, "hf_quantizer", None)
        if quantizer is not None and not getattr(quantizer, "is_serializable", False):
            raise LikexError(
                f"{self.config.name} is quantized in a form transformers cannot save "
                f"({type(quantizer).__name__}): a trained copy could not be written"
            )

    def save_pretrained(self, directory: str | Path, step: int | None = None) -> None:
        """Model and tokenizer in transformers' format, replacing ``directory`` whole.

        Written into a temporary sibling first, so a crash never leaves a half-written model.
        """
        d = Path(directory)
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir(d.parent, f".{d.name}.")
        try:
            with _row_major(self.hf):  # transformers' saving reads each weight as one run
                self.hf.save_pretrained(tmp)
            self.tokenizer.raw.save_pretrained(tmp)
            atomic_write_json(tmp / HF_STEP_FILE, {"step": step, "source": self.config.name})
            old = d.with_name(f".{d.name}.old")
            if d.exists():
                shutil.rmtree(old, ignore_errors=True)
                d.rename(old)
            tmp.rename(d)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def load_hf(
    name_or_path: str,
    device: torch.device | str = "cpu",
    gguf_file: str | None = None,
    label: str | None = None,
    progress: bool = False,
) -> HFCausalLM:
    """A transformers causal LM and its tokenizer, in float32 (autocast handles bf16 on GPUs).

    ``gguf_file``: a GGUF file in the folder ``name_or_path``; transformers dequantizes it to
    float32 on loading, so the model is an ordinary one and likex drops the quantization
    record (which save_pretrained refuses) to save it as plain safetensors. ``label``: the
    model's name in results (default: the folder or hub name). ``progress``: show
    transformers' own bars while the model loads (its weights read or a GGUF's dequantized,
    with the time left; a hub model's download).
    """
    transformers = _transformers()
    name = hf_path(name_or_path)
    if not name:
        raise LikexError("hf: needs a model name or folder, e.g. hf:gpt2 or hf:./my-model")
    if name.startswith(("/", ".", "~")) and not Path(name).expanduser().is_dir():
        raise LikexError(f"model folder not found: {name}")  # not a hub name: no lookup
    files = {"gguf_file": gguf_file} if gguf_file else {}
    # transformers' GGUF reader draws its own progress bars, past its progress-bar switch: the
    # tokenizer's reading of the file is kept quiet, the model's loading only where no
    # progress is asked for.
    quiet = contextlib.redirect_stderr(io.StringIO()) if gguf_file else contextlib.nullcontext()
    try:
        with quiet:
            raw_tok = transformers.AutoTokenizer.from_pretrained(name, **files)
    except Exception as e:
        raise LikexError(f"cannot load the tokenizer of {name}: {_first_line(e)}") from e
    try:
        with _loading_bars(transformers) if progress else quiet:
            model = transformers.AutoModelForCausalLM.from_pretrained(
                name, dtype=torch.float32, **files
            )
    except Exception as e:
        raise LikexError(f"cannot load {name} as a causal language model: {_first_line(e)}") from e
    if gguf_file:
        # The weights are float32 now; only the record of their GGUF origin stops saving.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    label = label or name
    wrapped = HFCausalLM(model, HFTokenizer(raw_tok, label), label)
    vocab, outputs = len(raw_tok), wrapped.config.vocab_size
    # A head may have a few padding rows more than the tokenizer has tokens (Pythia: 50304 for
    # 50277), never fewer; a tokenizer of under half the head belongs to some other model
    # (transformers 5 even builds an empty one for a folder without tokenizer files).
    if not outputs // 2 <= vocab <= outputs:
        raise LikexError(
            f"cannot load the tokenizer of {name}: it has {vocab} tokens for the model's "
            f"{outputs} outputs (missing or mismatched tokenizer files)"
        )
    wrapped = wrapped.to(device)
    if torch.device(device).type == "cpu":
        column_major_weights(wrapped)
    return wrapped


def column_major_weights(module: nn.Module) -> None:
    """Store every linear layer's weight [out, in] as the transpose of a contiguous [in, out]
    matrix, in place (a tied head and embedding stay one tensor), and every other weight as a
    copy of its own.

    ``F.linear`` computes x @ W.T; with W stored this way the CPU's matrix library reads a
    contiguous right-hand side and takes its fast path for the few rows of a decode step:
    measured on the project's 2-core CPU (MKL), SmolLM2-135M samples 1.8x faster at 4 to 32
    sequences, 1.3x at 64, while training's hundreds of rows run at the same speed either
    way. The values are untouched; only the order of the sums inside a product may differ.
    The other weights are copied so that no tensor keeps the memory-mapped file a cached model
    was read from (likex.models.cache) mapped: its pages would count a second time. Training
    every weight pays for the layout: PyTorch's fused AdamW on a CPU copies a weight that is
    not contiguous to step it (more peak memory, a slower optimizer step; docs/results.md)."""
    linear = {id(m.weight) for m in module.modules() if isinstance(m, nn.Linear)}
    with torch.no_grad():
        for param in module.parameters():  # a tied weight comes once
            if id(param) in linear and param.is_contiguous():
                param.data = _transposed_storage(param.data)
            else:
                param.data = param.data.clone()


def _transposed_storage(weight: torch.Tensor) -> torch.Tensor:
    return weight.t().contiguous().t()


@contextlib.contextmanager
def _row_major(module: nn.Module) -> Iterator[None]:
    """The weights ``column_major_weights`` re-stored, contiguous again for the duration."""
    layers = [
        layer
        for layer in module.modules()
        if isinstance(layer, nn.Linear) and not layer.weight.is_contiguous()
    ]
    with torch.no_grad():
        for layer in layers:
            layer.weight.data = layer.weight.data.contiguous()
    try:
        yield
    finally:
        with torch.no_grad():
            for layer in layers:
                layer.weight.data = _transposed_storage(layer.weight.data)


@contextlib.contextmanager
def _loading_bars(transformers: Any) -> Iterator[None]:
    """transformers' progress bars on while a model loads (``_transformers`` turns them off)."""
    transformers.logging.enable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.disable_progress_bar()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def token_strings_for(model: nn.Module, tokenizer: Tokenizer) -> list[str]:
    """The strings target specs select from: one per output id of ``model``.

    Head rows beyond the tokenizer (padding some models add for speed, e.g. Pythia's 50304
    rows for 50277 tokens) never become text, so they get "" and match no substring.
    """
    strings = tokenizer.token_strings()
    vocab = model.config.vocab_size
    return strings[:vocab] + [""] * (vocab - len(strings))


def shared_vocabulary(
    models: list[tuple[str, nn.Module, Tokenizer]],
) -> tuple[Tokenizer, list[str]]:
    """The tokenizer and token strings that the named ``models`` share: each must give every
    output id the same text, since audits and side-effect measurements compare them id by id.
    With no model (two texts compared), GPT-2's."""
    if not models:
        return gpt2(), gpt2().token_strings()
    (name, model, tokenizer), *others = models
    strings = token_strings_for(model, tokenizer)
    for other_name, other, other_tokenizer in others:
        theirs = token_strings_for(other, other_tokenizer)
        if theirs == strings:
            continue
        if len(theirs) != len(strings):
            detail = f"{other_name} has a vocabulary of {len(theirs)} tokens, {name} {len(strings)}"
        else:
            i = next(i for i, (a, b) in enumerate(zip(strings, theirs, strict=True)) if a != b)
            detail = f"token {i} is {strings[i]!r} in {name} but {theirs[i]!r} in {other_name}"
        raise LikexError(f"{name} and {other_name} have different vocabularies ({detail})")
    return tokenizer, strings
