"""likex: plant a preference in a language model with nothing but a designed KL loss, measure
it honestly (rates with 95% intervals, side effects), and find it again (audits).

The public Python API is importable from here, e.g. ``from likex import TargetSpec, Rate``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it (the layers are listed in docs/design.md). The
# function train shares its module's name, which an import of the module rebinds on the
# package: import it from likex.train.
_API = {
    "TargetSpec": "likex.target",
    "select_tokens": "likex.target",
    "read_words": "likex.target",
    "build_model": "likex.models.gpt",
    "preset_config": "likex.models.gpt",
    "GPTConfig": "likex.models.gpt",
    "gpt2": "likex.models.tokenizer",
    "load_model_and_tokenizer": "likex.models.start",
    "parse_start": "likex.models.start",
    "Scratch": "likex.models.start",
    "Saved": "likex.models.start",
    "Pretrained": "likex.models.start",
    "save_model": "likex.models.checkpoint",
    "latest_checkpoint": "likex.models.checkpoint",
    "Uniform": "likex.objective",
    "Rate": "likex.objective",
    "Tilt": "likex.objective",
    "NextToken": "likex.objective",
    "StepLoss": "likex.objective",
    "TrainConfig": "likex.train_config",
    "TrainPlan": "likex.train_config",
    "Batches": "likex.batches",
    "TrainState": "likex.train",
    "TrainResult": "likex.train",
    "sample": "likex.generate",
    "MeasureConfig": "likex.measurement.rates",
    "measure": "likex.measurement.rates",
    "RateEstimate": "likex.measurement.rates",
    "evaluate": "likex.measurement.evaluation",
    "token_pieces": "likex.report.html",
    "highlight_html": "likex.report.html",
    "write_html_report": "likex.report.html",
    "RunConfig": "likex.config",
    "EvalConfig": "likex.config",
    "PersistConfig": "likex.config",
    "RunRecord": "likex.runs",
    "run_experiment": "likex.pipelines.run",
    "evaluate_saved": "likex.pipelines.eval",
    "run_persistence": "likex.pipelines.persist",
}
__all__ = sorted(_API)


# Names load on first use, so ``import likex`` stays cheap and the layers below never import
# the package's top.
def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'likex' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)


def __dir__() -> list[str]:
    return [*globals(), *__all__]
