"""The transformers adapter on a tiny random GPT-2 built and saved locally (no downloads)."""

import json
import shutil

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

from likex.cli import main
from likex.generate import sample
from likex.hf import HF_DIR, load_hf, load_model_and_tokenizer, token_strings_for
from likex.target import TargetSpec, select_tokens
from likex.tokenizer import _gpt2_files
from likex.train import TrainConfig, train

CONTEXT = 48


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A random 2-layer GPT-2 with GPT-2's tokenizer, saved as transformers saves it."""
    path = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    vocab, merges = _gpt2_files()
    if int(transformers.__version__.split(".")[0]) >= 5:
        tok = GPT2TokenizerFast(vocab=vocab, merges=merges)
    else:
        tok = GPT2TokenizerFast(vocab_file=vocab, merges_file=merges)
    assert len(tok) == 50257
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=CONTEXT,
        n_embd=32,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_adapter_gives_the_models_own_log_probs(tiny_gpt2):
    model = load_hf(f"hf:{tiny_gpt2}")
    assert model.config.block_size == CONTEXT and model.config.vocab_size == 50257
    assert model.num_params() == sum(p.numel() for p in model.hf.parameters())
    idx = torch.randint(0, 50257, (3, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = torch.log_softmax(model.hf(idx).logits.float(), dim=-1)
        every = model(idx, positions="all")
        last = model(idx, positions="last")
        model._keeps_logits = False  # the path for models without logits_to_keep
        last_via_head = model(idx, positions="last")
    assert every.shape == (3, 20, 50257) and last.shape == (3, 50257)
    torch.testing.assert_close(every, expected)
    torch.testing.assert_close(last, expected[:, -1])
    torch.testing.assert_close(last_via_head, expected[:, -1])


def test_kv_cache_and_window_sampling_agree(tiny_gpt2):
    model, _ = load_model_and_tokenizer(f"hf:{tiny_gpt2}")
    prompt = torch.randint(0, 50257, (2, 10), generator=torch.Generator().manual_seed(1))
    cached = sample(model, prompt, 12, torch.Generator().manual_seed(3), use_cache=True)
    window = sample(model, prompt, 12, torch.Generator().manual_seed(3), use_cache=False)
    assert torch.equal(cached, window)
    # beyond the context the window slides
    assert sample(model, prompt, CONTEXT - 4, torch.Generator().manual_seed(3)).shape == (2, 44)


def test_training_raises_the_rate_and_saves_a_plain_transformers_model(tiny_gpt2, tmp_path):
    model, tok = load_model_and_tokenizer(f"hf:{tiny_gpt2}")
    strings = token_strings_for(model, tok)
    mask = select_tokens(TargetSpec(like="x"), strings).mask
    cfg = TrainConfig(steps=25, batch_size=8, context_len=32, lr=1e-2, seed=0)
    result = train(model, cfg, mask, tmp_path, progress=False)
    assert result.loss_last < 0.5 * result.loss_first
    saved = tmp_path / HF_DIR
    assert json.loads((saved / "likex_step.json").read_text())["step"] == 25
    plain = AutoModelForCausalLM.from_pretrained(saved)  # no likex involved
    idx = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model(idx, positions="last")
        theirs = torch.log_softmax(plain(idx).logits[:, -1].float(), dim=-1)
    torch.testing.assert_close(ours, theirs)
    # the trained model puts most of its next-token mass on x-tokens
    assert float(ours.exp()[:, mask].sum(dim=-1).min()) > 0.5
    # and the saved folder, as a run folder, loads back through likex with its tokenizer
    again, again_tok = load_model_and_tokenizer(tmp_path)
    assert again_tok.encode("xylophone") == tok.encode("xylophone")


def test_run_eval_generate_with_an_hf_model(tiny_gpt2, tmp_path, run_json):
    out = tmp_path / "run"
    args = ["run", "--init", f"hf:{tiny_gpt2}", "--steps", "20", "--batch-size", "8"]
    args += ["--lr", "1e-2", "--samples", "4", "--ci-width", "0", "--gen-tokens", "16"]
    result = run_json([*args, "--out", str(out), "--quiet"])
    assert result["init"] == f"hf:{tiny_gpt2}"
    assert result["rate_after"] > result["rate_before"]
    assert (out / HF_DIR / "model.safetensors").is_file() and (out / "config.json").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["init"]["kind"] == "hf" and "sha256" in config["init"]

    resumed = run_json(["run", "--resume", str(out), "--steps", "24", "--quiet"])
    assert resumed["steps"] == 24 and resumed["init"] == f"hf:{tiny_gpt2}"
    assert json.loads((out / HF_DIR / "likex_step.json").read_text())["step"] == 24

    evaluated = run_json(["eval", "--model", str(out), "--samples", "4", "--ci-width", "0",
                          "--gen-tokens", "16", "--quiet"])  # fmt: skip
    assert evaluated["like"] == result["like"] and evaluated["tokens_measured"] == 64

    generated = run_json(["generate", "--model", f"hf:{tiny_gpt2}", "--prompt", "Hello",
                          "--tokens", "5", "--quiet"])  # fmt: skip
    assert len(generated["tokens"][0]) == 5


def test_bad_hf_models_fail_with_one_line(tiny_gpt2, tmp_path, capsys):
    no_tokenizer = tmp_path / "weights-only"
    GPT2LMHeadModel.from_pretrained(tiny_gpt2).save_pretrained(no_tokenizer)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_gpt2, corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    capsys.readouterr()  # transformers' own loading output above is not likex's
    for spec, message in (
        (f"hf:{corrupt}", "cannot load"),
        (f"hf:{tmp_path / 'missing'}", "model folder not found"),
        (f"hf:{no_tokenizer}", "cannot load the tokenizer"),
        ("hf:", "needs a model name"),
    ):
        assert main(["eval", "--model", spec, "--like", "x", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("likex: error: ") and message in err
        assert err.count("\n") == 1
    assert main(["run", "--init", str(tiny_gpt2), "--quiet", "--out", str(tmp_path / "r")]) == 2
    assert "likex run is the seed experiment" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
