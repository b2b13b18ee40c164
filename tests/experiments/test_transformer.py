import pytest
import torch
from transformers import GPTNeoConfig, GPTNeoForCausalLM

from l3d.divergences import divergence
from l3d.experiments.corpus import Tokenizer, story_corpus
from l3d.experiments.transformer import (
    PAPER_DATA,
    PAPER_MODEL,
    attention_tensors,
    encode_texts,
    logits,
    paper_model,
    paper_texts,
    story_model,
)
from l3d.gradients import GradientCollector
from l3d.runtime.resources import MissingResourceError


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
    model = tiny_tinystories().requires_grad_(False)
    collector = GradientCollector(model, attention_tensors(model, 4), divergence="kl", sequence=True, forward=logits)
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
        attention_tensors(tiny_tinystories(), layer=8)


def test_story_model_trains_caches_and_reloads(tmp_path):
    settings = dict(width=16, n_layers=2, n_heads=2, n_texts=200, steps=60, batch_size=16, lr=0.02, cache=tmp_path,
                    progress=False)
    model, record = story_model(**settings)
    assert not record["cached"] and not any(p.requires_grad for p in model.parameters())
    assert sum(record["loss"][-5:]) / 5 < record["loss"][0] - 1.5  # it learns the corpus
    assert [p.name for p in tmp_path.iterdir()][0].startswith("story-gptneo-")
    again, record2 = story_model(**settings)
    assert (record2["cached"] and record2["loss"] == record["loss"]
            and not any(p.requires_grad for p in again.parameters()))
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


# --- notebook 05 -----------------------------------------------------------------------------------
import l3d  # noqa: E402
from l3d.experiments.corpus import marked_context  # noqa: E402
from l3d.experiments.model_experiment import fit_metrics, held_out_top  # noqa: E402
from l3d.experiments.subnetworks import affected_outputs, label_purity, owned_labels  # noqa: E402
from l3d.experiments.transformer import (  # noqa: E402
    SETTINGS,
    TransformerExperiment,
    pattern_purity,
    story_config,
    subnetwork_rows,
)
from l3d.initialize import init_from_inputs_  # noqa: E402

NOTEBOOK_05 = dict(source="embedded", seed=0, width=32, n_layers=2, n_heads=2, model_steps=3000, layer=None, length=16,
                   n_texts=None, n_test_texts=None, n_subnetworks=None, rank=None, top_k=0.1, epochs=None, lr=None,
                   lr_decay=0.8, lr_decay_every=None, warm_start_epochs=None, init_texts=None, batch_texts=16,
                   n_ref=None)


def test_transformer_settings_take_the_sources_values_and_derive_the_decomposition():
    settings = TransformerExperiment.from_parameters(NOTEBOOK_05)
    embedded = SETTINGS["embedded"]
    assert (settings.layer, settings.n_texts, settings.init_texts, settings.n_ref) == (1, 1000, 32, 4)
    c = settings.l3d
    assert (c.n_subnetworks, c.rank, c.epochs, c.lr, c.warm_start_epochs) == (200, 8, 8, 0.02, 1) == tuple(
        embedded[k] for k in ("n_subnetworks", "rank", "epochs", "lr", "warm_start_epochs"))
    assert (c.divergence, c.batch_size, c.chunk_size, c.gradient_chunk_size) == ("kl", 16, 64, 64)
    assert (c.init, c.init_samples, c.seed) == ("gradients", 32, 0)
    paper = TransformerExperiment.from_parameters({**NOTEBOOK_05, "source": "paper", "rank": 3, "n_texts": 40})
    assert ((paper.layer, paper.l3d.rank, paper.n_texts, paper.l3d.init, paper.l3d.init_samples)
            == (4, 3, 40, "random", None))
    assert paper.l3d.chunk_size == 16   # fewer than four batches of texts: one batch per gradient pass
    assert settings.to_dict()["l3d"]["divergence"] == "kl" and settings.to_dict()["batch_texts"] == 16


def test_transformer_settings_name_every_bad_setting_before_any_work():
    with pytest.raises(ValueError, match="source must be one of"):
        TransformerExperiment.from_parameters({**NOTEBOOK_05, "source": "hub"})
    with pytest.raises(ValueError) as err:
        TransformerExperiment.from_parameters({**NOTEBOOK_05, "n_texts": 8, "layer": 2, "purity_threshold": 1.5})
    assert "purity_threshold must be" in str(err.value)
    with pytest.raises(ValueError) as err:
        TransformerExperiment.from_parameters({**NOTEBOOK_05, "n_texts": 8, "layer": 2})
    assert "batch_texts 16 must not exceed n_texts 8" in str(err.value) and "layer 2 does not exist" in str(err.value)
    with pytest.raises(ValueError, match="top_k must be > 0"):   # the library's own check, made here
        TransformerExperiment.from_parameters({**NOTEBOOK_05, "top_k": 0})


def tiny_story_model():
    torch.manual_seed(0)
    return GPTNeoForCausalLM(story_config(len(Tokenizer()), width=16, length=8)).eval().requires_grad_(False)


