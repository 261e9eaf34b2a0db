"""Where each training step's contexts come from: random tokens (the seed), windows of real
text, or real text continued by the model being trained.

A batch is a pure function of (seed, rank, step) and, for generated contexts, of the model's
weights at that step, so a resumed or distributed run draws exactly the batches an
uninterrupted single run would, with no random state to save.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from likex.data import corpus_windows, random_contexts, step_generator
from likex.errors import LikexError
from likex.generate import sample
from likex.models import LanguageModel
from likex.train_config import TrainPlan
from likex.words import WordTrie, plant_prefixes


@dataclass(frozen=True)
class Batches:
    """The batch source of a run: ``contexts`` (random, corpus or generated) of
    ``context_len`` tokens, ``batch_size`` per step and rank. With a word target (``words``)
    a share ``word_contexts`` of the contexts end inside a word, so finishing one is learned
    (likex.words.plant_prefixes); next-token training (``plant`` False) keeps its text."""

    contexts: str
    batch_size: int
    context_len: int
    seed: int
    vocab_size: int
    corpus: torch.Tensor | None = None
    words: WordTrie | None = None
    word_contexts: float = 0.25
    plant: bool = True

    @classmethod
    def of(
        cls,
        plan: TrainPlan,
        vocab_size: int,
        corpus: torch.Tensor | None = None,
        words: WordTrie | None = None,
    ) -> Batches:
        if plan.contexts != "random" and corpus is None:
            raise LikexError(f"--contexts {plan.contexts} needs a corpus")
        return cls(
            contexts=plan.contexts,
            batch_size=plan.batch_size,
            context_len=plan.context_len,
            seed=plan.seed,
            vocab_size=vocab_size,
            corpus=corpus,
            words=words,
            word_contexts=plan.word_contexts,
            plant=not plan.objective.next_token,
        )

    def __call__(
        self, step: int, rank: int = 0, model: LanguageModel | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(contexts, next tokens) of ``step``. Random and generated contexts have no next
        tokens (None); generated ones are on the model's device."""
        gen = step_generator(self.seed, step, rank)
        if self.contexts == "random":
            idx = random_contexts(self.batch_size, self.context_len, self.vocab_size, gen)
            labels = None
        else:
            if self.corpus is None:
                raise LikexError(f"--contexts {self.contexts} needs a corpus")
            windows = corpus_windows(self.corpus, self.batch_size, self.context_len, gen)
            idx, labels = windows[:, :-1], windows[:, 1:]
            if self.contexts == "generated":
                idx, labels = self._generated(windows, gen, model), None
        if self.words is not None and self.plant:
            stream = step_generator(self.seed, step, rank, 2)
            idx = plant_prefixes(self.words, idx.cpu(), self.word_contexts, stream).to(idx.device)
        return idx, labels

    def _generated(
        self, windows: torch.Tensor, gen: torch.Generator, model: LanguageModel | None
    ) -> torch.Tensor:
        """A quarter of each corpus window continued by ``model`` to ``context_len`` tokens,
        on the model's device."""
        if model is None:
            raise LikexError("--contexts generated needs the model being trained")
        # A rate is measured on the model's own continuations, and a short run moves the model
        # most where its training contexts were: corpus text alone leaves its own (target-rich)
        # text, where copying raises the rate, untrained. So most of each window is its own.
        device = next(model.parameters()).device
        prompt = windows[:, : max(1, self.context_len // 4)].to(device)
        seed = int(torch.randint(2**62, (1,), generator=gen))
        sampler = torch.Generator(device).manual_seed(seed)
        new = sample(model, prompt, self.context_len - prompt.shape[1], generator=sampler)
        return torch.cat([prompt, new], dim=1)
