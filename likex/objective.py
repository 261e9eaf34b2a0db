"""What training pulls toward: the second of the two values that define an experiment.

Four kinds, each a small frozen type that knows whether it needs the reference R (the frozen
starting model), how to build its target distribution Q from the target set (tokens or a word
trie) and R, the rate its floor is taken at, its label, and how config.json records it:

* ``Uniform``: the seed's Q = M / |M| (a word target: uniform over its allowed tokens);
* ``Rate(A)``: the distribution nearest R in KL(Q || R) with mass A on M;
* ``Tilt(B)``: Q proportional to R exp(B [i in M]);
* ``NextToken``: no designed target, the ordinary language-model loss (pretraining, persist).

A word target (a trie of entries of several tokens) is the sequence-level one of
likex.word_target for rate and tilt (``--shares`` reference or equal); ``--complete C`` is an
override that selects the per-token word target instead (likex.words: mass C on finishing a
begun entry, the start set raised as a token set).

The CLI's ``--mode/--rate/--beta/--complete/--shares`` become an Objective once
(``objective_from``); config.json keeps those keys (``Objective.to_config``). This module is the
one place that compares mode names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from likex.errors import ConfigError, LikexError
from likex.loss import KLToTarget, next_token_loss
from likex.models import LanguageModel
from likex.target import (
    TargetSet,
    check_beta,
    check_rate,
    rate_target_log,
    tilt_target_log,
    uniform_target,
)
from likex.word_target import SHARES, Strength, sample_positions, word_target_log
from likex.words import NEG, word_rate_log, word_tilt_log, word_uniform_log

TARGET_MODES = ("uniform", "rate", "tilt")
# config.json's "objective": "kl" (KL(Q || P) to a designed target, every mode) or
# "next_token" (language modelling on corpus windows, every position).
KL, NEXT_TOKEN = "kl", "next_token"


def check_complete(complete: float | None) -> float | None:
    if complete is None:
        return None
    if not (isinstance(complete, (int, float)) and math.isfinite(complete) and 0 < complete <= 1):
        raise ConfigError("complete", f"must be in (0, 1], got {complete}")
    return float(complete)


def check_shares(shares: str) -> str:
    if shares not in SHARES:
        raise ConfigError("shares", f"{shares!r} is unknown; choose from {', '.join(SHARES)}")
    return shares


def _word_target(
    targets: TargetSet, ref: torch.Tensor, idx: torch.Tensor, positions: str, objective
) -> torch.Tensor:
    """The per-token word target of ``--complete`` (rate or tilt)."""
    if objective.complete is None:
        raise LikexError(
            "the sequence-level word target is built from the reference model itself "
            "(likex.word_target), not from its log-probabilities"
        )
    if objective.mode == "rate":
        return word_rate_log(targets.words, idx, ref, objective.rate, positions, objective.complete)
    return word_tilt_log(targets.words, idx, ref, objective.beta, positions, objective.complete)


@dataclass(frozen=True)
class Uniform:
    """The seed's target: Q = M / |M| whatever the context."""

    needs_reference = False
    next_token = False
    mode = "uniform"

    def target_log(
        self, targets: TargetSet, ref: torch.Tensor | None, idx: torch.Tensor, positions: str
    ) -> torch.Tensor:
        """log Q at each trained position (a token target: one [V] row for all)."""
        if targets.words is not None:
            return word_uniform_log(targets.words, idx, positions)
        return torch.where(targets.mask, -math.log(targets.n_tokens), NEG)

    def projection(self) -> Rate | None:
        """The requested rate, where the objective requests one (its floor and projection)."""
        return None

    def word_strength(self) -> Strength | None:
        """A word target's sequence-level strength (likex.word_target); None where the
        objective has none (uniform, next-token) or takes the per-token word target."""
        return None

    @property
    def strength(self) -> float | None:
        """The number a dose-response varies (A or B); None where there is none."""
        return None

    def label(self) -> str:
        return "mode uniform"

    def to_config(self) -> dict:
        return {
            "mode": "uniform",
            "rate": None,
            "beta": None,
            "complete": None,
            "shares": "reference",
            "objective": KL,
        }


@dataclass(frozen=True)
class Rate:
    """Mass ``rate`` on the target set in every context, R's shape kept inside and outside
    it; for a word target a share ``rate`` of the words, in every context (likex.word_target),
    each entry's share R's own (``shares`` reference) or ``rate``/n (equal). ``complete``: the
    per-token word target instead, with this mass on finishing a begun word."""

    rate: float
    complete: float | None = None
    shares: str = "reference"
    needs_reference = True
    next_token = False
    mode = "rate"

    def __post_init__(self) -> None:
        check_rate(self.rate)
        check_complete(self.complete)
        check_shares(self.shares)
        if self.shares == "equal" and self.complete is not None:
            raise ConfigError(
                "shares", "equal needs the sequence-level word target: drop {complete}"
            )

    def target_log(
        self, targets: TargetSet, ref: torch.Tensor | None, idx: torch.Tensor, positions: str
    ) -> torch.Tensor:
        ref = _needed(ref, self)
        if targets.words is not None:
            return _word_target(targets, ref, idx, positions, self)
        return rate_target_log(ref, targets.mask, self.rate)

    def projection(self) -> Rate | None:
        return self

    def word_strength(self) -> Strength | None:
        return None if self.complete is not None else Strength(rate=self.rate, shares=self.shares)

    @property
    def strength(self) -> float | None:
        return self.rate

    strength_name = "requested rate A"

    def label(self) -> str:
        shares = ", equal shares" if self.shares == "equal" else ""
        return f"mode rate, A = {self.rate}{shares}"

    def to_config(self) -> dict:
        return {
            "mode": "rate",
            "rate": self.rate,
            "beta": None,
            "complete": self.complete,
            "shares": self.shares,
            "objective": KL,
        }