def test_decompose_with_the_settings_is_the_notebooks_former_pipeline():
    """The numbers notebook 05 computed by hand (collector, start, source, fit, held-out evaluation) are those of
    l3d.decompose with TransformerExperiment's settings: bit for bit."""
    settings = TransformerExperiment.from_parameters(dict(
        NOTEBOOK_05, length=8, n_texts=12, n_test_texts=6, n_subnetworks=4, rank=2, epochs=2, lr=0.01, lr_decay_every=1,
        warm_start_epochs=1, init_texts=2, batch_texts=2, n_ref=2, n_top=3))
    model = tiny_story_model()
    train, test = story_corpus(12, 8, seed=1).inputs, story_corpus(6, 8, seed=2).inputs
    run = l3d.decompose(model, train, attention_tensors(model, 1), settings.l3d, sequence=True, forward=logits,
                        progress=False)
    metrics = fit_metrics(run, test)

    collector = GradientCollector(model, attention_tensors(model, 1), divergence="kl", sequence=True, forward=logits,
                                  gradient_chunk_size=64)
    decomposition = l3d.Decomposition(collector.shapes, 4, 2, 0.1, seed=0)
    init_from_inputs_(decomposition, collector, train[:2], seed=0)
    source = l3d.GradientSource(collector, train, batch_size=2, chunk_size=8, seed=0)
    history = l3d.fit(decomposition, source, 2, lr=0.01, lr_decay=0.8, lr_decay_every=1, warm_start_epochs=1,
                      progress=False)
    test_error = l3d.evaluate(decomposition,
                              l3d.GradientSource(collector, test, batch_size=2, seed=1))["reconstruction_error"]
    assert run.history.to_dict() == history.to_dict() == metrics["history"]
    assert metrics["test_reconstruction_error"] == test_error
    assert metrics["dead_fraction"] == len(history.dead) / 4
    top = l3d.top_samples(l3d.impact(decomposition, collector, test, n_ref=2, seed=0), 3).cpu()
    assert torch.equal(held_out_top(run, test, settings)[1], top)


def test_subnetwork_rows_and_pattern_purity_are_what_the_notebook_computed():
    model = tiny_story_model()
    corpus = story_corpus(5, 8, seed=3)
    inputs, decode = corpus.inputs, corpus.tokenizer.decode
    decomposition = l3d.Decomposition({n: tuple(p.shape)
                                       for n, p in l3d.select_tensors(model, attention_tensors(model, 1)).items()},
                                      4, 1, seed=0)
    top = torch.randperm(40, generator=torch.Generator().manual_seed(0))[:12].view(4, 3)
    top[0] = torch.nonzero(corpus.tags.flatten() > 0).flatten()[0].repeat(3)   # a pure one: three tokens of one pattern
    p_act = torch.tensor([0.3, 0.0, 0.5, 0.2])
    rows = subnetwork_rows(model, decomposition, top, p_act, corpus.tokens, inputs, decode, n_logits=2)
    assert [r["subnetwork"] for r in rows] == [2, 0, 3]
    for row in rows:   # the notebook's former loop
        k = row["subnetwork"]
        texts, positions = top[k] // 8, top[k] % 8
        values, index = affected_outputs(model, decomposition, k, inputs[texts], positions, logits, 2)
        assert row["top tokens"] == " / ".join(marked_context(corpus.tokens, int(t), int(p), decode, 6)
                                               for t, p in zip(texts, positions))
        assert row["top logits"] == ", ".join(f"{decode([int(i)]).strip()} ({v:+.2f})"
                                              for v, i in zip(values.tolist(), index.tolist()))
    result = pattern_purity(top, corpus, p_act, 0.8)
    pure, label = label_purity(top, corpus.tags.flatten(), ignore=0)
    live = p_act > 0
    best = {p: 0.0 for p in corpus.patterns[1:]}
    for k in torch.nonzero(live).flatten().tolist():
        if label[k] >= 0:
            best[corpus.patterns[label[k]]] = max(best[corpus.patterns[label[k]]], pure[k].item())
    owned = owned_labels(pure[live], label[live], 0.8)
    assert result == {"mean_pattern_purity": pure[live].mean().item(), "patterns_owned": len(owned),
                      "n_patterns": len(corpus.patterns) - 1, "owned_patterns": [corpus.patterns[i] for i in owned],
                      "best_pattern_purity": best, "purity_threshold": 0.8}
    assert result["patterns_owned"] == sum(v >= 0.8 for v in best.values()) >= 1


def test_the_notebook_loads_the_shipped_model_and_retrain_model_trains_one_here(tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    from l3d.experiments.transformer import load_model_and_texts

    spec = importlib.util.spec_from_file_location("nbtool",
                                                  Path(__file__).resolve().parents[2] / "tools" / "notebooks.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setenv("L3D_CACHE", str(tmp_path))
    small = tool.notebook_parameters("05_transformer", "test")     # 150 steps: the shipped test-scale model
    assert small["retrain_model"] is False
    shipped = load_model_and_texts(TransformerExperiment.from_parameters(small))
    assert "shipped with l3d, SHA-256 verified" in shipped.note and not list(tmp_path.iterdir())
    retrained = load_model_and_texts(TransformerExperiment.from_parameters({**small, "retrain_model": True}))
    assert "trained now on this machine" in retrained.note
    assert [p.name.startswith("story-gptneo-") for p in tmp_path.iterdir()] == [True]   # and cached
    again = load_model_and_texts(TransformerExperiment.from_parameters({**small, "retrain_model": True}))
    assert "from its cache" in again.note
    assert torch.equal(again.train, shipped.train) and torch.equal(again.test, shipped.test)   # the same texts
