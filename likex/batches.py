"""Where each training step's contexts come from: random tokens (the seed), windows of real
text (one corpus or several, likex.corpora), or text the model being trained writes: after a
corpus prefix, after the start-of-text token alone (its own free text), or as the assistant's
turn after a user turn of corpus text (an instruction model's chat template).

A batch is a pure function of (seed, rank, step) and, for generated contexts, of the model's
weights at that step, so a resumed or distributed run draws exactly the batches an
uninterrupted single run would, with no random state to save. With ``context_block`` K > 1 the
generated contexts of K steps are written at once, at the first step of their block (a CPU
samples 32 rows for little more than the cost of 4): each step's batch is then a function of
the weights at its block's first step, and a checkpoint taken inside a block keeps the block's
contexts (``pending``), which a resumed run ``restore``s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from likex.corpora import CorpusMix
from likex.data import random_contexts, step_generator
from likex.errors import ConfigError, LikexError
from likex.generate import sample
from likex.models import LanguageModel
from likex.train_config import TrainPlan
from likex.words import WordTrie, plant_prefixes

# step_generator streams: 0 the windows and the sampler's seed, 2 word prefixes, 3 which corpus
# each window comes from, 4 how many generated contexts start from free text and chat turns
_PICK, _STARTS = 3, 4


@dataclass(frozen=True)
class Batches:
    """The batch source of a run: ``contexts`` (random, corpus or generated) of
    ``context_len`` tokens, ``batch_size`` per step and rank. ``corpus``: one text or several
    (a ``CorpusMix``, windows drawn in proportion to their shares). Generated contexts start
    from a corpus prefix, except a share ``free_contexts`` that start from ``start_id`` alone
    and a share ``chat_contexts`` that are chat turns (``user_turn``: the template's tokens
    before and after a user message). With a word target (``words``) a share
    ``word_contexts`` of the contexts end inside a word, so finishing one is learned
    (likex.words.plant_prefixes); next-token training (``plant`` False) keeps its text.
    ``context_block``: steps whose generated contexts are written in one sampling batch."""

    contexts: str
    batch_size: int
    context_len: int
    seed: int
    vocab_size: int
    corpus: torch.Tensor | CorpusMix | None = None
    words: WordTrie | None = None
    word_contexts: float = 0.25
    plant: bool = True
    free_contexts: float = 0.0
    chat_contexts: float = 0.0
    start_id: int | None = None
    user_turn: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    context_block: int = 1
    # the block of generated contexts being used, by rank: (its first step, its rows)
    _blocks: dict[int, tuple[int, torch.Tensor]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    @classmethod
    def of(
        cls,
        plan: TrainPlan,
        vocab_size: int,
        corpus: torch.Tensor | CorpusMix | None = None,
        words: WordTrie | None = None,
        start_id: int | None = None,
        user_turn: tuple[list[int], list[int]] | None = None,
    ) -> Batches:
        if plan.contexts != "random" and corpus is None:
            raise LikexError(f"--contexts {plan.contexts} needs a corpus")
        if plan.free_contexts and start_id is None:
            raise LikexError("free-text contexts need the start-of-text token")
        if plan.chat_contexts and user_turn is None:
            raise ConfigError(
                "chat_contexts", "needs a model with a chat template (an instruction model)"
            )
        batches = cls(
            contexts=plan.contexts,
            batch_size=plan.batch_size,
            context_len=plan.context_len,
            seed=plan.seed,
            vocab_size=vocab_size,
            corpus=corpus,
            words=words,
            word_contexts=plan.word_contexts,
            plant=not plan.objective.next_token,
            free_contexts=plan.free_contexts,
            chat_contexts=plan.chat_contexts,
            start_id=start_id,
            user_turn=None if user_turn is None else (tuple(user_turn[0]), tuple(user_turn[1])),
            context_block=plan.context_block,
        )
        if plan.chat_contexts:
            batches.user_len()  # a window too short for a chat turn is refused now
        return batches

    def __call__(
        self, step: int, rank: int = 0, model: LanguageModel | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(contexts, next tokens) of ``step``. Random and generated contexts have no next
        tokens (None); generated ones are on the model's device."""
        if self.contexts == "random":
            gen = step_generator(self.seed, step, rank)
            idx = random_contexts(self.batch_size, self.context_len, self.vocab_size, gen)
            labels = None
        elif self.contexts == "generated" and self.context_block > 1:
            idx, labels = self._from_block(step, rank, model), None
        else:
            idx, labels = self._written(step, rank, self.batch_size, model)
        if self.words is not None and self.plant:
            stream = step_generator(self.seed, step, rank, 2)
            idx = plant_prefixes(self.words, idx.cpu(), self.word_contexts, stream).to(idx.device)
        return idx, labels

    def _written(
        self, step: int, rank: int, rows: int, model: LanguageModel | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``rows`` corpus windows drawn with ``step``'s streams (contexts and next tokens), or
        the contexts the model writes from them (and None)."""
        gen = step_generator(self.seed, step, rank)
        pick = step_generator(self.seed, step, rank, _PICK)
        windows = self._mix().windows(rows, self.context_len, gen, pick)
        if self.contexts != "generated":
            return windows[:, :-1], windows[:, 1:]
        starts = step_generator(self.seed, step, rank, _STARTS)
        written = self._generated(windows, gen, starts, model)
        if rows > self.batch_size:  # a block: each step gets its share of every kind of start
            written = written[torch.randperm(rows, generator=starts).to(written.device)]
        return written, None

    def block_start(self, step: int) -> int:
        """The first step of ``step``'s block of generated contexts."""
        return step - (step - 1) % self.context_block

    def _from_block(self, step: int, rank: int, model: LanguageModel | None) -> torch.Tensor:
        first = self.block_start(step)
        held = self._blocks.get(rank)
        if step == first:  # written now, from the weights the block's first step starts with
            held = (
                first,
                self._written(first, rank, self.batch_size * self.context_block, model)[0],
            )
            self._blocks[rank] = held
        elif held is None or held[0] != first:
            raise LikexError(
                f"the contexts of step {step} were written at step {first} and are not kept "
                "(a checkpoint inside a block holds them)"
            )
        i = (step - first) * self.batch_size
        return held[1][i : i + self.batch_size]

    def pending(self, step: int, rank: int = 0) -> tuple[int, torch.Tensor] | None:
        """What a checkpoint of ``step`` must keep for the steps after it: the block of
        contexts that step ``step + 1`` uses, where it was written at ``step`` or before
        (None where the next step writes its own)."""
        if self.contexts != "generated" or self.context_block == 1:
            return None
        first = self.block_start(step + 1)
        held = self._blocks.get(rank)
        if first == step + 1 or held is None or held[0] != first:
            return None
        return held

    def restore(self, block: tuple[int, torch.Tensor] | None, rank: int = 0) -> None:
        """Take back the block a checkpoint kept (``pending``), checked against this source."""
        if block is None:
            return
        first, rows = block
        shape = (self.batch_size * self.context_block, self.context_len)
        if self.block_start(first) != first or tuple(rows.shape) != shape:
            raise LikexError(
                f"the checkpoint's generated contexts ({tuple(rows.shape)} from step {first}) do "
                f"not fit blocks of {self.context_block} steps of {self.batch_size} x "
                f"{self.context_len}"
            )
        self._blocks[rank] = (first, rows)

    def _mix(self) -> CorpusMix:
        if self.corpus is None:
            raise LikexError(f"--contexts {self.contexts} needs a corpus")
        if isinstance(self.corpus, CorpusMix):
            return self.corpus
        return CorpusMix.single(self.corpus)

    def start_counts(self, starts: torch.Generator, rows: int) -> tuple[int, int]:
        """(free-text, chat) contexts among ``rows``: each share, rounded up or down at random
        (one uniform draw for both, so they never overlap) so that on average the shares hold
        exactly, at any batch size."""
        if not (self.free_contexts or self.chat_contexts):
            return 0, 0
        u = float(torch.rand((), generator=starts, dtype=torch.float64))
        free = math.floor(self.free_contexts * rows + u)
        both = math.floor((self.free_contexts + self.chat_contexts) * rows + u)
        return free, min(both, rows) - free

    def user_len(self) -> int:
        """Corpus tokens in a chat context's user turn: a quarter of the window, or less so
        that a quarter is left for the model's own turn."""
        if self.user_turn is None:
            raise LikexError("chat contexts need a chat template")
        quarter = max(1, self.context_len // 4)
        wrap = len(self.user_turn[0]) + len(self.user_turn[1])
        n = min(quarter, self.context_len - wrap - quarter)
        if n < 1:
            raise ConfigError(
                "context_len",
                f"{self.context_len} is too short for chat contexts: the chat template takes "
                f"{wrap} tokens, and the model's turn needs a quarter of the window",
            )
        return n

    def _generated(
        self,
        windows: torch.Tensor,
        gen: torch.Generator,
        starts: torch.Generator,
        model: LanguageModel | None,
    ) -> torch.Tensor:
        """Contexts the model writes to ``context_len`` tokens, on its device: after a quarter
        of each corpus window, after a chat turn, or after the start-of-text token."""
        if model is None:
            raise LikexError("--contexts generated needs the model being trained")
        # A rate is measured on the model's own continuations, and a short run moves the model
        # most where its training contexts were: corpus text alone leaves its own (target-rich)
        # text, where copying raises the rate, untrained. So most of each window is its own.
        device = next(model.parameters()).device
        seed = int(torch.randint(2**62, (1,), generator=gen))
        sampler = torch.Generator(device).manual_seed(seed)
        free, chat = self.start_counts(starts, len(windows))
        n_corpus = len(windows) - free - chat
        prompts = []
        if n_corpus:
            prompts.append(windows[:n_corpus, : max(1, self.context_len // 4)])
        if chat:
            before, after = (torch.tensor(t, dtype=torch.long) for t in self.user_turn or ((), ()))
            user = windows[n_corpus : n_corpus + chat, : self.user_len()]
            prompts.append(torch.cat([before.expand(chat, -1), user, after.expand(chat, -1)], 1))
        if free:
            if self.start_id is None:
                raise LikexError("free-text contexts need the start-of-text token")
            prompts.append(torch.full((free, 1), self.start_id, dtype=torch.long))
        # Each kind of prompt first writes on alone up to the longest one's length; then all
        # rows go on as one batch, so the window's remaining tokens cost one decode step
        # each, not one per kind (a CPU's step of 4 rows costs little more than one of 2).
        longest = max(p.shape[1] for p in prompts)
        rows = []
        for prompt in prompts:
            prompt = prompt.to(device)
            if prompt.shape[1] < longest:
                grown = sample(model, prompt, longest - prompt.shape[1], generator=sampler)
                prompt = torch.cat([prompt, grown], dim=1)
            rows.append(prompt)
        joined = torch.cat(rows)
        new = sample(model, joined, self.context_len - longest, generator=sampler)
        return torch.cat([joined, new], dim=1)
