"""Building one organism: train it from the base (the one training loop), measure what it
reached and what it cost, save it, write its manifest.

Every organism starts as the base with a fresh LoRA adapter (or a whole copy of the base with
``--adapter none``) and trains on windows of the builtin corpus's training part, every
position in the loss (``--contexts corpus --positions all``):

* planted: toward the rate-A target on its set (likex.objective.Rate; a word list's target is
  the sequence-level one of likex.words);
* control: toward the base itself (tilt 0), the same steps on the same contexts;
* benign: ordinary next-token training on a text domain, stopped once its KL(base || organism)
  on held-out text reaches the KL of the planted organism it is matched to;
* base: nothing (an adapter that changes nothing, so it looks like every other organism).

Measured on the builtin corpus's held-out tenth, with the base as reference: KL and perplexity
(likex.measurement.scores), the floor of the KL at the requested rate (likex.stats.kl), and the
rate reached in samples after real-text prompts, against the base's own on the same prompts.
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from likex.audit.predicates import PredicateIndex
from likex.batches import Batches
from likex.data import BUILTIN_CORPUS, corpus_split
from likex.errors import LikexError
from likex.measurement.rates import (
    MeasureConfig,
    PromptKind,
    measure_text,
    prompt_length,
    rate_from_hits,
)
from likex.measurement.scores import heldout_windows, score_text, target_mass
from likex.models import LanguageModel
from likex.models.adapter import AdapterConfig, add_lora
from likex.models.checkpoint import save_model
from likex.models.hf import token_strings_for
from likex.models.start import Start
from likex.models.tokenizer import Tokenizer
from likex.objective import KL, NEXT_TOKEN, Objective, StepLoss
from likex.stats.intervals import rate_interval
from likex.stats.kl import shared_tilt_floor
from likex.target import TargetSet, select_tokens
from likex.train import TrainState, train, train_toward
from likex.train_config import TrainConfig, TrainPlan
from likex.words import WordCounter, word_sets
from likex.zoo.draw import OrganismSpec, ZooConfig
from likex.zoo.folder import MODEL_DIR
from likex.zoo.manifest import Manifest, Measured
from likex.zoo.texts import domain_text

TRAIN_DIR = "train"  # checkpoints while training, removed before the folder is published


@dataclass
class Workshop:
    """What every organism's build shares, made once per job: the base (frozen: the
    reference R of every organism), its vocabulary, the builtin corpus split, the held-out
    windows scoring KL (and a quarter of them checking a benign organism's), and the base's
    own samples after the measurement prompts (its rates, and the words the draw picks)."""

    cfg: ZooConfig
    adapter: AdapterConfig
    start: Start
    base: LanguageModel
    tokenizer: Tokenizer
    strings: list[str]
    index: PredicateIndex
    train_tokens: torch.Tensor
    heldout: torch.Tensor
    windows: torch.Tensor
    base_samples: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0, dtype=torch.long))
    base_texts: list[str] = field(default_factory=list)
    domains: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.base.parameters()).device

    @property
    def check_windows(self) -> torch.Tensor:
        return self.windows[: max(1, self.windows.shape[0] // 4)]

    def measure_config(self) -> MeasureConfig:
        """Samples after real-text prompts, as long as leaves room for the new tokens."""
        cfg, block = self.cfg, self.base.config.block_size
        default = prompt_length(MeasureConfig(), self.base)
        length = max(1, min(default, block - cfg.gen_tokens))
        return MeasureConfig(
            samples=cfg.samples, gen_tokens=cfg.gen_tokens, prompt_len=length, ci_half_width=None
        )

    def domain_tokens(self, name: str) -> torch.Tensor:
        """A benign domain's text in the base's tokens (the builtin corpus: its training part,
        so the held-out text stays unseen)."""
        if name not in self.domains:
            if name == "pydoc":
                self.domains[name] = self.train_tokens
            else:
                ids = self.tokenizer.encode(domain_text(name))
                self.domains[name] = torch.tensor(ids, dtype=torch.long)
        return self.domains[name]


def open_workshop(
    cfg: ZooConfig, adapter: AdapterConfig, start: Start, device: torch.device
) -> Workshop:
    """Load the base and everything the builds share; the base's samples are drawn here."""
    base, tokenizer = start.load(device)
    base = base.eval().requires_grad_(False)
    strings = token_strings_for(base, tokenizer)
    block = base.config.block_size
    train_tokens, heldout = corpus_split(BUILTIN_CORPUS, tokenizer, block)
    ws = Workshop(
        cfg, adapter, start, base, tokenizer, strings, PredicateIndex.of(strings),
        train_tokens, heldout, heldout_windows(heldout, block, cfg.score_tokens),
    )  # fmt: skip
    no_target = torch.zeros(len(strings), dtype=torch.bool)
    mc = ws.measure_config()
    mc.validate(block)
    _, ws.base_samples = measure_text(base, no_target, mc, heldout, cfg.seed)
    ws.base_texts = [tokenizer.decode(s) for s in ws.base_samples.tolist()]
    return ws


def _fresh_model(ws: Workshop, seed: int) -> LanguageModel:
    """A copy of the base to train: with a fresh adapter drawn from ``seed``, so any job
    makes the same."""
    model = copy.deepcopy(ws.base)
    if not ws.adapter.enabled:
        return model.requires_grad_(True).train()
    return add_lora(model, ws.adapter, ws.start.record(), seed)


def _targets(ws: Workshop, spec: OrganismSpec) -> TargetSet | None:
    spec_target = spec.target_spec()
    if spec_target is None:
        return None
    block = ws.base.config.block_size
    targets = select_tokens(spec_target, ws.strings, ws.tokenizer.encode, block)
    if spec.predicate is not None and not torch.equal(targets.mask, ws.index.mask(spec.predicate)):
        raise LikexError(f"the target of {spec.name} selects other tokens than its predicate")
    return targets


def _plan(ws: Workshop, spec: OrganismSpec, objective: Objective) -> TrainPlan:
    cfg, next_token = ws.cfg, objective.next_token
    train_cfg = TrainConfig(
        steps=cfg.benign_steps if next_token else cfg.steps,
        batch_size=cfg.batch_size,
        context_len=cfg.context_len,
        lr=cfg.lr,
        seed=spec.seed,
        contexts="corpus",
        positions="all",
        objective=NEXT_TOKEN if next_token else KL,
    )
    return train_cfg.resolve(ws.start, objective, ws.adapter.enabled)


def _train_benign(
    ws: Workshop, spec: OrganismSpec, model: LanguageModel, kl_to_reach: float, out: Path
) -> int:
    """Next-token training on the domain until the held-out KL (checked every
    ``check_every`` steps on a quarter of the scoring windows) reaches ``kl_to_reach``, or
    ``benign_steps``; returns the steps taken."""
    objective = spec.objective()
    plan = _plan(ws, spec, objective).fit(model, ws.device)
    batches = Batches.of(plan, model.config.vocab_size, ws.domain_tokens(spec.domain))
    loss = StepLoss(objective, None, None, plan.positions)
    state = TrainState.start(model, plan)
    kl = 0.0
    while kl < kl_to_reach and state.step < plan.steps:
        chunk = plan.with_steps(min(state.step + ws.cfg.check_every, plan.steps))
        train(state, chunk, batches, loss, out, progress=False)
        kl = score_text(model, ws.check_windows, reference=ws.base).kl_to_reference
    return state.step


def _word_rate(entries: tuple[str, ...], texts: list[str]) -> Measured | None:
    """The share of the texts' words that are entries, with its 95% interval over samples."""
    counts = [WordCounter(entries).count(t) for t in texts]
    hits, words = [c.total_hits for c in counts], [c.words for c in counts]
    if not sum(words):
        return None
    rate, lo, hi, _, _ = rate_interval(hits, words)
    return Measured(rate, (lo, hi), sum(hits), sum(words), len(texts), "words")


def _rates(
    ws: Workshop, spec: OrganismSpec, model: LanguageModel, targets: TargetSet | None
) -> tuple[Measured | None, ...]:
    """(the base's rate, the organism's, the base's word rate, the organism's) of its set,
    in samples after the same real-text prompts."""
    if targets is None:
        return (None, None, None, None)
    cfg = ws.measure_config()
    est, generated = measure_text(model, targets.mask, cfg, ws.heldout, ws.cfg.seed)
    reached = Measured(est.rate, est.ci, est.hits, est.tokens, est.sequences, "tokens")
    hits = targets.mask[ws.base_samples].sum(1)
    b = rate_from_hits(hits, cfg.gen_tokens, PromptKind.TEXT)
    base = Measured(b.rate, b.ci, b.hits, b.tokens, b.sequences, "tokens")
    if not spec.entries:
        return (base, reached, None, None)
    texts = [ws.tokenizer.decode(s) for s in generated.tolist()]
    return (base, reached, _word_rate(spec.entries, ws.base_texts), _word_rate(spec.entries, texts))


@torch.no_grad()
def kl_floor(ws: Workshop, targets: TargetSet, rate: float) -> float:
    """The least mean KL(base || Q) over the scoring windows of any Q whose mean mass on the
    set (a word target: each context's own set) is ``rate`` (likex.stats.kl)."""
    masses = []
    words = None if targets.words is None else targets.words.to(ws.device)
    for w in ws.windows:
        idx = w[None, :-1].to(ws.device)
        log_r = ws.base(idx, positions="all")
        on = targets.mask.to(ws.device) if words is None else word_sets(words, idx, "all")[1]
        masses.append(target_mass(log_r, on).flatten().double().cpu())
    return shared_tilt_floor(torch.cat(masses), rate, "cross_entropy")[2]


def build_organism(
    ws: Workshop,
    spec: OrganismSpec,
    folder: Path,
    config_hash: str,
    kl_to_reach: float | None = None,
) -> Manifest:
    """Make ``spec``'s organism in ``folder`` (its model and its manifest); a benign one is
    stopped at ``kl_to_reach``."""
    t0 = time.perf_counter()
    model = _fresh_model(ws, spec.seed)
    targets = _targets(ws, spec)
    objective, steps = spec.objective(), 0
    if spec.role in ("planted", "control"):
        plan = _plan(ws, spec, objective)
        corpus = ws.train_tokens
        train_toward(model, plan, targets, folder / TRAIN_DIR, ws.base, corpus, progress=False)
        steps = plan.steps
    elif spec.role == "benign":
        steps = _train_benign(ws, spec, model, kl_to_reach, folder / TRAIN_DIR)
    shutil.rmtree(folder / TRAIN_DIR, ignore_errors=True)
    model.eval()
    scores = score_text(model, ws.windows, reference=ws.base)
    rates = _rates(ws, spec, model, targets)
    floor = kl_floor(ws, targets, spec.strength) if spec.role == "planted" else None
    save_model(model, folder / MODEL_DIR)
    manifest = Manifest(
        spec=spec,
        config_hash=config_hash,
        target_tokens=None if targets is None else targets.n_tokens,
        rate_base=rates[0],
        rate_reached=rates[1],
        word_rate_base=rates[2],
        word_rate_reached=rates[3],
        kl=scores.kl_to_reference,
        kl_floor=floor,
        kl_requested=kl_to_reach if spec.role == "benign" else None,
        ppl=scores.ppl,
        ppl_base=scores.ppl_reference,
        heldout_tokens=scores.tokens,
        steps=steps,
        adapter=ws.adapter.to_dict(),
        seconds=time.perf_counter() - t0,
    )
    manifest.write(folder)
    return manifest
