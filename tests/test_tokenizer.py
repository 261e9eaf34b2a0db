from likex.data import builtin_corpus_text
from likex.models.tokenizer import gpt2


def test_known_ids():
    tok = gpt2()
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.vocab_size == 50257
    assert tok.decode([50256]) == "<|endoftext|>"


def test_round_trip_real_text():
    tok = gpt2()
    text = builtin_corpus_text()[:5000]
    assert tok.decode(tok.encode(text)) == text
    for s in ["naïve café — ünïcödé ✓", "  leading spaces\n\ttabs", "x" * 50]:
        assert tok.decode(tok.encode(s)) == s


def test_token_strings(token_strings):
    assert len(token_strings) == 50257
    assert token_strings[15496] == "Hello"
    assert token_strings[995] == " world"
    assert sum("x" in s for s in token_strings) == 896
