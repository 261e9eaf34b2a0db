"""Several corpora at once (weights, a bad file among several, the built-in kinds) and the
generated contexts that start from the model's own free text or from a chat turn."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from likex.batches import Batches
from likex.cli import main
from likex.corpora import KINDS, MIX, Corpora, Corpus, CorpusMix, Domain, corpus_text
from likex.data import builtin_corpus_text, corpus_windows, step_generator
from likex.errors import ConfigError, LikexError
from likex.generate import sample
from likex.models.adapter import ADAPTER_DIR, ADAPTER_WEIGHTS
from likex.models.checkpoint import load_model
from likex.models.gpt import GPT, GPTConfig
from likex.models.hf import load_hf
from likex.throughput import SAMPLE_BATCH_ENV
from likex.train_config import AUTO_BLOCK, TrainConfig, parse_context_block

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QUIET = ["--quiet", "--samples", "4", "--ci-width", "0", "--gen-tokens", "16"]


@pytest.fixture(scope="module")
def two_texts(tmp_path_factory):
    """Two small corpora of different kinds of text (prose and code), ~6k GPT-2 tokens each."""
    folder = tmp_path_factory.mktemp("corpora")
    prose, code = folder / "prose.txt", folder / "code.txt"
    prose.write_text(builtin_corpus_text()[:24_000])
    code.write_text(corpus_text("builtin:code")[:18_000])
    return prose, code


def test_corpus_values_and_weights(tmp_path, monkeypatch):
    assert Corpus.parse("legal.txt=2") == Corpus("legal.txt", 2.0)
    assert Corpus.parse("builtin") == Corpus("builtin", 1.0)
    assert Corpus.parse("notes=v2") == Corpus("notes=v2")  # not a weight: part of the name
    monkeypatch.chdir(tmp_path)
    Path("odd=2").write_text("a file whose name looks weighted")
    assert Corpus.parse("odd=2") == Corpus("odd=2")  # an existing file is always the file
    for bad in ("legal.txt=0", "legal.txt=-1", "legal.txt=nan", "legal.txt=inf"):
        with pytest.raises(ConfigError, match="positive"):
            Corpus.parse(bad)
    corpora = Corpora.of(["builtin", "legal.txt=2"])
    assert corpora.record() == ["builtin", "legal.txt=2"] and Corpora.of("builtin").record() == (
        "builtin"
    )
    assert Corpora.of(corpora.record()) == corpora  # config.json reads back the same
    with pytest.raises(ConfigError, match="twice"):
        Corpora.of(["mix", "builtin:code"])


def test_the_builtin_mix_holds_every_kind():
    domains = Corpora.of([MIX]).domains()
    assert [d.source for d in domains] == list(KINDS) == [
        "builtin", "builtin:code", "builtin:legal", "builtin:docs",
    ]  # fmt: skip
    assert sum(d.weight for d in domains) == pytest.approx(1.0)
    texts = {name: corpus_text(name) for name in KINDS}
    assert all(len(t) > 100_000 for t in texts.values())  # each a real corpus
    assert "def " in texts["builtin:code"] and "import " in texts["builtin:code"]
    assert "copyright" in texts["builtin:legal"].lower()
    assert "permission" in texts["builtin:legal"].lower()
    assert "pip install" in texts["builtin:docs"]  # package READMEs
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert readme.splitlines()[0] not in texts["builtin:docs"]  # likex's own left out
    assert len(set(texts.values())) == 4  # four different texts


def test_windows_are_drawn_in_proportion_to_the_weights():
    """Two corpora of disjoint token ranges, weights 1 and 3: a quarter and three quarters of
    the windows over many steps, each window from one corpus, every step a pure function."""
    a, b = torch.arange(0, 400) % 100, torch.arange(0, 400) % 100 + 1000
    mix = CorpusMix((Domain("a", 0.25, a, a[:0]), Domain("b", 0.75, b, b[:0])))
    batches = Batches("corpus", batch_size=8, context_len=16, seed=3, vocab_size=2000, corpus=mix)
    from_b = []
    for step in range(300):
        idx, labels = batches(step)
        assert ((idx < 100).all(1) | (idx >= 1000).all(1)).all()  # one corpus per window
        from_b.append(float((idx[:, 0] >= 1000).double().mean()))
        assert torch.equal(batches(step)[0], idx)  # a pure function of (seed, rank, step)
    share = sum(from_b) / len(from_b)  # 2400 windows: standard error 0.009
    assert share == pytest.approx(0.75, abs=0.04)
    # one corpus draws exactly the windows a single text always did
    one = Batches("corpus", batch_size=8, context_len=16, seed=3, vocab_size=2000, corpus=a)
    assert torch.equal(one(5)[0], corpus_windows(a, 8, 16, step_generator(3, 5, 0))[:, :-1])


def test_a_bad_file_among_several_is_one_line(two_texts, tmp_path, capsys):
    prose, code = two_texts
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    cases = [
        (str(tmp_path / "missing.txt"), "corpus file not found", ""),  # as the flag is read
        (str(empty), "corpus file is empty", "(corpus 2 of 3)"),
    ]
    for bad, what, where in cases:
        out = tmp_path / "out"
        args = ["train", "--preset", "tiny", "--corpus", str(prose), "--corpus", bad]
        args += ["--corpus", f"{code}=2", "--steps", "1", "--out", str(out), *QUIET]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and what in err and bad in err and where in err
        assert not out.exists()
    assert main(["eval", "--model", "smollm2-135m", "--corpus", str(prose), "--corpus", "x=0"]) == 2
    err = capsys.readouterr().err
    assert err == "likex: error: --corpus x=0: a weight must be a positive number\n"


def test_a_run_on_several_corpora_resumes_exactly(two_texts, tmp_path, run_json):
    """Weighted corpora and generated contexts that start from corpus text and from free text:
    a run cut at step 2 and resumed ends with the uninterrupted run's weights."""
    prose, code = two_texts
    args = ["train", "--preset", "tiny", "--device", "cpu", "--corpus", str(prose)]
    args += ["--corpus", f"{code}=3", "--contexts", "generated", "--free-contexts", "0.3"]
    args += ["--batch-size", "5", "--context-len", "16", "--score-tokens", "32", *QUIET]
    args += ["--samples", "2", "--gen-tokens", "8", "--prompt-len", "8"]
    straight = run_json([*args, "--steps", "3", "--out", str(tmp_path / "a")])
    run_json([*args, "--steps", "1", "--out", str(tmp_path / "b")])
    resumed = run_json(["train", "--resume", str(tmp_path / "b"), "--steps", "3", "--quiet"])
    assert resumed["loss_last"] == straight["loss_last"]
    a, b = load_model(tmp_path / "a"), load_model(tmp_path / "b")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["corpus"] == [str(prose), f"{code}=3"]
    assert config["train"]["free_contexts"] == 0.3 and "chat_contexts" not in config["train"]


