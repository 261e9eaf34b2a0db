import pytest
import torch

from likex.tokenizer import gpt2


@pytest.fixture(scope="session")
def token_strings() -> list[str]:
    return gpt2().token_strings()


@pytest.fixture(scope="session")
def x_mask(token_strings) -> torch.Tensor:
    return torch.tensor(["x" in s for s in token_strings])


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
