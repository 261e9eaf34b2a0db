"""What a training command will cost on this machine, said before it starts.

An estimate is what the command will do (``Work``: training steps, rate measurements, scorings
of held-out text) times what each costs here (``Speed``), timed on the very model, device and
settings of the run: one training step's batch, loss and gradients (not the optimizer's
update), a few sampled tokens at the measurement's batch and prompt, one scored window. The
timings cost about one step and a handful of tokens, and change nothing: the model's weights
and every random stream are as they were. It is an estimate: a busy machine, the sampling that
stops early once an interval is narrow, and the work around the steps make the real time
differ; a measurement that may stop early makes it a range.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from likex.batches import Batches
from likex.generate import sample
from likex.measurement.rates import MeasureConfig, prompt_length, random_prompts
from likex.measurement.scores import heldout_windows, score_text
from likex.models import LanguageModel
from likex.objective import StepLoss
from likex.stats.intervals import check_points
from likex.throughput import sampling_batch
from likex.train import step_seconds
from likex.train_config import TrainPlan

# new tokens sampled to time one (after a first that also reads the prompt)
TIMED_TOKENS = 3


@dataclass(frozen=True)
class Work:
    """What a command will do: training ``steps``, rate ``measurements`` (each up to the
    measurement's samples) and ``scorings`` of the held-out text (a scoring against a
    reference counts twice: both models read it)."""

    steps: int
    measurements: int = 0
    scorings: int = 0

    def __add__(self, other: Work) -> Work:
        return Work(
            self.steps + other.steps,
            self.measurements + other.measurements,
            self.scorings + other.scorings,
        )

    def __mul__(self, times: int) -> Work:
        return Work(self.steps * times, self.measurements * times, self.scorings * times)


@dataclass(frozen=True)
class Speed:
    """Seconds, measured here: per training ``step``, per sampled ``sequence`` of the
    measurement's length, per ``scoring`` of the held-out text."""

    step: float
    sequence: float
    scoring: float


@dataclass(frozen=True)
class Estimate:
    """The seconds a command's ``work`` takes at ``speed``: a range where each measurement
    stops after ``samples[0]`` to ``samples[1]`` sequences."""

    work: Work
    speed: Speed
    samples: tuple[int, int]
    score_tokens: int

    def seconds(self) -> tuple[float, float]:
        w, s = self.work, self.speed
        fixed = w.steps * s.step + w.scorings * s.scoring
        fewest, most = self.samples
        per = w.measurements * s.sequence
        return fixed + per * fewest, fixed + per * most

    def describe(self) -> str:
        """ "about 2 min on this machine (200 steps x ~0.2 s, measuring 2 x up to 64 samples)"."""
        w = self.work
        parts = [f"{w.steps} steps x ~{_seconds(self.speed.step)}"]
        if w.measurements:
            fewest, most = self.samples
            upto = "up to " if fewest < most else ""
            parts.append(f"measuring {w.measurements} x {upto}{most} samples")
        if w.scorings:
            parts.append(f"scoring {w.scorings} x {self.score_tokens:,} held-out tokens")
        return f"about {_span(*self.seconds())} on this machine ({', '.join(parts)})"


def _span(low: float, high: float) -> str:
    """ "2 min", "1-2 min", "40 s to 2 min"."""
    (a, unit_a), (b, unit_b) = _duration(low).split(), _duration(high).split()
    if (a, unit_a) == (b, unit_b):
        return f"{b} {unit_b}"
    return f"{a}-{b} {unit_b}" if unit_a == unit_b else f"{a} {unit_a} to {b} {unit_b}"


def _seconds(s: float) -> str:
    """A step's seconds, two significant digits: "0.21 s", "1.4 s", "12 s"."""
    return f"{s:.2g} s" if s < 10 else f"{s:.0f} s"


def _duration(s: float) -> str:
    """A rough duration: "20 s", "3 min", "1.5 h"."""
    if s < 55:
        return f"{max(5, 5 * round(s / 5))} s"
    if s < 90 * 60:
        return f"{max(1, round(s / 60)):.0f} min"
    return f"{s / 3600:.1f} h"


def estimate(
    work: Work,
    model: LanguageModel,
    plan: TrainPlan,
    batches: Batches,
    loss: StepLoss,
    measure: MeasureConfig,
    heldout: torch.Tensor | None,
) -> Estimate:
    """What ``work`` will take for ``model``: trained by ``plan`` on ``batches`` toward
    ``loss`` (as ``likex.train.train`` takes them), measured by ``measure``, scored on
    ``heldout``. Each part is timed only where the work has it."""
    step = step_seconds(model, plan, batches, loss)
    sequence = _sequence_seconds(model, measure) if work.measurements else 0.0
    text = work.scorings and heldout is not None
    scoring = _scoring_seconds(model, heldout, measure) if text else 0.0
    return Estimate(work, Speed(step, sequence, scoring), _sequences(measure), measure.score_tokens)


def _sequences(measure: MeasureConfig) -> tuple[int, int]:
    """The fewest and the most sequences one measurement samples: it may stop at its first
    check point where an interval width is asked for (likex.measurement.rates)."""
    if measure.ci_half_width is None:
        return measure.samples, measure.samples
    return check_points(measure.samples)[0], measure.samples


def _sequence_seconds(model: LanguageModel, measure: MeasureConfig) -> float:
    """Seconds per sampled sequence of ``measure.gen_tokens`` tokens: a batch of the
    measurement's prompts sampled for one token (the prompt read) and for a few more (the
    tokens after it), on the same path (KV cache or window) the measurement takes. The batch
    is that of its first sequences, up to the first check point (likex.measurement.rates)."""
    device = next(model.parameters()).device
    batch = min(sampling_batch(model), _sequences(measure)[0])
    length = prompt_length(measure, model)
    prompts = random_prompts(batch, length, model.config.vocab_size, 0).to(device)
    new = min(TIMED_TOKENS, measure.gen_tokens - 1)
    cached = length + measure.gen_tokens <= model.config.block_size

    def timed(n: int) -> float:
        gen = torch.Generator(device=device).manual_seed(0)
        t0 = time.perf_counter()
        sample(model, prompts, n, gen, use_cache=cached).cpu()  # .cpu() waits for the device
        return time.perf_counter() - t0

    first = timed(1)
    if new <= 0:
        return first / batch
    more = timed(1 + new)
    # per later token; a busy machine can make the difference come out negative
    per_token = max((more - first) / new, more / (1 + new) / 2)
    return (first + per_token * (measure.gen_tokens - 1)) / batch


def _scoring_seconds(model: LanguageModel, heldout: torch.Tensor, measure: MeasureConfig) -> float:
    """Seconds to score ``heldout`` once as a measurement does (about ``score_tokens``
    tokens), timed on its first window."""
    windows = heldout_windows(heldout, model.config.block_size, measure.score_tokens)
    t0 = time.perf_counter()
    score_text(model, windows[:1])
    return (time.perf_counter() - t0) * windows.shape[0]


def measurements_during(steps: int, every: int) -> int:
    """How many measurements a run that measures every ``every`` steps (0: never) and at its
    last step makes in ``steps`` steps."""
    return 0 if not every else math.ceil(steps / every)