def test_contexts_written_in_blocks_resume_exactly(two_texts, tmp_path, run_json, capsys):
    """--context-block 3: the contexts of three steps written at once. A run stopped inside a
    block keeps the block in its checkpoint and, resumed, ends with the uninterrupted run's
    weights; stopped at a block's end, it keeps nothing (the next step writes its block)."""
    prose, _ = two_texts
    args = ["train", "--preset", "tiny", "--device", "cpu", "--corpus", str(prose)]
    args += ["--contexts", "generated", "--free-contexts", "0.3", "--context-block", "3"]
    args += ["--batch-size", "2", "--context-len", "12", "--score-tokens", "32", *QUIET]
    args += ["--samples", "2", "--gen-tokens", "8", "--prompt-len", "8"]
    straight = run_json([*args, "--steps", "5", "--out", str(tmp_path / "a")])
    for cut, kept in ((2, True), (3, False)):
        out = tmp_path / f"cut{cut}"
        run_json([*args, "--steps", str(cut), "--out", str(out)])
        block = list(out.glob("checkpoints/step-*/contexts.safetensors"))
        assert bool(block) == kept and not (out / "contexts.safetensors").exists()
        resumed = run_json(["train", "--resume", str(out), "--steps", "5", "--quiet"])
        assert resumed["loss_last"] == straight["loss_last"], cut
        a, b = load_model(tmp_path / "a"), load_model(out)
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.equal(pa, pb)
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["train"]["context_block"] == 3
    assert main(["train", "--preset", "tiny", "--contexts", "corpus", "--context-block", "2"]) == 2
    assert capsys.readouterr().err == "likex: error: --context-block needs --contexts generated\n"


