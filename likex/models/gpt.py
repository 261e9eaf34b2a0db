"""The built-in GPT: the "Model 5" family of the seed experiment, in one file.

A GPT-2-style decoder: learned token and position embeddings, pre-LayerNorm blocks of causal
self-attention and a 4x MLP, a final LayerNorm, and an output head tied to the token
embedding. As in the course's Model 5 the forward returns ``log_softmax(logits / sqrt(d))``.

Two things matter for speed and are worth knowing when reading the code:
* The head is applied only to the positions asked for. Training on the last position and
  sampling need one row of V = 50257 logits per sequence, not one per position.
* With ``positions="last"`` the final block computes its query, attention output and MLP for the
  last position only: the other positions of that block feed nothing but keys and values.

``attn_mask`` and ``position_ids`` (optional) run a sequence whose tokens are not one causal line:
a window followed by branches that each attend to a prefix of it (likex.models.tree).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from likex.device import device_memory
from likex.errors import LikexError, clip

Positions = Literal["last", "all"]
WEIGHT_INITS = ("course", "gpt2")

# Every shape a model.json may give, bounded far beyond any model this tool trains (GPT-2 XL:
# 48 layers of 1,600; the largest vocabularies ~260k tokens), so that a damaged or hostile
# file is refused before anything is allocated rather than after minutes or an allocator's
# traceback. What fits inside these bounds is then checked against the memory (check_fits).
SHAPE_BOUNDS = {
    "vocab_size": 2**22,
    "block_size": 2**20,
    "n_layer": 1_024,
    "n_head": 1_024,
    "n_embd": 2**16,
    "mlp_ratio": 64,
}


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 50257
    block_size: int = 256
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    mlp_ratio: int = 4
    # "course": PyTorch's default init, as the seed did (token embeddings N(0, 1), so the
    # tied head makes the untrained model copy its last input token). "gpt2": N(0, 0.02).
    weight_init: str = "course"

    def __post_init__(self) -> None:
        if self.weight_init not in WEIGHT_INITS:
            raise LikexError(
                f"unknown weight init {clip(self.weight_init)}; choose from {WEIGHT_INITS}"
            )
        for name, most in SHAPE_BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise LikexError(f"model config: {name} must be an integer, got {clip(value)}")
            if not 0 < value <= most:
                raise LikexError(f"model config: {name} must be in 1..{most:_}, got {value:_}")
        if self.n_embd % self.n_head:
            raise LikexError(f"n_embd {self.n_embd} is not divisible by n_head {self.n_head}")

    @property
    def prompt_len(self) -> int:
        """Prompts as long as the context where no length is given: the seed's setup."""
        return self.block_size

    def num_params(self) -> int:
        """The parameters of a GPT of this shape, counted without building it (the head is
        tied to the token embedding)."""
        d, hidden = self.n_embd, self.mlp_ratio * self.n_embd
        block = (3 * d * d + 3 * d) + (d * d + d) + (d * hidden + hidden) + (hidden * d + d)
        block += 4 * d  # two LayerNorms
        return (self.vocab_size + self.block_size) * d + self.n_layer * block + 2 * d

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise LikexError(f"model config has unknown fields: {sorted(unknown)}")
        return cls(**d)


PRESETS: dict[str, GPTConfig] = {
    # The seed's exact Model 5: GPT-2-small sized, ~124M parameters.
    "model5": GPTConfig(),
    # The default of `likex run`: small enough that the seed experiment takes about a
    # minute on a 2-core CPU, same architecture and context.
    "cpu": GPTConfig(n_layer=2, n_head=4, n_embd=128),
    # For tests: seconds on a CPU.
    "tiny": GPTConfig(block_size=64, n_layer=2, n_head=2, n_embd=32),
}


# AdamW learning rate per preset: the seed's 1e-3 for model5; tuned for the others so the
# seed experiment reaches its ~95% within 200 steps (docs/results.md has the measurements).
DEFAULT_LR: dict[str, float] = {"model5": 1e-3, "cpu": 3e-3, "tiny": 1e-2}


def preset_config(name: str, **overrides: object) -> GPTConfig:
    if name not in PRESETS:
        raise LikexError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    d = PRESETS[name].to_dict()
    d.update({k: v for k, v in overrides.items() if v is not None})
    return GPTConfig.from_dict(d)


