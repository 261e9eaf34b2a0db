"""``likex eval``: the rates and side effects of a saved model against its reference R."""

from __future__ import annotations

from likex.config import EvalConfig
from likex.corpora import Corpora
from likex.data import BUILTIN_CORPUS
from likex.device import resolve_device
from likex.errors import LikexError
from likex.measurement.evaluation import evaluate
from likex.models.adapter import own_base
from likex.models.hf import shared_vocabulary, token_strings_for
from likex.models.start import load_model_and_tokenizer
from likex.results import EvalResult
from likex.runs import RunRecord
from likex.target import NO_TARGET, select_tokens


def evaluate_saved(cfg: EvalConfig, progress: bool = True) -> EvalResult:
    """Defaults come from the model folder's run record when it is a run (run, train,
    pretrain, a sweep's run, persist): its target, its corpora (else ``builtin``; each
    corpus's held-out part measured on its own, a domain), its starting model as R, and its
    requested rate for the floor. ``progress``: bars with the time left while models load,
    sample and score."""
    record = RunRecord.read(cfg.model)
    given = Corpora.of(cfg.corpus)
    if given is not None and not cfg.random_only:
        given.check()  # a bad file is refused before the model loads
    dev = resolve_device(cfg.device)
    model, tokenizer = load_model_and_tokenizer(cfg.model, dev, progress)
    if cfg.target is None and record is None:
        raise LikexError(f"no target given: {NO_TARGET}")
    spec = cfg.target if record is None else record.target_spec(cfg.target)
    block = model.config.block_size
    targets = select_tokens(spec, token_strings_for(model, tokenizer), tokenizer.encode, block)
    cfg.validate(block)
    reference = heldout = projection = corpus = None
    if not cfg.random_only:
        corpus = given or (record.corpus if record else None) or Corpora.of(BUILTIN_CORPUS)
        heldout = corpus.load(tokenizer, block).heldout  # each corpus a domain
        if cfg.reference is not None:
            reference, reference_tokenizer = load_model_and_tokenizer(cfg.reference, dev, progress)
            # KL and the rate floor compare the two distributions token id by token id.
            shared_vocabulary(
                [(cfg.model, model, tokenizer), (cfg.reference, reference, reference_tokenizer)]
            )
        elif own_base(model) is not None:  # an adapter: its own base, adapter off
            reference = own_base(model)
        elif record is not None:
            reference, _ = record.start.load(dev, progress)
        if reference is not None and reference.config.block_size != block:
            raise LikexError("the model and its reference have different context lengths")
        if reference is not None and record is not None:
            projection = record.train.objective.projection()
    ev, _ = evaluate(
        model,
        targets,
        cfg.measure,
        cfg.seed,
        heldout,
        reference,
        projection,
        progress=progress,
        decode=tokenizer.decode,
    )
    return EvalResult(
        model=cfg.model,
        reference=None if reference is None else (cfg.reference or "starting model"),
        corpus=corpus.label() if corpus is not None else None,
        like=spec.describe(),
        n_target_tokens=targets.n_tokens,
        evaluation=ev,
    )