def test_a_block_gives_each_step_its_rows_and_a_checkpoint_what_the_next_steps_need():
    text = torch.arange(4000) % 96 + 1  # id 0 starts free text only
    one = Batches("generated", 4, 10, 0, 97, corpus=text, free_contexts=0.5, start_id=0)
    block = Batches("generated", 4, 10, 0, 97, corpus=text, free_contexts=0.5, start_id=0,
                    context_block=3)  # fmt: skip
    model = GPT(GPTConfig(block_size=16, vocab_size=97, n_layer=1, n_head=2, n_embd=8))
    steps = {s: block(s, 0, model)[0] for s in (1, 2, 3)}
    rows = block._blocks[0][1]
    assert block._blocks[0][0] == 1 and rows.shape == (12, 10)
    assert torch.equal(torch.cat([steps[1], steps[2], steps[3]]), rows)
    free = [int((steps[s][:, 0] == 0).sum()) for s in (1, 2, 3)]  # free text starts at id 0
    assert sum(free) == 6 and min(free) > 0  # shuffled: no step gets all the free text
    assert block.pending(1)[0] == 1 and block.pending(2)[0] == 1 and block.pending(3) is None
    assert one.pending(1) is None
    fresh = Batches("generated", 4, 10, 0, 97, corpus=text, free_contexts=0.5, start_id=0,
                    context_block=3)  # fmt: skip
    with pytest.raises(LikexError, match="written at step 1 and are not kept"):
        fresh(2, 0, model)
    fresh.restore(block.pending(1))
    assert torch.equal(fresh(2, 0, model)[0], steps[2])
    with pytest.raises(LikexError, match="do not fit blocks of 3 steps"):
        fresh.restore((1, rows[:8]))


def test_context_block_auto_is_the_sampling_batch_over_the_batch_size(monkeypatch):
    model = GPT(GPTConfig(block_size=16, vocab_size=97, n_layer=1, n_head=2, n_embd=8))
    auto = TrainConfig(contexts="generated", context_block=AUTO_BLOCK, batch_size=4, lr=1)
    for rows, block in (("32", 8), ("6", 1)):
        monkeypatch.setenv(SAMPLE_BATCH_ENV, rows)
        plan = auto.resolve().fit(model, torch.device("cpu"))
        assert plan.context_block == block and plan.to_dict().get("context_block", 1) == block
    assert parse_context_block("auto") == AUTO_BLOCK and parse_context_block("3") == 3
    with pytest.raises(LikexError, match="--context-block must be a positive integer or auto"):
        parse_context_block("0")


def test_start_counts_hold_the_shares_on_average():
    batches = Batches("generated", 4, 16, 0, 300, free_contexts=0.3, chat_contexts=0.45, start_id=1)
    counts = [batches.start_counts(step_generator(0, s, 0, 4), 4) for s in range(4000)]
    assert all(f >= 0 and c >= 0 and f + c <= 4 for f, c in counts)
    assert sum(f for f, _ in counts) / 4000 / 4 == pytest.approx(0.3, abs=0.02)
    assert sum(c for _, c in counts) / 4000 / 4 == pytest.approx(0.45, abs=0.02)
    with pytest.raises(ConfigError, match="chat_contexts"):
        TrainConfig(contexts="generated", free_contexts=0.6, chat_contexts=0.5, lr=1).resolve()
    with pytest.raises(ConfigError, match="free_contexts needs contexts generated"):
        TrainConfig(contexts="corpus", free_contexts=0.5, lr=1).resolve()


@pytest.fixture(scope="module")
def chat_llama(tiny_llama, tmp_path_factory):
    """The tiny Llama with a ChatML chat template, as instruction models have."""
    path = tmp_path_factory.mktemp("chat") / "tiny-chat"
    shutil.copytree(tiny_llama, path)
    config = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": CHATML}))
    return path


