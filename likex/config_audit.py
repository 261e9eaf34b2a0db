"""The audit commands' configs: likex audit and likex audit-bench (likex.config holds the
others). Fields are declared with ``likex.options.option``, as there."""

from __future__ import annotations

from dataclasses import dataclass

from likex.audit.bench import BenchConfig
from likex.audit.black_box import BlackBoxConfig
from likex.audit.white_box import WhiteBoxConfig
from likex.audit.words import WordAuditConfig
from likex.corpora import corpus_arg
from likex.data import BUILTIN_CORPUS, check_seed
from likex.device import device_option
from likex.errors import ConfigError
from likex.models.start import model_arg, model_or_text_arg
from likex.options import option, out_option
from likex.stats.significance import MIN_SAMPLES

AUDIT_UNITS = ("tokens", "words")


def _white_box(settings: object) -> str | None:
    if settings.baseline:
        return "does not apply to a black-box audit ({baseline}): it is for white-box audits"
    return None


def _black_box(settings: object) -> str | None:
    if not settings.baseline:
        return "applies only to a black-box audit (give {baseline} DIR|TEXTFILE)"
    return None


@dataclass(frozen=True)
class AuditConfig:
    """likex audit: find and explain an injected token bias.

    White-box (no baseline): the predicate over token strings whose probability mass the
    model moved relative to its reference (default: the starting model its run folder
    records), by share of the KL and held-out logit-mass shift. Black-box (a baseline): test
    every predicate's token share in samples of both against each other (Welch's t over
    samples), with Holm's correction. Tokens are
    those of the audited models' tokenizer (all must share one); text files are tokenized
    with it, or with GPT-2's when both sides are text."""

    model: str = option(
        help="the suspect: a model or run folder or hf:NAME_OR_PATH (black-box: or a text "
        "file of its generations)",
        metavar="DIR|hf:NAME|TEXTFILE",
        parse=model_or_text_arg,
    )
    reference: str | None = option(
        None, "white-box: the model to compare with", metavar="DIR|hf:NAME", parse=model_arg
    )
    baseline: str | None = option(
        None,
        "black-box: a model to sample, or plain text",
        metavar="DIR|hf:NAME|TEXTFILE",
        parse=model_or_text_arg,
    )
    white: WhiteBoxConfig = option(factory=WhiteBoxConfig, help="white-box", applies=_white_box)
    corpus: str = option(
        BUILTIN_CORPUS,
        "white-box: text for corpus probes: builtin, builtin:code, builtin:legal, builtin:docs "
        "or FILE",
        parse=corpus_arg,
        applies=_white_box,
    )
    black: BlackBoxConfig = option(factory=BlackBoxConfig, help="black-box", applies=_black_box)
    units: str = option(
        "tokens",
        "what to audit: tokens (explained by a predicate) or words and phrases",
        choices=AUDIT_UNITS,
    )
    word_audit: WordAuditConfig = option(
        factory=WordAuditConfig,
        help="words",
        applies=lambda o: (o.units != "words" and "applies only to {units} words") or _white_box(o),
    )
    samples: int = option(64, "black-box: samples to draw from each model", applies=_black_box)
    gen_tokens: int = option(200, "black-box: tokens per sample", applies=_black_box)
    top: int = option(5, "findings to report")
    seed: int = option(0, "seeds the probes and the samples (the baseline's: seed + 1)")
    out: str | None = out_option("also write audit.json, audit.md and audit.png here")
    device: str = device_option()

    def validate(self) -> None:
        if self.reference and self.baseline:
            raise ConfigError(
                "baseline", "(black-box) excludes {reference} (white-box): give one, not both"
            )
        if self.top <= 0:
            raise ConfigError("top", f"must be positive, got {self.top}")
        check_seed(self.seed)
        if self.units not in AUDIT_UNITS:
            raise ConfigError("units", f"{self.units!r} is unknown; choose from tokens, words")
        # both kinds' options are checked, so a bad value is refused whichever audit runs
        self.white.validate()
        self.word_audit.validate()
        self.black.validate()
        if not self.baseline:
            return
        if self.samples < MIN_SAMPLES:
            raise ConfigError("samples", f"must be at least {MIN_SAMPLES} (more for many tests)")
        if self.gen_tokens <= 0:
            raise ConfigError("gen_tokens", "must be positive")


@dataclass(frozen=True)
class BenchCommand:
    """likex audit-bench: detection power. Plants predicates drawn from a pool at several
    strengths (plus unbiased controls), audits every model white-box and black-box, and
    tabulates how often the planted predicate is the top finding."""

    bench: BenchConfig = option(factory=BenchConfig, help="the benchmark")
    keep_models: bool = option(False, "keep every trained model")
    out: str | None = out_option()
    device: str = device_option()
