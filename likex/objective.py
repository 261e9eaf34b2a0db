"""What training pulls toward: the second of the two values that define an experiment.

Four kinds, each a small frozen type that knows whether it needs the reference R (the frozen
starting model), how to build its target distribution Q from the target set (tokens or a word
trie) and R, the rate its floor is taken at, its label, and how config.json records it:

* ``Uniform``: the seed's Q = M / |M| (a word target: uniform over its allowed tokens);
* ``Rate(A)``: the distribution nearest R in KL(Q || R) with mass A on M;
* ``Tilt(B)``: Q proportional to R exp(B [i in M]);
* ``NextToken``: no designed target, the ordinary language-model loss (pretraining, persist).

The CLI's ``--mode/--rate/--beta/--complete`` become an Objective once (``objective_from``);
config.json keeps those keys (``Objective.to_config``). This module is the one place that
compares mode names.
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
from likex.words import NEG, word_rate_log, word_tilt_log, word_uniform_log

TARGET_MODES = ("uniform", "rate", "tilt")
# config.json's "objective": "kl" (KL(Q || P) to a designed target, every mode) or
# "next_token" (language modelling on corpus windows, every position).
KL, NEXT_TOKEN = "kl", "next_token"


def check_complete(complete: float) -> float:
    if not (isinstance(complete, (int, float)) and math.isfinite(complete) and 0 < complete <= 1):
        raise ConfigError("complete", f"must be in (0, 1], got {complete}")
    return float(complete)


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

    @property
    def strength(self) -> float | None:
        """The number a dose-response varies (A or B); None where there is none."""
        return None

    def label(self) -> str:
        return "mode uniform"

    def to_config(self) -> dict:
        return {"mode": "uniform", "rate": None, "beta": None, "complete": 1.0, "objective": KL}


@dataclass(frozen=True)
class Rate:
    """Mass ``rate`` on the target set in every context, R's shape kept inside and outside
    it. ``complete``: a word target's mass on finishing a begun word."""

    rate: float
    complete: float = 1.0
    needs_reference = True
    next_token = False
    mode = "rate"

    def __post_init__(self) -> None:
        check_rate(self.rate)
        check_complete(self.complete)

    def target_log(
        self, targets: TargetSet, ref: torch.Tensor | None, idx: torch.Tensor, positions: str
    ) -> torch.Tensor:
        ref = _needed(ref, self)
        if targets.words is not None:
            return word_rate_log(targets.words, idx, ref, self.rate, positions, self.complete)
        return rate_target_log(ref, targets.mask, self.rate)

    def projection(self) -> Rate | None:
        return self

    @property
    def strength(self) -> float | None:
        return self.rate

    strength_name = "requested rate A"

    def label(self) -> str:
        return f"mode rate, A = {self.rate}"

    def to_config(self) -> dict:
        return {
            "mode": "rate",
            "rate": self.rate,
            "beta": None,
            "complete": self.complete,
            "objective": KL,
        }


@dataclass(frozen=True)
class Tilt:
    """Q proportional to R exp(``beta`` [i in M]); beta 0 is R itself (a control).
    ``complete``: a word target's mass on finishing a begun word."""

    beta: float
    complete: float = 1.0
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
            return word_tilt_log(targets.words, idx, ref, self.beta, positions, self.complete)
        return tilt_target_log(ref, targets.mask, self.beta)

    def projection(self) -> Rate | None:
        return None

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

    @property
    def strength(self) -> float | None:
        return None

    def label(self) -> str:
        return "next-token loss"

    def to_config(self) -> dict:
        # the keys every run's "train" has; a pretraining run's mode was always uniform
        return {
            "mode": "uniform",
            "rate": None,
            "beta": None,
            "complete": 1.0,
            "objective": NEXT_TOKEN,
        }


Objective = Uniform | Rate | Tilt | NextToken


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
) -> Objective:
    """The one reading of the CLI's ``--mode/--rate/--beta/--complete`` (and config.json's
    keys of the same names). A value that belongs to another mode is refused by name."""
    if objective not in (KL, NEXT_TOKEN):
        raise ConfigError("objective", f"{objective!r} is unknown; choose from kl, next_token")
    if mode not in TARGET_MODES:
        raise ConfigError("mode", f"{mode!r} is unknown; choose from {', '.join(TARGET_MODES)}")
    if objective == NEXT_TOKEN:
        return NextToken()
    for name, value, needs in (("rate", rate, "rate"), ("beta", beta, "tilt")):
        if value is not None and mode != needs:
            raise ConfigError(name, f"needs {{mode}} {needs} (the mode is {mode})")
    word_mass = 1.0 if complete is None else complete
    if mode == "rate":
        if rate is None:
            raise ConfigError("mode", "rate needs {rate} A with 0 < A < 1")
        return Rate(rate, word_mass)
    if mode == "tilt":
        if beta is None:
            raise ConfigError("mode", "tilt needs {beta} B")
        return Tilt(beta, word_mass)
    check_complete(word_mass)
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
    mode: str, rates: tuple[float, ...], betas: tuple[float, ...], complete: float = 1.0
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
    make = (lambda v: Rate(v, complete)) if mode == "rate" else (lambda v: Tilt(v, complete))
    try:
        return [make(v) for v in values]
    except ConfigError as e:  # named as the list's flag, not the single value's
        raise ConfigError(name, e.message) from e


class StepLoss:
    """The loss of one training step for an objective: the KL from the model's distribution
    to the objective's target (built from R where it needs one), or the next-token loss.
    Callable as ``loss(log_p, idx, next_tokens)``."""

    def __init__(
        self,
        objective: Objective,
        targets: TargetSet | None = None,
        reference: LanguageModel | None = None,
        positions: str = "last",
    ) -> None:
        if not objective.next_token and targets is None:
            raise LikexError(f"{objective.label()} needs a target set")
        if objective.needs_reference and reference is None:
            raise LikexError(f"--mode {objective.mode} needs a reference model")
        self.objective, self.targets, self.positions = objective, targets, positions
        self.reference = reference.eval().requires_grad_(False) if reference else None
        # A token target of the seed is one fixed [V] row: computed once per device.
        self._fixed: torch.Tensor | None = None
        self._criterion = KLToTarget(log_target=True)

    def to(self, device: torch.device) -> StepLoss:
        """The same loss with its target set on ``device`` (the model's)."""
        if self.targets is None:
            return self
        targets = TargetSet(self.targets.mask.to(device), self.targets.words)
        if targets.words is not None:
            targets = TargetSet(targets.mask, targets.words.to(device))
        return StepLoss(self.objective, targets, self.reference, self.positions)

    def __call__(
        self, log_p: torch.Tensor, idx: torch.Tensor, next_tokens: torch.Tensor | None
    ) -> torch.Tensor:
        if self.objective.next_token:
            return next_token_loss(log_p, next_tokens)
        if not self.objective.needs_reference and self.targets.words is None:
            if self._fixed is None:
                self._fixed = uniform_target(self.targets.mask)
            return KLToTarget(log_target=False)(log_p, self._fixed)
        ref = None
        if self.reference is not None:
            with torch.no_grad():
                ref = self.reference(idx, positions=self.positions)
        log_q = self.objective.target_log(self.targets, ref, idx, self.positions)
        return self._criterion(log_p, log_q)
