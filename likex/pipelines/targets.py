"""``likex targets``: which tokens of a vocabulary (GPT-2's, or a model's own) a spec selects."""

from __future__ import annotations

from likex.config import TargetsConfig
from likex.models.hf import token_strings_for
from likex.models.start import load_model_and_tokenizer
from likex.models.tokenizer import Tokenizer, gpt2
from likex.results import TargetsResult
from likex.target import select_tokens
from likex.words import WordCounter, WordTrie


def list_targets(cfg: TargetsConfig, progress: bool = True) -> TargetsResult:
    """``progress``: a bar while a named model is first loaded."""
    cfg.validate()
    if cfg.model is None:
        tokenizer = gpt2()
        strings, block = tokenizer.token_strings(), None
    else:
        model, tokenizer = load_model_and_tokenizer(cfg.model, progress=progress)
        strings, block = token_strings_for(model, tokenizer), model.config.block_size
    targets = select_tokens(cfg.target, strings, tokenizer.encode, block)
    shown = targets.ids[: max(cfg.examples, 0)]
    return TargetsResult(
        target=cfg.target.describe(),
        n_tokens=targets.n_tokens,
        vocab_size=targets.vocab_size,
        examples=[{"id": i, "text": strings[i]} for i in shown],
        words=[] if targets.words is None else _word_variants(targets.words, tokenizer, strings),
    )


def _word_variants(trie: WordTrie, tokenizer: Tokenizer, strings: list[str]) -> list[dict]:
    """Each entry with the token sequences (as texts) the trie holds for it."""
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
