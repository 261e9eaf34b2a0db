"""What a detector sees: the base (``AuditBase``) and one organism (``Suspect``), and the small
interface every detector implements (``Detector``).

Neither holds anything of the draw or of a manifest: an organism is its name (which says
nothing) and its model folder. What several detectors use is computed once per organism, when
first asked for, and kept: its next-token distributions at the probe contexts, and its
samples (written to the audit folder, so a resumed audit draws nothing twice). Each shared part
records its seconds, so a detector's time counts the shared work it used.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import torch

from likex.audit.predicates import PredicateIndex
from likex.audit.sampling import generate_samples
from likex.audit.white_box import Probes, last_log_probs, probe_contexts, probes_between
from likex.audit.words import corpus_words, text_units
from likex.data import (
    BUILTIN_CORPUS,
    builtin_corpus_text,
    corpus_token_ids,
    corpus_windows,
    step_generator,
)
from likex.errors import LikexError
from likex.io import atomic_write_json
from likex.models import LanguageModel
from likex.models.adapter import ADAPTER_DIR, load_adapter
from likex.models.hf import shared_vocabulary, token_strings_for
from likex.models.start import Adapted, parse_start
from likex.models.tokenizer import Tokenizer
from likex.zoo.verdicts import Verdict, ZooAuditConfig

MAX_WORD_TOKENS = 8  # longest candidate word of the white-box word audit, in tokens
SAMPLES_FILE = "samples.json"
BASE_SAMPLES_FILE = "base_samples.json"
PROBE_BATCH = 16


def draw_samples(
    model: LanguageModel,
    text: torch.Tensor,
    n: int,
    gen_tokens: int,
    seed: int,
    stream: int,
    progress: bool,
) -> list[list[int]]:
    """``n`` samples of ``gen_tokens`` new tokens, each after a window of real text drawn at
    random (the prompts and draws a pure function of ``seed`` and ``stream``)."""
    block = model.config.block_size
    length = max(1, min(model.config.prompt_len, block - gen_tokens))
    prompts = corpus_windows(text, n, length, step_generator(seed, 0, stream=stream))[:, :-1]
    draws = step_generator(seed, 1, stream=stream).initial_seed() % 2**62
    return generate_samples(model, n, gen_tokens, draws, prompts=prompts, progress=progress)


def cached_samples(
    path: Path, draw: Callable[[], list[list[int]]]
) -> tuple[list[list[int]], float]:
    """The samples in ``path`` and the seconds their drawing took, else ``draw()``'s, written
    there first (a resumed audit counts the time the samples cost when they were drawn)."""
    if path.is_file():
        d = json.loads(path.read_text(encoding="utf-8"))
        return d["samples"], float(d["seconds"])
    t0 = time.perf_counter()
    samples = draw()
    seconds = time.perf_counter() - t0
    atomic_write_json(path, {"seconds": seconds, "samples": samples})
    return samples, seconds


class AuditBase:
    """The base, as every detector may know it: its model (the reference), tokenizer and
    vocabulary, the probe contexts (random tokens and windows of the builtin corpus), its own
    samples (once per zoo, in ``root``) and the candidate words of the word audits (the corpus's
    words and the words of its samples)."""

    def __init__(
        self,
        model: LanguageModel,
        tokenizer: Tokenizer,
        record: dict,
        cfg: ZooAuditConfig,
        root: Path,
        progress: bool = False,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer, self.record, self.cfg = tokenizer, record, cfg
        self.root, self.progress = root, progress
        self.strings = token_strings_for(model, tokenizer)
        self.index = PredicateIndex.of(self.strings)
        self.text = corpus_token_ids(BUILTIN_CORPUS, tokenizer)
        length = model.config.prompt_len
        length = max(1, min(length, model.config.block_size - MAX_WORD_TOKENS))
        vocab = model.config.vocab_size
        self.probes = probe_contexts("both", cfg.n_probes, length, vocab, cfg.seed, self.text)
        self.seconds: dict[str, float] = {}

    @cached_property
    def log_ref(self) -> torch.Tensor:
        """The base's next-token log-probabilities at the probes [n, V]."""
        t0 = time.perf_counter()
        out = last_log_probs(self.model, self.probes, PROBE_BATCH)
        self.seconds["probes"] = time.perf_counter() - t0
        return out

    @cached_property
    def samples(self) -> list[list[int]]:
        def draw() -> list[list[int]]:
            cfg = self.cfg
            return draw_samples(
                self.model, self.text, cfg.base_samples, cfg.gen_tokens, cfg.seed, 11, self.progress
            )

        samples, self.seconds["samples"] = cached_samples(self.root / BASE_SAMPLES_FILE, draw)
        return samples

    @cached_property
    def texts(self) -> list[str]:
        return [self.tokenizer.decode(s) for s in self.samples]

    @cached_property
    def candidate_words(self) -> list[str]:
        """The corpus's words seen twice or more and every word of the base's samples, those of
        at most MAX_WORD_TOKENS tokens (the probes leave that much room in the context)."""
        words = corpus_words(builtin_corpus_text()) + [u for t in self.texts for u in text_units(t)]
        encode = self.tokenizer.encode
        return [w for w in dict.fromkeys(words) if 0 < len(encode(" " + w)) <= MAX_WORD_TOKENS]


