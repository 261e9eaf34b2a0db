"""``likex eval``: the rates and side effects of a saved model against its reference R."""

from __future__ import annotations

from likex.config import EvalConfig
from likex.data import BUILTIN_CORPUS, corpus_split
from likex.device import resolve_device
from likex.errors import LikexError
from likex.evaluate import evaluate
from likex.models.checkpoint import load_model_and_tokenizer
from likex.models.hf import shared_vocabulary, token_strings_for
from likex.results import EvalResult
from likex.runs import load_start_model, read_config, run_target
from likex.target import select_tokens


def evaluate_saved(cfg: EvalConfig) -> EvalResult:
    """Defaults come from the model folder's config.json when it is a run: its target, its
    corpus (else ``builtin``), its starting model as R, and its rate A for the floor."""
    config = read_config(cfg.model)
    dev = resolve_device(cfg.device)
    model, tokenizer = load_model_and_tokenizer(cfg.model, dev)
    spec = cfg.target if cfg.target is not None else run_target(cfg.model)
    block = model.config.block_size
    targets = select_tokens(spec, token_strings_for(model, tokenizer), tokenizer.encode, block)
    mask = targets.mask
    cfg.validate(block)
    reference = heldout = floor_rate = corpus = None
    if not cfg.random_only:
        corpus = cfg.corpus or config.get("corpus") or BUILTIN_CORPUS
        heldout = corpus_split(corpus, tokenizer, model.config.block_size)[1]
        if cfg.reference is not None:
            reference, reference_tokenizer = load_model_and_tokenizer(cfg.reference, dev)
            # KL and the rate floor compare the two distributions token id by token id.
            shared_vocabulary(
                [(cfg.model, model, tokenizer), (cfg.reference, reference, reference_tokenizer)]
            )
        elif "init" in config:
            reference = load_start_model(cfg.model, dev)
        if reference is not None and reference.config.block_size != model.config.block_size:
            raise LikexError("the model and its reference have different context lengths")
        train_cfg = config.get("train", {})
        if reference is not None and train_cfg.get("mode") == "rate":
            floor_rate = train_cfg["rate"]
    ev, _ = evaluate(
        model,
        mask,
        cfg.measure,
        cfg.seed,
        heldout,
        reference,
        floor_rate,
        words=targets.words,
        decode=tokenizer.decode,
        complete=config.get("train", {}).get("complete", 1.0),
    )
    return EvalResult(
        model=cfg.model,
        reference=None if reference is None else (cfg.reference or "starting model"),
        corpus=corpus if heldout is not None else None,
        like=spec.describe(),
        n_target_tokens=int(mask.sum()),
        evaluation=ev,
    )
