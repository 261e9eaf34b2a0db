import json
import os
from collections.abc import Callable

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from likex.cli import main
from likex.measurement.memo import REMEASURE_ENV
from likex.models.tokenizer import gpt2
from likex.throughput import SAMPLE_BATCH_ENV

# The tests sample in one fixed batch, so their draws (and the statistical claims made on
# them) are the same on every machine; the measured batch is tested in tests/test_throughput.py.
os.environ.setdefault(SAMPLE_BATCH_ENV, "16")
# Every test samples rather than reading an earlier identical measurement back from the user
# cache; tests/test_memo.py turns the cache on where it tests it.
os.environ.setdefault(REMEASURE_ENV, "1")

TEXT = "six foxes mix wax in a box next to the extra taxi and the axe " * 4
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<jupyter_text>"]
CONTEXT = 8192  # SmolLM2's, far beyond what likex should use by default


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A random 2-layer Llama whose word-level tokenizer has special tokens containing 'x'."""
    path = tmp_path_factory.mktemp("hf") / "tiny-llama"
    words = Tokenizer(models.WordLevel(unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words.train_from_iterator(
        [TEXT], trainers.WordLevelTrainer(special_tokens=[*SPECIALS, "<unk>"])
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=words,
        unk_token="<unk>",
        eos_token="<|endoftext|>",
        bos_token="<|im_start|>",
        additional_special_tokens=["<|im_end|>", "<jupyter_text>"],
    )
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=CONTEXT,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


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
    "startup", "model", "measure_before", "contexts", "train", "measure_after", "checkpoint",
    "report",
}  # fmt: skip


@pytest.fixture
def check_timings() -> Callable[[dict], None]:
    """``check_timings(result["timings"])``: a run's breakdown of its seconds has every part,
    none negative, and the parts add up to no more than the total."""

    def check(timings: dict) -> None:
        assert timings.keys() == TIMING_PARTS | {"total", "other"}
        assert all(v >= 0 for v in timings.values())
        assert sum(timings[k] for k in TIMING_PARTS) <= timings["total"] + 1e-9
        assert timings["other"] == pytest.approx(
            timings["total"] - sum(timings[k] for k in TIMING_PARTS)
        )

    return check


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
