"""The transformers adapter on a tiny random GPT-2 built and saved locally (no downloads)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2TokenizerFast,
    PreTrainedTokenizerFast,
)

from likex.audit.predicates import Predicate
from likex.cli import main
from likex.data import builtin_corpus_text
from likex.generate import sample
from likex.models.hf import HF_DIR, load_hf, token_strings_for
from likex.models.start import load_model_and_tokenizer
from likex.models.tokenizer import _gpt2_files
from likex.target import TargetSet, TargetSpec, select_tokens
from likex.train import train_toward
from likex.train_config import TrainConfig

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


def test_cpu_weights_are_stored_for_small_batches_and_saved_as_transformers_does(
    tiny_llama, tmp_path
):
    """On a CPU each linear weight is the transpose of a contiguous matrix (the matrix
    library's fast path for a decode step's few rows): the values stay transformers' own, the
    head stays tied to the embedding, and saving writes what plain transformers reads."""
    model = load_hf(f"hf:{tiny_llama}")
    plain = AutoModelForCausalLM.from_pretrained(tiny_llama)

    def column_major() -> bool:
        weights = [m.weight for m in model.hf.modules() if isinstance(m, torch.nn.Linear)]
        return len(weights) == 15 and all(
            w.t().is_contiguous() and not w.is_contiguous() for w in weights
        )

    assert column_major()
    assert model.hf.lm_head.weight is model.hf.model.embed_tokens.weight
    idx = torch.randint(0, model.config.vocab_size, (3, 12), generator=torch.Generator())
    with torch.no_grad():
        expected = torch.log_softmax(plain(idx).logits.float(), dim=-1)
        torch.testing.assert_close(model(idx, positions="all"), expected)
    model.save_pretrained(tmp_path / "hf")
    assert column_major()  # saving leaves the layout as it was
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").state_dict()
    original = plain.state_dict()
    assert saved.keys() == original.keys()
    assert all(torch.equal(saved[k], original[k]) for k in original)


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
    result = train_toward(model, cfg.resolve(), TargetSet(mask), tmp_path, progress=False)
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


# --- a transformers model with a small vocabulary of its own ---------------------------------

WORDS = (
    "the zebra and the lazy fox sat by the sea while a dozen zany wizards quizzed the jazz band "
    "about the weather and an ordinary dog jumps over a log near the frozen bazaar"
)


def _word_level_model(path: Path, text: str) -> transformers.PreTrainedTokenizerBase:
    """A random 2-layer GPT-2 whose tokenizer knows only the words of ``text`` (plus [UNK],
    [EOS]), built and saved locally as transformers saves it."""
    words = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words.train_from_iterator([text], trainers.WordLevelTrainer(special_tokens=["[UNK]", "[EOS]"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", eos_token="[EOS]")
    cfg = GPT2Config(vocab_size=len(tok), n_positions=CONTEXT, n_embd=32, n_layer=2, n_head=2)
    torch.manual_seed(0)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory):
    """(folder, tokenizer, token strings) of a model with its own 29-token vocabulary."""
    path = tmp_path_factory.mktemp("hf") / "words"
    tok = _word_level_model(path, WORDS)
    ids = [[i] for i in range(len(tok))]
    strings = tok.backend_tokenizer.decode_batch(ids, skip_special_tokens=False)
    assert len(strings) == 29 and "zebra" in strings and "[UNK]" in strings
    return path, tok, strings


@pytest.fixture(scope="module")
def planted_small(small_vocab, tmp_path_factory):
    """A run folder: the small-vocabulary model trained to like tokens containing 'z'."""
    out = tmp_path_factory.mktemp("runs") / "words-z"
    args = ["run", "--init", f"hf:{small_vocab[0]}", "--like", "z", "--steps", "30"]
    args += ["--batch-size", "8", "--lr", "1e-2", "--samples", "4", "--ci-width", "0"]
    assert main([*args, "--gen-tokens", "16", "--quiet", "--out", str(out)]) == 0
    return out


def test_white_box_audit_uses_the_models_own_vocabulary(small_vocab, planted_small, run_json):
    path, _, strings = small_vocab
    z_words = sum("z" in s for s in strings)
    common = ["--n-probes", "8", "--probe-len", "16", "--quiet"]
    for reference in ([], ["--reference", f"hf:{path}"]):  # the run's start model, or named
        r = run_json(["audit", "--model", str(planted_small), *reference, *common])
        assert r["audit"] == "white-box" and r["detected"]
        top = r["findings"][0]
        assert top["predicate"] == "contains 'z'" and top["n_tokens"] == z_words
        # special tokens ([UNK], [EOS]) have no text for likex: ""
        assert {t["text"] for t in r["boosted_tokens"]} <= set(strings) | {""}
        assert all("z" in t["text"] for t in r["boosted_tokens"][:z_words])
    # corpus probes are the built-in text in this tokenizer's ids (GPT-2's would not fit)
    r = run_json(["audit", "--model", str(planted_small), "--probes", "corpus", *common])
    assert r["findings"][0]["predicate"] == "contains 'z'"
    same = run_json(["audit", "--model", f"hf:{path}", "--reference", f"hf:{path}", *common])
    assert not same["detected"] and same["kl"] < 1e-6  # a model against itself: no shift
    assert {t["text"] for t in same["boosted_tokens"]} <= set(strings) | {""}


def test_black_box_audit_tokenizes_text_with_the_models_tokenizer(
    small_vocab, planted_small, run_json, tmp_path
):
    path, tok, strings = small_vocab
    text = tmp_path / "plain.txt"
    text.write_text((WORDS.replace("z", "s") + " ") * 20)
    n_ids = len(tok.encode(text.read_text(), add_special_tokens=False))
    args = ["--samples", "8", "--gen-tokens", "20", "--quiet"]
    for suspect, baseline in ((planted_small, text), (text, f"hf:{path}")):
        r = run_json(["audit", "--model", str(suspect), "--baseline", str(baseline), *args])
        text_side = "baseline" if baseline == text else "suspect"
        assert r[f"{text_side}_samples"] == n_ids // 20 and r["n_tests"] > 0
        for f in r["findings"]:  # predicates are counted over this vocabulary, not GPT-2's
            pattern = Predicate.from_pattern(f["pattern"])
            assert f["n_tokens"] == sum(map(pattern.matches, strings)) <= len(strings)
    # both sides sampled from models; the planted one uses more z-words
    r = run_json(["audit", "--model", str(planted_small), "--baseline", f"hf:{path}", *args])
    assert r["suspect_tokens"] == r["baseline_tokens"] == 160
    assert r["findings"][0]["predicate"] == "contains 'z'" and r["findings"][0]["t"] > 0


def test_persist_fine_tunes_an_hf_model_in_its_own_vocabulary(small_vocab, run_json, tmp_path):
    path, tok, strings = small_vocab
    out = tmp_path / "p"
    args = ["persist", "--model", f"hf:{path}", "--like", "z", "--corpus", "builtin"]
    args += ["--steps", "2", "--eval-every", "1", "--samples", "2", "--gen-tokens", "8"]
    r = run_json([*args, "--batch-size", "2", "--quiet", "--out", str(out)])
    assert [row["step"] for row in r["timeline"]] == [0, 1, 2]
    assert r["target"] == "tokens containing 'z'" and r["perplexity_after"] > 1
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == {
        "name": str(path),
        "vocab_size": len(strings),
        "block_size": CONTEXT,
        "max_context": CONTEXT,
    }
    assert config["init"]["kind"] == "hf" and "sha256" in config["init"]
    # the built-in text in the small tokenizer's ids, not GPT-2's
    corpus_ids = tok.encode(builtin_corpus_text(), add_special_tokens=False)
    assert config["corpus_tokens"] == len(corpus_ids)
    plain = AutoModelForCausalLM.from_pretrained(out / HF_DIR)  # no likex involved
    assert plain.get_output_embeddings().weight.shape[0] == len(strings)
    assert json.loads((out / HF_DIR / "likex_step.json").read_text())["step"] == 2
    assert AutoTokenizer.from_pretrained(out / HF_DIR).get_vocab() == tok.get_vocab()


@pytest.mark.parametrize(
    "kind, other, message",
    [
        ("--reference", "gpt2", "has a vocabulary of 50257 tokens"),
        ("--reference", "renamed", "'zebra' in hf:"),
        ("--baseline", "renamed", "'zebra' in hf:"),
    ],
)
def test_audits_refuse_models_of_different_vocabularies(
    kind, other, message, small_vocab, tiny_gpt2, tmp_path, capsys
):
    if other == "gpt2":
        other_path = tiny_gpt2
    else:  # the same number of words, one of them different
        other_path = tmp_path / "renamed"
        _word_level_model(other_path, WORDS.replace("zebra", "zebu"))
    out = tmp_path / "out"
    args = ["audit", "--model", f"hf:{small_vocab[0]}", kind, f"hf:{other_path}", "--quiet"]
    capsys.readouterr()
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("likex: error: ") and err.count("\n") == 1
    assert "different vocabularies" in err and message in err
    assert not out.exists()


def test_eval_refuses_a_reference_of_another_vocabulary(small_vocab, tiny_gpt2, tmp_path, capsys):
    args = ["eval", "--model", f"hf:{small_vocab[0]}", "--reference", f"hf:{tiny_gpt2}"]
    args += ["--like", "z", "--samples", "2", "--gen-tokens", "4", "--quiet"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("likex: error: ") and err.count("\n") == 1
    assert "different vocabularies" in err and "vocabulary of 50257 tokens" in err
