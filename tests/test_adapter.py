"""LoRA adapters (peft): trained on a frozen base, saved in peft's format and loadable by plain
peft, the base as their reference, resumable, mergeable; and the cache of dequantized models."""

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import likex.models.cache as cache
from likex.cli import main
from likex.measurement.rates import MeasureConfig, prompt_length
from likex.models.adapter import ADAPTER_DIR, ADAPTER_WEIGHTS, AdaptedLM
from likex.models.hf import HF_PROMPT_LEN, load_hf
from likex.models.start import Adapted, parse_start
from likex.runs import RunRecord

QUIET = ["--quiet"]
SMALL = ["--samples", "2", "--ci-width", "0", "--gen-tokens", "8", "--score-tokens", "64"]


@pytest.fixture(scope="module")
def hf_adapter_run(tiny_llama, tmp_path_factory):
    """A LoRA adapter on the tiny Llama, trained toward tokens containing 'x' (rate 0.5)."""
    out = tmp_path_factory.mktemp("lora") / "run"
    args = ["train", "--init", f"hf:{tiny_llama}", "--adapter", "lora", "--mode", "rate"]
    args += ["--rate", "0.5", "--like", "x", "--steps", "3", "--lr", "1e-2", "--merge"]
    assert main([*args, "--corpus", "builtin", *SMALL, "--out", str(out), *QUIET]) == 0
    return out


def test_plain_peft_loads_the_adapter_with_the_same_logits(tiny_llama, hf_adapter_run):
    ours, tok = parse_start(str(hf_adapter_run)).load()
    assert isinstance(ours, AdaptedLM)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    plain = PeftModel.from_pretrained(base, hf_adapter_run / ADAPTER_DIR).eval()  # no likex
    idx = torch.tensor([tok.encode("six foxes mix wax in a box")])
    with torch.no_grad():
        theirs = torch.log_softmax(plain(idx).logits[:, -1].float(), -1)
        mine = ours.eval()(idx, positions="last")
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mine, ours.base_view()(idx, positions="last"))  # it trained


def test_the_base_stays_frozen_and_is_the_reference(tiny_llama, hf_adapter_run):
    record = RunRecord.load(hf_adapter_run)
    config = json.loads((hf_adapter_run / "config.json").read_text())
    assert config["adapter"]["adapter"] == "lora" and config["adapter"]["lora_rank"] == 8
    adapted, tok = parse_start(str(hf_adapter_run)).load()
    base, _ = record.start.load()
    idx = torch.tensor([tok.encode("the extra taxi and the axe")])
    with torch.no_grad():
        torch.testing.assert_close(adapted.base_view()(idx), base(idx))
    result = json.loads((hf_adapter_run / "result.json").read_text())
    assert 0 < result["adapter"]["trainable_params"] < result["params"]
    assert result["kl_to_reference"] > 0
    # eval of the adapter's folder compares it with its own base, with no second copy loaded
    start = parse_start(str(hf_adapter_run))
    assert isinstance(start, Adapted) and start.base() == record.start


def test_merged_model_writes_what_the_adapter_does(hf_adapter_run):
    adapted, tok = parse_start(str(hf_adapter_run)).load()
    merged = load_hf(str(hf_adapter_run / "merged" / "hf"))
    idx = torch.tensor([tok.encode("next to the extra taxi")])
    with torch.no_grad():
        torch.testing.assert_close(merged(idx), adapted.eval()(idx), rtol=1e-4, atol=1e-4)