class KVCache:
    """Keys and values of every layer for positions [0, length), preallocated to block_size."""

    def __init__(self, cfg: GPTConfig, batch: int, device: torch.device, dtype: torch.dtype):
        shape = (batch, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(
        self,
        x: torch.Tensor,
        last_only: bool,
        cache: tuple[torch.Tensor, torch.Tensor] | None,
        start_pos: int,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        hd = C // self.n_head
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, hd).transpose(1, 2)
        k = k.view(B, T, self.n_head, hd).transpose(1, 2)
        v = v.view(B, T, self.n_head, hd).transpose(1, 2)
        if cache is not None:
            k_cache, v_cache = cache
            k_cache[:B, :, start_pos : start_pos + T] = k
            v_cache[:B, :, start_pos : start_pos + T] = v
            k, v = k_cache[:B, :, : start_pos + T], v_cache[:B, :, : start_pos + T]
        if attn_mask is not None:  # [B, T, T], True where a query may see a key
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask[:, None])
        elif last_only:
            # The last query sees every key, so no mask is needed.
            q = q[:, :, -1:]
            y = F.scaled_dot_product_attention(q, k, v)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v)
        elif start_pos == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # A chunk appended to a cache: query t sees keys up to start_pos + t.
            keys = torch.arange(start_pos + T, device=x.device)
            queries = torch.arange(start_pos, start_pos + T, device=x.device)
            mask = keys[None, :] <= queries[:, None]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, y.shape[2], C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        last_only: bool = False,
        cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        start_pos: int = 0,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        residual = x[:, -1:] if last_only else x
        x = residual + self.attn(self.ln_1(x), last_only, cache, start_pos, attn_mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: the head reads the token embedding
        if cfg.weight_init == "gpt2":
            self.apply(self._gpt2_init)
            # GPT-2 scales residual projections so the residual stream's variance does not
            # grow with depth.
            for name, p in self.named_parameters():
                if name.endswith("proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _gpt2_init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Parameters counted once (the tied head shares the token embedding)."""
        return sum(p.numel() for p in self.parameters())

    def check_savable(self) -> None:
        """Every GPT is saved as safetensors: nothing to refuse."""

    def new_cache(self, batch: int) -> KVCache:
        p = self.wte.weight
        return KVCache(self.config, batch, p.device, p.dtype)

    def forward(
        self,
        idx: torch.Tensor,
        positions: Positions = "all",
        cache: KVCache | None = None,
        start_pos: int = 0,
        attn_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Log-probabilities of the next token: [B, V] for "last", [B, T, V] for "all".

        ``attn_mask`` [B, T, T] (True: the query may attend to the key) and ``position_ids``
        [B, T] replace the causal line and its positions (no cache, every position)."""
        _, T = idx.shape
        if attn_mask is not None or position_ids is not None:
            if attn_mask is None or position_ids is None or cache is not None:
                raise ValueError("attn_mask and position_ids go together, without a cache")
            if int(position_ids.max()) >= self.config.block_size:
                raise ValueError(
                    f"position {int(position_ids.max())} is beyond the context of "
                    f"{self.config.block_size}"
                )
            pos = position_ids
        else:
            if start_pos + T > self.config.block_size:
                raise ValueError(
                    f"sequence of {start_pos + T} tokens exceeds the context of "
                    f"{self.config.block_size}"
                )
            pos = torch.arange(start_pos, start_pos + T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        last = len(self.blocks) - 1
        last_only = positions == "last" and attn_mask is None
        for i, block in enumerate(self.blocks):
            layer_cache = (cache.k[i], cache.v[i]) if cache is not None else None
            x = block(x, last_only and i == last, layer_cache, start_pos, attn_mask)
        x = self.ln_f(x)
        if positions == "last":
            x = x[:, -1]
        logits = self.lm_head(x) / math.sqrt(self.config.n_embd)
        return F.log_softmax(logits.float(), dim=-1)


def check_fits(cfg: GPTConfig) -> None:
    """Refuse a model whose float32 weights alone would not fit in this machine's memory
    (models are built on the CPU), with the estimate, before any of it is allocated."""
    need = 4 * cfg.num_params()
    have = device_memory(torch.device("cpu"))
    if have is not None and need > have:
        raise LikexError(
            f"a model of {cfg.num_params():,} parameters needs {need / 2**30:,.1f} GiB for its "
            f"weights alone, more than the {have / 2**30:,.1f} GiB of memory of this machine"
        )


def build_model(cfg: GPTConfig, seed: int) -> GPT:
    """A freshly initialised model, identical for a given (config, seed) on any device.

    Built on the CPU under a forked RNG so the global random state is left as it was.
    """
    check_fits(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT(cfg)