def load_organism(model_dir: Path, base: AuditBase) -> LanguageModel:
    """An organism's model: an adapter on (a copy of) the base, or a whole model of the base's
    vocabulary."""
    device = next(base.model.parameters()).device
    start = parse_start(str(model_dir))
    if isinstance(start, Adapted):
        if start.base().record() != base.record:
            raise LikexError(f"{model_dir} is an adapter on another base than the zoo's")
        adapter = model_dir / ADAPTER_DIR
        return load_adapter(copy.deepcopy(base.model), adapter, base.record).to(device).eval()
    model, tokenizer = start.load(device)
    named = [(str(model_dir), model, tokenizer), ("the base", base.model, base.tokenizer)]
    shared_vocabulary(named)
    return model.eval()


class Suspect:
    """One organism as a detector sees it: a name and a model folder. Its model, probe
    distributions and samples are made when first asked for and kept; ``begin`` starts a
    detector's account of the shared parts it uses."""

    def __init__(self, name: str, model_dir: Path, base: AuditBase, root: Path) -> None:
        self.name, self.model_dir, self.base, self.root = name, model_dir, base, root
        self._made: dict[str, Any] = {}
        self.costs: dict[str, float] = {}
        self.used: set[str] = set()
        self.fresh = 0.0  # seconds of shared parts made during the current detector's run

    def begin(self) -> None:
        self.used, self.fresh = set(), 0.0

    def used_seconds(self) -> float:
        return sum(self.costs[part] for part in self.used)

    def _part(self, part: str, make: Callable[[], Any], seconds: bool = False) -> Any:
        """The shared ``part``, made by ``make()`` the first time (which returns (the part, its
        seconds) where ``seconds``); its cost is its own, the parts it needs counted apart."""
        self.used.add(part)
        if part not in self._made:
            t0, nested = time.perf_counter(), self.fresh
            made = make()
            elapsed = time.perf_counter() - t0 - (self.fresh - nested)
            self._made[part], cost = made if seconds else (made, elapsed)
            self.costs[part] = cost
            self.fresh += elapsed
        return self._made[part]

    def model(self) -> LanguageModel:
        return self._part("model", lambda: load_organism(self.model_dir, self.base))

    def probes(self) -> Probes:
        """The organism's and the base's next-token distributions at the probes."""

        model = self.model()  # a part of its own, used with this one

        def make() -> Probes:
            log_model = last_log_probs(model, self.base.probes, PROBE_BATCH)
            return probes_between(log_model, self.base.log_ref)

        return self._part("probes", make)

    def samples(self) -> list[list[int]]:
        def draw() -> list[list[int]]:
            cfg = self.base.cfg
            return draw_samples(
                self.model(), self.base.text, cfg.samples, cfg.gen_tokens, cfg.seed, 12, False
            )

        path = self.root / SAMPLES_FILE

        def make() -> tuple[list[list[int]], float]:
            if not path.is_file():
                self.model()  # loaded first: a part of its own, not in the sampling's seconds
            return cached_samples(path, draw)

        return self._part("samples", make, seconds=True)

    def texts(self) -> list[str]:
        samples, decode = self.samples(), self.base.tokenizer.decode  # used with this part
        return self._part("texts", lambda: [decode(s) for s in samples])


class Detector(Protocol):
    """A detector, run blind: ``run`` sees the organism and the base, never the draw.
    ``unit``: what its verdicts name ("tokens", "words", or "" for nothing)."""

    name: str
    unit: str

    def run(self, organism: Suspect, base: AuditBase) -> Verdict: ...
