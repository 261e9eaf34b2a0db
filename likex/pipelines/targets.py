"""``likex targets``: which tokens of GPT-2's vocabulary a target spec selects."""

from __future__ import annotations

from likex.config import TargetsConfig
from likex.models.tokenizer import Tokenizer, gpt2
from likex.results import TargetsResult
from likex.target import select_tokens
from likex.words import WordCounter, WordTrie


def list_targets(cfg: TargetsConfig) -> TargetsResult:
    tokenizer = gpt2()
    strings = tokenizer.token_strings()
    targets = select_tokens(cfg.target, strings, tokenizer.encode)
    shown = targets.ids[: max(cfg.examples, 0)]
    return TargetsResult(
        target=cfg.target.describe(),
        n_tokens=targets.n_tokens,
        vocab_size=targets.vocab_size,
        examples=[{"id": i, "text": strings[i]} for i in shown],
        words=_word_variants(targets.words, tokenizer) if targets.words is not None else [],
    )


def _word_variants(trie: WordTrie, tokenizer: Tokenizer) -> list[dict]:
    """Each entry with the token sequences (as texts) the trie holds for it."""
    strings = tokenizer.token_strings()
    out = []
    for entry in trie.entries:
        counter = WordCounter((entry,), trie.ignore_case)
        variants = [
            [strings[t] for t in v]
            for v in trie.variants
            if counter.count(tokenizer.decode(list(v))).total_hits
        ]
        out.append({"entry": entry, "variants": variants})
    return out
