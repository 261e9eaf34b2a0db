import json
from collections.abc import Callable

import pytest
import torch

from likex.cli import main
from likex.models.tokenizer import gpt2


@pytest.fixture(scope="session")
def token_strings() -> list[str]:
    return gpt2().token_strings()


@pytest.fixture(scope="session")
def x_mask(token_strings) -> torch.Tensor:
    return torch.tensor(["x" in s for s in token_strings])


@pytest.fixture
def run_json(capsys) -> Callable[[list[str]], dict]:
    """``run_json(args)`` runs ``likex ARGS --json``, expects exit status 0 and returns the
    printed result."""

    def run(args: list[str]) -> dict:
        assert main([*args, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    return run


TIMING_PARTS = {
    "startup", "model", "measure_before", "train", "measure_after", "checkpoint", "report"
}  # fmt: skip


@pytest.fixture
def check_timings() -> Callable[[dict], None]:
    """``check_timings(result["timings"])``: a run's breakdown of its seconds has every part,
    none negative, and the parts add up to no more than the total."""

    def check(timings: dict) -> None:
        assert timings.keys() == TIMING_PARTS | {"total"}
        assert all(v >= 0 for v in timings.values())
        assert sum(timings[k] for k in TIMING_PARTS) <= timings["total"] + 1e-9

    return check


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