def test_sampling_runs_a_plain_copy_that_follows_the_adapter(hf_adapter_run):
    """An adapted model is sampled through a plain copy with its adapter folded in: the same
    function as the adapter (or as its base, adapter off), refreshed after the adapter changes."""
    from likex.accel import inference_model

    adapted, tok = parse_start(str(hf_adapter_run)).load()
    adapted.eval()
    idx = torch.tensor([tok.encode("an extra fox in the box")])

    def plain(model):
        net, _ = inference_model(model)
        assert not isinstance(net, AdaptedLM) and not any(
            "lora" in name for name, _ in net.named_modules()
        )
        # the folded weights keep the layout of the base's (likex.models.hf.column_major_weights)
        linears = [m.weight for m in net.modules() if isinstance(m, torch.nn.Linear)]
        assert linears and all(w.t().is_contiguous() for w in linears)
        with torch.no_grad():
            return net(idx)

    # measured as its base is: after a short prefix, so prompt and new tokens fit the KV cache
    assert prompt_length(MeasureConfig(), adapted) == HF_PROMPT_LEN < adapted.config.block_size
    with torch.no_grad():
        torch.testing.assert_close(plain(adapted.base_view()), adapted.base_view()(idx))
        torch.testing.assert_close(plain(adapted), adapted(idx), rtol=1e-5, atol=1e-5)
    # a step of the fused AdamW training runs (it writes in place, tensor versions unchanged)
    lora = [p for p in adapted.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(lora, lr=0.1, fused=True)
    adapted(idx)[0, -1, :50].sum().backward()
    optimizer.step()
    with torch.no_grad():
        torch.testing.assert_close(plain(adapted), adapted(idx), rtol=1e-5, atol=1e-5)


def test_a_gpt_adapter_trains_evaluates_and_resumes(tmp_path, run_json, capsys):
    out = tmp_path / "gpt"
    args = ["train", "--preset", "tiny", "--adapter", "lora", "--mode", "rate", "--rate", "0.3"]
    args += ["--like", "z", "--corpus", "builtin", "--contexts", "corpus", "--steps", "2"]
    assert main([*args, "--lr", "1e-2", *SMALL, "--out", str(out), *QUIET]) == 0
    capsys.readouterr()
    first = load_file(out / ADAPTER_DIR / ADAPTER_WEIGHTS)
    assert all(k.startswith("base_model.") and "lora_" in k for k in first)
    r = run_json(["eval", "--model", str(out), *SMALL, *QUIET])
    assert r["reference"] == "starting model" and r["kl_to_reference"] > 0
    assert main(["train", "--resume", str(out), "--steps", "4", *QUIET]) == 0
    again = load_file(out / ADAPTER_DIR / ADAPTER_WEIGHTS)
    assert any(not torch.equal(first[k], again[k]) for k in first)
    assert json.loads((out / "result.json").read_text())["steps"] == 4


def test_an_adapter_is_drawn_from_the_run_seed():
    """The same seed makes the same adapter whatever the global generator holds; another seed
    another one (peft draws A from the global generator, which add_lora leaves as it was)."""
    from likex.models.adapter import AdapterConfig, add_lora
    from likex.models.gpt import GPT, preset_config

    def lora_a(seed: int, noise: int) -> dict:
        torch.manual_seed(noise)  # the global state a caller happens to leave
        base = GPT(preset_config("tiny"))
        before = torch.random.get_rng_state()
        adapted = add_lora(base, AdapterConfig(adapter="lora"), {"kind": "test"}, seed)
        assert torch.equal(before, torch.random.get_rng_state())  # left as it was
        return {k: v for k, v in adapted.state_dict().items() if "lora_A" in k}

    one, same, other = lora_a(0, noise=1), lora_a(0, noise=2), lora_a(1, noise=1)
    assert one and all(torch.equal(one[k], same[k]) for k in one)
    assert any(not torch.equal(one[k], other[k]) for k in one)


def test_cache_rebuilds_what_is_missing_stale_or_damaged(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    builds = []

    def build():
        builds.append(1)
        return load_hf(str(tiny_llama))

    idx = torch.tensor([[3, 4, 5]])
    first = cache.cached_model("tiny", "a" * 64, build)
    again = cache.cached_model("tiny", "a" * 64, build)
    assert len(builds) == 1  # the second load read the cache
    torch.testing.assert_close(first(idx), again(idx), rtol=0, atol=0)
    entry = cache.cache_root() / f"tiny-{'a' * 16}"
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # damaged, same size
    cache.cached_model("tiny", "a" * 64, build)
    assert len(builds) == 2
    manifest = json.loads((entry / cache.MANIFEST).read_text())
    manifest["source_sha256"] = "b" * 64  # made from another file than the one installed
    (entry / cache.MANIFEST).write_text(json.dumps(manifest))
    cache.cached_model("tiny", "a" * 64, build)
    assert len(builds) == 3
    (entry / cache.MANIFEST).unlink()  # an incomplete copy
    cache.cached_model("tiny", "a" * 64, build)
    assert len(builds) == 4
    assert cache.cached_model("tiny", "a" * 64, build) is not None and len(builds) == 4
