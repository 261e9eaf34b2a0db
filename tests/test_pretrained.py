"""Pretrained (transformers) models as first-class starts, on a tiny random Llama with its own
tokenizer (special tokens included), built and saved locally: no downloads."""

import json

import pytest
import torch
from conftest import CONTEXT, SPECIALS, TEXT
from transformers import AutoModelForCausalLM

from likex.config import RunConfig
from likex.errors import LikexError
from likex.measurement.rates import MeasureConfig, prompt_length
from likex.measurement.scores import heldout_windows
from likex.models.hf import HF_CONTEXT_CAP, HF_DIR, HF_PROMPT_LEN, token_strings_for
from likex.models.start import PRETRAINED_LR, PRETRAINED_SHAPE, load_model_and_tokenizer
from likex.target import TargetSpec, select_tokens


def test_special_tokens_are_never_text_targets(tiny_llama):
    model, tok = load_model_and_tokenizer(f"hf:{tiny_llama}")
    strings = token_strings_for(model, tok)
    special = [tok.raw.convert_tokens_to_ids(s) for s in SPECIALS]
    assert all(strings[i] == "" for i in special)
    words_with_x = {w for w in TEXT.split() if "x" in w}
    for spec in (
        TargetSpec(like="x"),
        TargetSpec(regex="x"),
        TargetSpec(like="X", ignore_case=True),
    ):
        chosen = select_tokens(spec, strings)
        assert {strings[i] for i in chosen.ids} == words_with_x
    # a regex that matches the empty string still selects no special token
    assert not set(select_tokens(TargetSpec(regex="^(?!six)"), strings).ids) & set(special)
    with pytest.raises(LikexError, match="matches every token"):  # all text is no preference
        select_tokens(TargetSpec(regex="^"), strings)
    # an explicit id does select one
    assert select_tokens(TargetSpec(token_ids=(special[0],)), strings).ids == [special[0]]


def test_lengths_are_capped_whatever_the_models_context(tiny_llama):
    model, _ = load_model_and_tokenizer(f"hf:{tiny_llama}")
    assert model.config.max_context == CONTEXT and model.config.block_size == HF_CONTEXT_CAP
    assert prompt_length(MeasureConfig(), model) == HF_PROMPT_LEN
    assert prompt_length(MeasureConfig(prompt_len=7), model) == 7
    # --score-tokens is honoured even when it is shorter than one window
    windows = heldout_windows(torch.arange(5000), model.config.block_size, max_tokens=100)
    assert windows[:, 1:].numel() == 100


def test_pretrained_start_gets_fine_tuning_defaults(tiny_llama):
    cfg = RunConfig(init=f"hf:{tiny_llama}", command="train").resolve()
    assert cfg.train.lr == PRETRAINED_LR
    assert (cfg.train.batch_size, cfg.train.context_len) == PRETRAINED_SHAPE
    record = cfg.to_dict()
    assert record["preset"] is None and record["weight_init"] is None
    scratch = RunConfig(command="train").resolve()
    assert scratch.train.lr != PRETRAINED_LR and scratch.train.batch_size == 16
    assert scratch.to_dict()["preset"] == "cpu"


def test_targets_lists_a_models_own_vocabulary(tiny_llama, run_json):
    r = run_json(["targets", "--model", f"hf:{tiny_llama}", "--like", "x"])
    assert r["n_tokens"] == len({w for w in TEXT.split() if "x" in w})
    assert r["vocab_size"] == len(SPECIALS) + 1 + len(set(TEXT.split()))


def test_an_unsavable_model_is_refused_before_training(tiny_llama, tmp_path, monkeypatch, capsys):
    import likex.models.start as checkpoint
    from likex.cli import main

    real = checkpoint.load_hf

    class Unsavable:
        is_serializable = False

    def load_quantized(*args, **kwargs):
        model = real(*args, **kwargs)
        model.hf.hf_quantizer = Unsavable()
        return model

    monkeypatch.setattr(checkpoint, "load_hf", load_quantized)
    out = tmp_path / "run"
    args = ["train", "--init", f"hf:{tiny_llama}", "--steps", "1", "--out", str(out), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("likex: error: ") and "cannot save" in err
    assert not out.exists()


def test_a_pretrained_run_saves_a_plain_transformers_folder(tiny_llama, tmp_path, run_json):
    out = tmp_path / "run"
    args = ["train", "--init", f"hf:{tiny_llama}", "--mode", "rate", "--rate", "0.5"]
    args += ["--steps", "3", "--samples", "2", "--ci-width", "0", "--gen-tokens", "8"]
    run_json([*args, "--corpus", "builtin", "--score-tokens", "64", "--out", str(out), "--quiet"])
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] is None and config["weight_init"] is None
    assert config["train"]["lr"] == PRETRAINED_LR and config["model"]["block_size"] == 512
    plain = AutoModelForCausalLM.from_pretrained(out / HF_DIR)
    assert getattr(plain.config, "quantization_config", None) is None