def test_generated_contexts_start_from_corpus_text_chat_turns_and_free_text(chat_llama, tiny_llama):
    model = load_hf(f"hf:{chat_llama}")
    tok = model.tokenizer
    before, after = tok.user_turn()
    assert tok.decode(before).startswith("<|im_start|>")  # the user's turn opened
    assert tok.decode(after).startswith("<|im_end|> <|im_start|>")  # the assistant's next
    corpus = torch.tensor(tok.encode("six foxes mix wax in a box next to the taxi " * 40))
    batches = Batches(
        "generated", 4, 32, seed=2, vocab_size=model.config.vocab_size, corpus=corpus,
        free_contexts=0.25, chat_contexts=0.25, start_id=tok.start_id,
        user_turn=(tuple(before), tuple(after)),
    )  # fmt: skip
    idx, labels = batches(0, model=model)
    windows = corpus_windows(corpus, 4, 32, step_generator(2, 0, 0))
    assert labels is None and idx.shape == (4, 32)
    quarter, user = 8, batches.user_len()
    assert torch.equal(idx[:2, :quarter], windows[:2, :quarter])  # two corpus prefixes
    chat = idx[2]  # then a chat turn: the template, corpus text as the user's, the model's turn
    assert chat[: len(before)].tolist() == before
    assert torch.equal(chat[len(before) : len(before) + user], windows[2, :user])
    assert chat[len(before) + user : len(before) + user + len(after)].tolist() == after
    assert idx[3, 0] == tok.start_id  # and free text after the start-of-text token
    # by hand: the corpus and free-text prompts write on alone to the chat prompt's length,
    # then the four rows go on together (one sampler, seeded from the step's stream)
    gen, pick = step_generator(2, 0, 0), step_generator(2, 0, 0, 3)
    assert torch.equal(batches._mix().windows(4, 32, gen, pick), windows)
    sampler = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
    longest = len(before) + user + len(after)
    grown = [
        torch.cat([p, sample(model, p, longest - p.shape[1], generator=sampler)], 1)
        for p in (windows[:2, :quarter], idx[3:, :1])
    ]
    rows = torch.cat([grown[0], idx[2:3, :longest], grown[1]])
    expect = torch.cat([rows, sample(model, rows, 32 - longest, generator=sampler)], 1)
    assert torch.equal(idx, expect)
    # a model without a chat template, or a window too short for one, is refused
    assert load_hf(f"hf:{tiny_llama}").tokenizer.user_turn() is None
    with pytest.raises(ConfigError, match="too short for chat contexts"):
        Batches("generated", 4, 8, 0, 300, chat_contexts=0.5, user_turn=((1,) * 6, (2,))).user_len()


def test_chat_contexts_need_a_chat_template(tiny_llama, tmp_path, capsys):
    args = ["train", "--init", f"hf:{tiny_llama}", "--mode", "rate", "--rate", "0.2"]
    args += ["--corpus", "builtin", "--contexts", "generated", "--chat-contexts", "0.5"]
    assert main([*args, "--steps", "1", "--out", str(tmp_path / "o"), *QUIET]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--chat-contexts needs a model with a chat template" in err


def test_a_lora_adapter_trains_on_several_corpora_with_free_text_and_chat_turns(
    chat_llama, tmp_path, run_json
):
    """--adapter lora with weighted corpora and generated contexts of every start (corpus
    text, chat turns, free text): the adapter trains on its own text with its base as R, each
    corpus is measured as a domain, and the run resumes with the same contexts."""
    out = tmp_path / "lora"
    args = ["train", "--init", f"hf:{chat_llama}", "--adapter", "lora", "--mode", "rate"]
    args += ["--rate", "0.5", "--like", "x", "--lr", "1e-2", "--corpus", "builtin"]
    args += ["--corpus", "builtin:code=2", "--contexts", "generated", "--free-contexts", "0.25"]
    args += ["--chat-contexts", "0.25", "--batch-size", "4", "--context-len", "32", *QUIET]
    args += ["--score-tokens", "64", "--prompt-len", "16"]
    first = run_json([*args, "--steps", "1", "--out", str(out)])
    assert 0 < first["adapter"]["trainable_params"] < first["params"]
    assert [d["corpus"] for d in first["domains"]] == ["builtin", "builtin:code"]
    assert first["kl_to_reference"] > 0  # against its own base, the adapter off
    weights = load_file(out / ADAPTER_DIR / ADAPTER_WEIGHTS)
    resumed = run_json(["train", "--resume", str(out), "--steps", "2", "--quiet"])
    assert resumed["steps"] == 2 and len(first["domains"]) == len(resumed["domains"])
    again = load_file(out / ADAPTER_DIR / ADAPTER_WEIGHTS)
    assert any(not torch.equal(weights[k], again[k]) for k in weights)
    config = json.loads((out / "config.json").read_text())
    assert config["corpus"] == ["builtin", "builtin:code=2"]
    assert config["adapter"]["adapter"] == "lora"
    assert config["train"]["free_contexts"] == config["train"]["chat_contexts"] == 0.25


def test_corpus_kinds_need_no_file():
    with pytest.raises(LikexError, match="not found"):
        Corpora.of(["builtin:nothing"]).check()