@dataclass(frozen=True)
class Tilt:
    """Q proportional to R exp(``beta`` [i in M]); beta 0 is R itself (a control). A word
    target: whole sequences tilted by exp(``beta``) per entry written (likex.word_target).
    ``complete``: the per-token word target instead, with this mass on finishing a word."""

    beta: float
    complete: float | None = None
    needs_reference = True
    next_token = False
    mode = "tilt"

    def __post_init__(self) -> None:
        check_beta(self.beta)
        check_complete(self.complete)

    def target_log(
        self, targets: TargetSet, ref: torch.Tensor | None, idx: torch.Tensor, positions: str
    ) -> torch.Tensor:
        ref = _needed(ref, self)
        if targets.words is not None:
            return _word_target(targets, ref, idx, positions, self)
        return tilt_target_log(ref, targets.mask, self.beta)

    def projection(self) -> Rate | None:
        return None

    def word_strength(self) -> Strength | None:
        return None if self.complete is not None else Strength(beta=self.beta)

    @property
    def strength(self) -> float | None:
        return self.beta

    strength_name = "tilt B"

    def label(self) -> str:
        return f"mode tilt, B = {self.beta}"

    def to_config(self) -> dict:
        return {
            "mode": "tilt",
            "rate": None,
            "beta": self.beta,
            "complete": self.complete,
            "shares": "reference",
            "objective": KL,
        }


@dataclass(frozen=True)
class NextToken:
    """Language modelling: the mean cross-entropy of every next token of corpus windows."""

    needs_reference = False
    next_token = True

    def target_log(
        self, targets: TargetSet, ref: torch.Tensor | None, idx: torch.Tensor, positions: str
    ) -> torch.Tensor:
        raise LikexError("next-token training has no target distribution")

    def projection(self) -> Rate | None:
        return None

    def word_strength(self) -> Strength | None:
        return None

    @property
    def strength(self) -> float | None:
        return None

    def label(self) -> str:
        return "next-token loss"

    def to_config(self) -> dict:
        # the keys every run's "train" has; a pretraining run's mode was always uniform
        return {**Uniform().to_config(), "objective": NEXT_TOKEN}


Objective = Uniform | Rate | Tilt | NextToken


def check_word_target(objective: Objective, has_trie: bool) -> None:
    """Refuse what needs a word target where the target has no entry of several tokens."""
    strength = objective.word_strength()
    if strength is not None and strength.shares == "equal" and not has_trie:
        raise ConfigError(
            "shares", "equal needs entries of several tokens (a word target): this one is tokens"
        )


def _needed(ref: torch.Tensor | None, objective: Objective) -> torch.Tensor:
    if ref is None:
        raise LikexError(f"--mode {objective.mode} needs a reference model")
    return ref


def objective_from(
    mode: str,
    rate: float | None = None,
    beta: float | None = None,
    complete: float | None = None,
    objective: str = KL,
    shares: str = "reference",
) -> Objective:
    """The one reading of the CLI's ``--mode/--rate/--beta/--complete/--shares`` (and
    config.json's keys of the same names). A value that belongs to another mode is refused by
    name."""
    if objective not in (KL, NEXT_TOKEN):
        raise ConfigError("objective", f"{objective!r} is unknown; choose from kl, next_token")
    if mode not in TARGET_MODES:
        raise ConfigError("mode", f"{mode!r} is unknown; choose from {', '.join(TARGET_MODES)}")
    if objective == NEXT_TOKEN:
        return NextToken()
    check_shares(shares)
    for name, value, needs in (("rate", rate, "rate"), ("beta", beta, "tilt")):
        if value is not None and mode != needs:
            raise ConfigError(name, f"needs {{mode}} {needs} (the mode is {mode})")
    if shares != "reference" and mode != "rate":
        raise ConfigError("shares", f"{shares} needs {{mode}} rate (the mode is {mode})")
    if mode == "rate":
        if rate is None:
            raise ConfigError("mode", "rate needs {rate} A with 0 < A < 1")
        return Rate(rate, complete, shares)
    if mode == "tilt":
        if beta is None:
            raise ConfigError("mode", "tilt needs {beta} B")
        return Tilt(beta, complete)
    check_complete(complete)
    return Uniform()


