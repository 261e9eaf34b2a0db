"""``likex audit``: load the suspect and its reference or baseline (models, run folders or
text files), run the white-box or black-box audit (likex.audit), and write audit.json and
its report."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from likex.audit.black_box import black_box_audit
from likex.audit.results import AuditResult
from likex.audit.sampling import generate_samples, text_samples
from likex.audit.white_box import probe_contexts, white_box_audit
from likex.audit.words import (
    WordWhiteBoxResult,
    corpus_words,
    word_black_box_audit,
    word_white_box_audit,
    written_words,
)
from likex.config_audit import AuditConfig
from likex.corpora import corpus_text, token_ids
from likex.data import load_corpus_text
from likex.device import resolve_device
from likex.errors import LikexError
from likex.io import atomic_write_json, check_new_dir
from likex.models import LanguageModel
from likex.models.adapter import own_base
from likex.models.hf import shared_vocabulary
from likex.models.start import load_model_and_tokenizer, parse_start
from likex.models.tokenizer import Tokenizer
from likex.report.audit import write_audit_report
from likex.runs import RunLock, RunRecord, new_run_dir

AUDIT_FILE = "audit.json"
AUDIT_REPORT = "audit.md"


def _white_box_run(cfg: AuditConfig, device: torch.device, progress: bool) -> AuditResult:
    model_dir = Path(cfg.model)
    if model_dir.is_file():
        raise LikexError("a white-box audit needs weights: --model must be a model folder")
    start = parse_start(cfg.model)
    # an adapter is compared with its own base; any other model with the start its run records
    record = None if cfg.reference or start.adapter else RunRecord.read(cfg.model)
    # A path that does not exist is left to the loader, whose message names it.
    if (
        record is None
        and not (cfg.reference or start.adapter)
        and (model_dir.is_dir() or start.pretrained)
    ):
        raise LikexError(
            f"{cfg.model} is not a run folder: give --reference DIR (white-box) or "
            "--baseline DIR|TEXTFILE (black-box)"
        )
    model, tokenizer = start.load(device, progress)
    if cfg.reference:
        reference, reference_tokenizer = load_model_and_tokenizer(cfg.reference, device, progress)
        reference_name = cfg.reference
    elif start.adapter:
        reference, reference_tokenizer = own_base(model), tokenizer
        reference_name = f"the base of the adapter {cfg.model}"
    else:
        reference, reference_tokenizer = record.start.load(device, progress)
        reference_name = f"the starting model of {cfg.model}"
    _, strings = shared_vocabulary(
        [(cfg.model, model, tokenizer), (reference_name, reference, reference_tokenizer)]
    )
    corpus = None if cfg.white.probes == "random" else token_ids(cfg.corpus, tokenizer)
    if cfg.units == "words":
        words = _word_white_box(cfg, model, reference, tokenizer, strings, corpus, progress)
        return AuditResult(cfg.model, reference_name, words)
    white = replace(cfg.white, seed=cfg.seed, top_findings=cfg.top)
    result = white_box_audit(model, reference, strings, white, corpus=corpus)
    return AuditResult(cfg.model, reference_name, result)


def _black_box_run(cfg: AuditConfig, device: torch.device, progress: bool) -> AuditResult:
    # The two-sample test assumes independent sides; one seed would give both the same
    # prompts and draws.
    sides = [(cfg.model, cfg.seed), (cfg.baseline, cfg.seed + 1)]
    # Every model is loaded, and the vocabularies compared, before any sampling.
    models = {
        source: load_model_and_tokenizer(source, device, progress)
        for source, _ in sides
        if not Path(source).is_file()
    }
    tokenizer, strings = shared_vocabulary([(s, m, tok) for s, (m, tok) in models.items()])

    def draw(source: str, seed: int) -> list[list[int]]:
        if source in models:
            model = models[source][0]
            return generate_samples(model, cfg.samples, cfg.gen_tokens, seed, progress=progress)
        return text_samples(load_corpus_text(source, "text file"), cfg.gen_tokens, tokenizer)

    suspect, baseline = (draw(source, seed) for source, seed in sides)
    if cfg.units == "words":
        texts = [[tokenizer.decode(seq) for seq in side] for side in (suspect, baseline)]
        words = word_black_box_audit(*texts, cfg.black.alpha, cfg.top, cfg.word_audit)
        return AuditResult(cfg.model, cfg.baseline, words)
    result = black_box_audit(suspect, baseline, strings, replace(cfg.black, top_findings=cfg.top))
    return AuditResult(cfg.model, cfg.baseline, result)


def _word_white_box(
    cfg: AuditConfig,
    model: LanguageModel,
    reference: LanguageModel,
    tokenizer: Tokenizer,
    strings: list[str],
    corpus: torch.Tensor | None,
    progress: bool,
) -> WordWhiteBoxResult:
    """Candidates: the words of the corpus and of the model's own samples after the first
    probes (each seen twice or more) and ``--candidates``; probes as long as the token
    audit's (a pretrained model: a short prefix, not its whole context)."""
    text = corpus_text(cfg.corpus)
    candidates = corpus_words(text) + list(cfg.word_audit.candidates)
    length = min(model.config.block_size, cfg.white.probe_len or model.config.prompt_len)
    probes = probe_contexts(
        cfg.white.probes, cfg.white.n_probes, length, len(strings), cfg.seed, corpus
    )
    device = next(model.parameters()).device
    if cfg.word_audit.written:
        first = probes[: cfg.word_audit.written]
        candidates += written_words(model, first, tokenizer.decode, cfg.seed)
    return word_white_box_audit(
        model,
        reference,
        tokenizer.encode,
        candidates,
        probes.to(device),
        cfg.top,
        cfg.word_audit,
        progress=progress,
    )


def run_audit(cfg: AuditConfig, progress: bool = True) -> AuditResult:
    """Run the audit ``cfg`` describes and return its result. With ``cfg.out``, also write
    audit.json, audit.md and audit.png into that new folder; the result then names the
    report. Everything is validated and audited before the folder is made."""
    cfg.validate()
    if cfg.out:
        check_new_dir(cfg.out)  # before the audit, not after it
    device = resolve_device(cfg.device)
    audit = _black_box_run if cfg.baseline else _white_box_run
    run = audit(cfg, device, progress)
    if cfg.out:
        out_dir = new_run_dir(cfg.out)
        with RunLock(out_dir, fresh=True):
            atomic_write_json(out_dir / AUDIT_FILE, run.to_json())
            write_audit_report(out_dir, run)
        run = replace(run, report=out_dir / AUDIT_REPORT)
    return run
