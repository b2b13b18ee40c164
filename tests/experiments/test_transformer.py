import pytest
import torch
from transformers import GPTNeoConfig, GPTNeoForCausalLM

from l3d.experiments.corpus import Tokenizer, story_corpus
from l3d.divergences import divergence
from l3d.runtime.resources import MissingResourceError
from l3d.experiments.transformer import (
    PAPER_DATA, PAPER_MODEL, attention_collector, encode_texts, logits, paper_model, paper_texts, story_model,
)


def tiny_tinystories(vocab_size=50, width=16):
    """A GPT-Neo shaped like TinyStories-8M (8 layers, local/global attention), tiny and random."""
    torch.manual_seed(0)
    config = GPTNeoConfig(
        vocab_size=vocab_size, max_position_embeddings=16, hidden_size=width, num_layers=8, num_heads=2,
        attention_types=[[["global", "local"], 4]], window_size=4, intermediate_size=2 * width,
        bos_token_id=0, eos_token_id=0,
    )
    return GPTNeoForCausalLM(config).eval()


def test_paper_block_gradients_match_autograd_per_token():
    model = tiny_tinystories()
    collector = attention_collector(model, layer=4)
    prefix = "transformer.h.4.attn.attention."
    assert collector.names == [prefix + n for n in
                               ("k_proj.weight", "v_proj.weight", "q_proj.weight", "out_proj.weight", "out_proj.bias")]
    tokens = torch.randint(50, (3, 6), generator=torch.Generator().manual_seed(1))
    refs = collector.references(tokens, torch.Generator().manual_seed(2))       # (3 * 6, vocab)
    grads = collector(tokens, references=refs)
    assert grads.dense().grads[prefix + "q_proj.weight"].shape == (18, 16, 16)
    assert grads.dense().grads[prefix + "out_proj.bias"].shape == (18, 16)
    params = [p.requires_grad_(True) for p in collector.params.values()]
    for item, pos in [(0, 0), (1, 3), (2, 5)]:
        out = logits(model, tokens[item:item + 1])[0, pos]
        expected = torch.autograd.grad(divergence(out, refs[item * 6 + pos], "kl"), params)
        for name, g in zip(collector.names, expected):
            torch.testing.assert_close(grads.dense().grads[name][item * 6 + pos], g, rtol=1e-4, atol=1e-7)


def test_layer_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match="layers 0..7"):
        attention_collector(tiny_tinystories(), layer=8)


def test_story_model_trains_caches_and_reloads(tmp_path):
    settings = dict(width=16, n_layers=2, n_heads=2, n_texts=200, steps=60, batch_size=16, lr=0.02, cache=tmp_path, progress=False)
    model, record = story_model(**settings)
    assert not record["cached"]
    assert sum(record["loss"][-5:]) / 5 < record["loss"][0] - 1.5  # it learns the corpus
    assert [p.name for p in tmp_path.iterdir()][0].startswith("story-gptneo-")
    again, record2 = story_model(**settings)
    assert record2["cached"] and record2["loss"] == record["loss"]
    tokens = story_corpus(4, seed=5).inputs
    torch.testing.assert_close(logits(again, tokens), logits(model, tokens))
    assert logits(model, tokens).shape == (4, 16, len(Tokenizer()))


def test_encode_texts_keeps_long_enough_texts():
    tokenizer = Tokenizer()
    texts = ["Once upon a time", "Once upon a time , there was a girl", "One day , a boy named Tom went to the park"]
    out = encode_texts(texts, tokenizer.encode, n_texts=2, length=4)
    assert out.shape == (2, 5)
    assert tokenizer.decode(out[1]) == "One day , a boy"
    with pytest.raises(ValueError, match="only 2 of the texts"):
        encode_texts(texts, tokenizer.encode, n_texts=3, length=4)


@pytest.fixture
def offline_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)


def test_paper_model_offline_says_what_to_download(offline_empty_cache, tmp_path):
    with pytest.raises(MissingResourceError) as err:
        paper_model()
    message = str(err.value)
    assert PAPER_MODEL in message and f"hf download {PAPER_MODEL}" in message and str(tmp_path / "hf") in message
    assert err.value.__context__ is None or err.value.__suppress_context__  # no deep library trace attached


def test_paper_texts_offline_says_what_to_download(offline_empty_cache):
    with pytest.raises(MissingResourceError, match=PAPER_DATA):
        paper_texts(Tokenizer(), n_texts=10)