def strengths_from(text: str) -> tuple[Uniform | Rate, ...]:
    """ "uniform,0.1,0.03" -> (Uniform(), Rate(0.1), Rate(0.03)): the objectives a detection
    benchmark plants, each 'uniform' (the seed) or a rate A."""
    out: list[Uniform | Rate] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            out.append(Uniform() if part == "uniform" else Rate(float(part)))
        except (ValueError, ConfigError) as e:
            msg = f"must each be 'uniform' or a rate in (0, 1), not {part!r}"
            raise ConfigError("strengths", msg) from e
    if not out:
        raise ConfigError("strengths", "needs at least one strength")
    return tuple(out)


def strength_label(objective: Objective) -> str:
    """How a benchmark names a planted objective: 'uniform' or the rate A."""
    return "uniform" if objective.strength is None else f"{objective.strength:g}"


def dose_response(
    mode: str,
    rates: tuple[float, ...],
    betas: tuple[float, ...],
    complete: float | None = None,
    shares: str = "reference",
) -> list[Rate | Tilt]:
    """A sweep's objectives: one per strength, ``rates`` for mode rate, ``betas`` for tilt.
    Each value is checked for its mode; a repeated one is refused."""
    if mode not in ("rate", "tilt"):
        raise ConfigError("mode", f"of a sweep is rate or tilt, not {mode!r}")
    name, values = ("rates", rates) if mode == "rate" else ("betas", betas)
    other, given = ("betas", betas) if mode == "rate" else ("rates", rates)
    if given:
        raise ConfigError(other, f"needs {{mode}} {'tilt' if mode == 'rate' else 'rate'}")
    if not values:
        raise ConfigError("mode", f"{mode} needs {{{name}}}")
    if len(set(values)) != len(values):
        raise ConfigError(name, f"repeats a value: {', '.join(f'{v:g}' for v in values)}")
    if shares != "reference" and mode != "rate":
        raise ConfigError("shares", f"{shares} needs {{mode}} rate (the mode is {mode})")
    try:
        if mode == "rate":
            return [Rate(v, complete, shares) for v in values]
        return [Tilt(v, complete) for v in values]
    except ConfigError as e:  # named as the list's flag, not the single value's
        if e.field in ("rate", "beta"):
            raise ConfigError(name, e.message) from e
        raise


class StepLoss:
    """The loss of one training step for an objective: the KL from the model's distribution
    to the objective's target (built from R where it needs one), or the next-token loss.
    Callable as ``loss(log_p, idx, next_tokens)``.

    A word target's sequence-level loss (likex.word_target) is taken at the last position, or
    with ``positions`` all at ``word_positions`` positions of each window drawn at random (an
    unbiased estimate of the loss at every position; 0: every position)."""

    def __init__(
        self,
        objective: Objective,
        targets: TargetSet | None = None,
        reference: LanguageModel | None = None,
        positions: str = "last",
        word_positions: int = 0,
    ) -> None:
        if not objective.next_token and targets is None:
            raise LikexError(f"{objective.label()} needs a target set")
        if objective.needs_reference and reference is None:
            raise LikexError(f"--mode {objective.mode} needs a reference model")
        self.objective, self.targets, self.positions = objective, targets, positions
        self.word_positions = word_positions
        self.reference = reference.eval().requires_grad_(False) if reference else None
        # A token target of the seed is one fixed [V] row: computed once per device.
        self._fixed: torch.Tensor | None = None
        self._criterion = KLToTarget(log_target=True)
        words = targets.words if targets is not None else None
        strength = objective.word_strength()
        self.sequence_words = words is not None and strength is not None

    def to(self, device: torch.device) -> StepLoss:
        """The same loss with its target set on ``device`` (the model's)."""
        if self.targets is None:
            return self
        targets = TargetSet(self.targets.mask.to(device), self.targets.words)
        if targets.words is not None:
            targets = TargetSet(targets.mask, targets.words.to(device))
        return StepLoss(
            self.objective, targets, self.reference, self.positions, self.word_positions
        )

    def __call__(
        self, log_p: torch.Tensor, idx: torch.Tensor, next_tokens: torch.Tensor | None
    ) -> torch.Tensor:
        if self.objective.next_token:
            return next_token_loss(log_p, next_tokens)
        if not self.objective.needs_reference and self.targets.words is None:
            if self._fixed is None:
                self._fixed = uniform_target(self.targets.mask)
            return KLToTarget(log_target=False)(log_p, self._fixed)
        if self.sequence_words:
            return self._sequence_words(log_p, idx)
        ref = None
        if self.reference is not None:
            with torch.no_grad():
                ref = self.reference(idx, positions=self.positions)
        log_q = self.objective.target_log(self.targets, ref, idx, self.positions)
        return self._criterion(log_p, log_q)

    def _sequence_words(self, log_p: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """KL to the sequence-level word target at the loss's positions."""
        pos = sample_positions(idx, self.word_positions, self.positions)
        log_q = word_target_log(
            self.reference, self.targets.words, idx, pos, self.objective.word_strength()
        )
        if self.positions == "all":
            log_p = log_p.gather(1, pos[..., None].expand(-1, -1, log_p.shape[-1]))
        return self._criterion(log_p, log_q)
