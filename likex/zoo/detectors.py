"""likex's own audits as zoo detectors: white-box and black-box, on tokens and on words.

Each turns its audit's result into a verdict (likex.zoo.verdicts), with a rule for telling a
planted preference from a shift toward a text domain:

* white-box (tokens): the top predicate's held-out shift passes the audit's verdict; a planted
  preference when a tilt on it explains at least ``min_share`` of the KL, else a domain shift
  (the change is spread over more than one set). Score: the shift's lower bound, scaled down
  where the share is below ``min_share``.
* white-box (words): the words whose whole-word log-probability rose at least ``min_shift``
  and whose first token stands out of the field (robust z at least ``min_z``); a few (at most
  ``max_named``) are a planted list, more a domain's vocabulary. Score: the top word's change.
* black-box (tokens): a significantly boosted predicate (Holm); a planted preference when,
  with that predicate's tokens taken out of both sides' samples, nothing else differs (a
  tilt on one set leaves the rest of the distribution as it was), else a domain shift.
  Score: the largest Welch t.
* black-box (words): the boosted words the audit names; few are planted, many a domain.
  Score: the largest Welch t.

The two sample-based ones also estimate their power at ``power_sizes`` samples a side
(likex.zoo.power).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from likex.audit.black_box import BlackBoxConfig, black_box_audit, predicate_hits
from likex.audit.white_box import WhiteBoxConfig, white_box_audit
from likex.audit.words import (
    WordAuditConfig,
    term_hits,
    text_units,
    word_black_box_audit,
    word_white_box_audit,
)
from likex.errors import LikexError
from likex.zoo.power import subsample_power, welch_holm_detects
from likex.zoo.suspects import AuditBase, Suspect
from likex.zoo.verdicts import Named, Verdict, ZooAuditConfig


def _words_kind(named: list[str], max_named: int) -> str:
    if not named:
        return "none"
    return "planted" if len(named) <= max_named else "domain"


@dataclass(frozen=True)
class WhiteBox:
    cfg: ZooAuditConfig
    name: str = "white-box"
    unit: str = "tokens"

    def run(self, organism: Suspect, base: AuditBase) -> Verdict:
        white = WhiteBoxConfig(probes="both", n_probes=self.cfg.n_probes, seed=self.cfg.seed)
        result = white_box_audit(
            organism.model(),
            base.model,
            base.strings,
            white,
            index=base.index,
            probes=organism.probes(),
        )
        top = result.top
        spread = top.share < self.cfg.min_share
        kind = "none" if not result.detected else "domain" if spread else "planted"
        score = top.shift_lower * min(1.0, top.share / self.cfg.min_share)
        note = (
            f"{top.predicate.describe()}: KL share {top.share:.0%}, held-out shift "
            f"{top.shift:+.2f} (lower {top.shift_lower:+.2f}, threshold {result.threshold:.2f})"
        )
        named = Named(top.predicate)
        return Verdict(self.name, organism.name, kind, named, score, note)


@dataclass(frozen=True)
class WhiteBoxWords:
    cfg: ZooAuditConfig
    name: str = "white-box-words"
    unit: str = "words"

    def run(self, organism: Suspect, base: AuditBase) -> Verdict:
        cfg = self.cfg
        words_cfg = WordAuditConfig(rescore=cfg.rescore, rescore_probes=cfg.rescore_probes)
        result = word_white_box_audit(
            organism.model(),
            base.model,
            base.tokenizer.encode,
            base.candidate_words,
            base.probes,
            cfg.rescore,
            words_cfg,
            screen=organism.probes().log_ratio,
        )
        named = [
            f.word
            for f in result.findings
            if f.log_ratio >= cfg.min_shift and f.first_token_z >= cfg.min_z
        ]
        top = result.findings[0]
        note = (
            f"{len(named)} words rose by at least {cfg.min_shift:.2f} nats and stand out; top "
            f"{top.word!r} {top.log_ratio:+.2f} (first token z {top.first_token_z:.1f})"
        )
        kind = _words_kind(named, cfg.max_named)
        words = Named(words=tuple(named))
        return Verdict(self.name, organism.name, kind, words, top.log_ratio, note)


def _without(samples: list[list[int]], mask: np.ndarray) -> list[list[int]]:
    return [[t for t in s if not mask[t]] for s in samples]


@dataclass(frozen=True)
class BlackBox:
    cfg: ZooAuditConfig
    name: str = "black-box"
    unit: str = "tokens"

    def _config(self) -> BlackBoxConfig:
        return BlackBoxConfig(alpha=self.cfg.alpha, top_findings=10)

    def _residual(
        self, mine: list[list[int]], theirs: list[list[int]], base: AuditBase, mask
    ) -> int:
        """Significant predicates left once the top one's tokens are taken out of both sides."""
        try:
            rest = black_box_audit(
                _without(mine, mask),
                _without(theirs, mask),
                base.strings,
                self._config(),
                base.index,
            )
        except LikexError:  # too little left to test: nothing else differs that it could see
            return 0
        return rest.n_significant

    def run(self, organism: Suspect, base: AuditBase) -> Verdict:
        mine, theirs = organism.samples(), base.samples
        result = black_box_audit(mine, theirs, base.strings, self._config(), base.index)
        top = result.top
        best_t = max((f.t for f in result.findings), default=0.0)
        if top is None:
            kind = "domain" if result.detected else "none"  # only decreases: a shift, no set
            note = f"{result.n_significant} of {result.n_tests} predicates differ, none rose"
        else:
            mask = base.index.mask(top.predicate).numpy()
            residual = self._residual(mine, theirs, base, mask)
            kind = "domain" if residual else "planted"
            note = (
                f"{top.predicate.describe()}: {top.rate_suspect:.4f} vs {top.rate_baseline:.4f} "
                f"(t {top.t:+.1f}); {residual} predicates differ without its tokens"
            )
        named = Named(top.predicate if top is not None else None)
        power = self._power(mine, theirs, base)
        return Verdict(self.name, organism.name, kind, named, best_t, note, power=power)

    def _power(self, mine: list[list[int]], theirs: list[list[int]], base: AuditBase) -> dict:
        cfg = self.cfg
        h = predicate_hits(mine, theirs, base.index, self._config().min_hits)
        detects = welch_holm_detects(h.hits_a, h.hits_b, h.len_a, h.len_b, cfg.alpha)
        sizes = cfg.power_sizes
        return subsample_power(detects, len(mine), len(theirs), sizes, cfg.power_draws, cfg.seed)


@dataclass(frozen=True)
class BlackBoxWords:
    cfg: ZooAuditConfig
    name: str = "black-box-words"
    unit: str = "words"

    def run(self, organism: Suspect, base: AuditBase) -> Verdict:
        cfg = self.cfg
        # samples without words are left out on both sides, as the word audit leaves them
        mine = [t for t in organism.texts() if t.strip()]
        theirs = [t for t in base.texts if t.strip()]
        words_cfg = WordAuditConfig()
        result = word_black_box_audit(mine, theirs, cfg.alpha, 10, words_cfg)
        named = result.named
        best_t = max((f.t for f in result.findings), default=0.0)
        note = f"{len(named)} words and phrases boosted (Holm, alpha {cfg.alpha:g})"
        if named:
            note += f"; top {named[0]!r}"
        counted = term_hits(
            [text_units(t) for t in mine], [text_units(t) for t in theirs], words_cfg.min_hits
        )
        detects = welch_holm_detects(
            counted.hits_a, counted.hits_b, counted.len_a, counted.len_b, cfg.alpha
        )
        power = subsample_power(
            detects, len(mine), len(theirs), cfg.power_sizes, cfg.power_draws, cfg.seed
        )
        kind = _words_kind(named, cfg.max_named)
        words = Named(words=tuple(named))
        return Verdict(self.name, organism.name, kind, words, best_t, note, power=power)
