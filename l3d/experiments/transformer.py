"""Transformers to decompose: a small GPT-Neo trained on the story corpus, or TinyStories-8M (the paper's).

    model, record = story_model();  corpus = story_corpus(2000, seed=1)
    run = l3d.decompose(model, corpus.inputs, attention_tensors(model, 1), config, sequence=True, forward=logits)

Notebook 05 reads its settings with `TransformerExperiment.from_parameters(globals())`, loads the model and
texts with `load_model_and_texts`, and reads the subnetworks with `subnetwork_rows` and `pattern_purity`.

The embedded model at the notebook's settings (paper and test scale) ships with l3d
(`l3d.experiments.weights`, SHA-256 verified on loading): every machine decomposes the same model. Other
settings, or retrain_model=True, train it on the CPU (about 30 s) and cache it (safetensors + JSON) under
l3d's cache folder, keyed by its settings; another CPU trains another model. The paper path loads
`roneneldan/TinyStories-8M` and the TinyStories data through `transformers` / `datasets` and says exactly what to
download when they are missing.
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GPTNeoConfig, GPTNeoForCausalLM

from ..decomposition import Decomposition
from ..pipeline import L3DConfig
from ..runtime.progress import tqdm
from ..runtime.resources import missing_resources, offline
from ..runtime.settings import bounded
from .corpus import Corpus, Tokenizer, marked_context, story_corpus
from .model_experiment import ModelExperiment
from .subnetworks import affected_outputs, label_purity, owned_labels
from .weights import ORIGINS, embedded_model

PAPER_MODEL = "roneneldan/TinyStories-8M"
PAPER_DATA = "roneneldan/TinyStories"

# L3D settings per source. "paper": the paper's TinyStories-8M run. "embedded": sized to run in minutes on a CPU,
# for story_model()'s default GPT-Neo (width 32, 2 layers, 2 heads): its last attention block.
SETTINGS = {
    "embedded": dict(layer=1, n_texts=1000, n_test_texts=2000, n_subnetworks=200, rank=8, epochs=8, lr=0.02,
                     lr_decay_every=1, warm_start_epochs=1, init_texts=32, n_ref=4),
    "paper": dict(layer=4, n_texts=10_000, n_test_texts=10_000, n_subnetworks=100, rank=25, epochs=100, lr=5e-3,
                  lr_decay_every=10, warm_start_epochs=10, init_texts=0, n_ref=10),
}


def logits(model: nn.Module, tokens: Tensor) -> Tensor:
    """The causal LM's next-token logits: (batch, positions, vocab)."""
    return model(tokens).logits


def attention_tensors(model: nn.Module, layer: int) -> str:
    """Glob naming the q, k, v, out projections and out bias of GPT-Neo `model`'s attention block `layer`."""
    n_layers = model.config.num_layers
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} does not exist: the model has layers 0..{n_layers - 1}")
    return f"transformer.h.{layer}.attn.attention.*"


# --- the embedded model ---------------------------------------------------------------------------
def story_config(vocab_size: int, width: int = 32, n_layers: int = 2, n_heads: int = 2,
                 length: int = 16) -> GPTNeoConfig:
    """A small GPT-Neo: layers alternate global and local attention (window length / 2), as in GPT-Neo."""
    if n_layers % 2:
        raise ValueError(f"n_layers must be even (global and local attention alternate), got {n_layers}")
    return GPTNeoConfig(
        vocab_size=vocab_size, max_position_embeddings=length, hidden_size=width, num_layers=n_layers,
        num_heads=n_heads, attention_types=[[["global", "local"], n_layers // 2]], window_size=max(1, length // 2),
        intermediate_size=4 * width, bos_token_id=0, eos_token_id=0,
        embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0,
    )


def train_story_model(
    config: GPTNeoConfig, corpus: Corpus, steps: int, batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
    device: str | torch.device = "cpu", progress: bool = True,
) -> tuple[GPTNeoForCausalLM, list[float]]:
    """Next-token training with AdamW and a cosine learning rate; returns the model and the loss per step."""
    torch.manual_seed(seed)
    model = GPTNeoForCausalLM(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    tokens = corpus.tokens.to(device)
    losses = []
    for _ in tqdm(range(steps), desc="GPT-Neo", disable=not progress):
        batch = tokens[torch.randint(len(corpus), (batch_size,), generator=generator).to(device)]
        out = model(batch[:, :-1]).logits
        loss = F.cross_entropy(out.flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return model.eval(), losses


def story_model(
    width: int = 32, n_layers: int = 2, n_heads: int = 2, length: int = 16, n_texts: int = 20_000,
    steps: int = 3000, batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
    device: str | torch.device = "cpu", cache: str | os.PathLike | None = None, progress: bool = True,
    shipped: bool = True,
) -> tuple[GPTNeoForCausalLM, dict]:
    """The embedded GPT-Neo trained on `n_texts` story texts (corpus seed `seed` + 10_000): the one shipped with l3d
    for these settings (`l3d.experiments.weights`; shipped=False: not that one), else the one cached by settings,
    else trained now (about 30 s on a CPU at the defaults) and cached.

    Returns the model (eval mode, on `device`, weights frozen: L3D takes gradients by its own means) and its
    training record (settings, final loss, origin: "shipped", "cache" or "trained"; the loss curve when trained
    here).
    """
    settings = dict(width=width, n_layers=n_layers, n_heads=n_heads, length=length, n_texts=n_texts,
                    steps=steps, batch_size=batch_size, lr=lr, seed=seed, vocab=Tokenizer().vocab)
    config = story_config(len(settings["vocab"]), width, n_layers, n_heads, length)

    def train() -> tuple[GPTNeoForCausalLM, dict]:
        corpus = story_corpus(n_texts, length, seed=seed + 10_000)
        model, losses = train_story_model(config, corpus, steps, batch_size, lr, seed, device, progress)
        return model, {"loss": losses, "final_loss": sum(losses[-50:]) / len(losses[-50:])}

    model, record = embedded_model("story-gptneo", settings, lambda: GPTNeoForCausalLM(config), train, cache, shipped,
                                   str(device))
    return model.to(device).eval().requires_grad_(False), record


# --- the paper's model and data -------------------------------------------------------------------
def _hf_hub_cache() -> Path:
    """Hugging Face's hub cache as the environment sets it now: HF_HUB_CACHE, HF_HOME/hub or ~/.cache."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub"


def _hf_datasets_cache() -> Path:
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"])
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "datasets"


def _paper_resources() -> dict[str, str]:
    """What source='paper' needs: "model", "datasets" (the package) and "data", each with where it belongs and how
    to get it."""
    hub, data_cache = _hf_hub_cache(), _hf_datasets_cache()
    return {
        "model": f"the model {PAPER_MODEL!r} (weights and tokenizer), expected in the Hugging Face hub cache {hub}. "
                 f"On a machine with network access run `hf download {PAPER_MODEL}` and copy its hub cache "
                 f"(~/.cache/huggingface/hub) to {hub}, or set HF_HUB_CACHE to where you put it",
        "datasets": "the Python package `datasets` (the `paper` extra): `pip install -e '.[paper]'` in the repository "
                    "(or `pip install datasets`)",
        "data": f"the data set {PAPER_DATA!r}, expected in the Hugging Face datasets cache {data_cache}. On a machine "
                f"with network access run `python -c \"import datasets; datasets.load_dataset('{PAPER_DATA}', "
                f"split='train')\"` and copy ~/.cache/huggingface to this machine (set HF_HOME to it)",
    }


def paper_missing() -> dict[str, str]:
    """The resources of `_paper_resources` this machine lacks (whether or not it could download them)."""
    from huggingface_hub import try_to_load_from_cache

    hub = _hf_hub_cache()
    present = {
        "model": isinstance(try_to_load_from_cache(PAPER_MODEL, "config.json", cache_dir=hub), str),
        "datasets": importlib.util.find_spec("datasets") is not None,
        "data": (hub / f"datasets--{PAPER_DATA.replace('/', '--')}").exists()
                or (_hf_datasets_cache() / "roneneldan___tiny_stories").exists(),
    }
    return {k: v for k, v in _paper_resources().items() if not present[k]}


def paper_model(device: str | torch.device = "cpu"):
    """TinyStories-8M (eval mode, weights frozen) and its tokenizer from the Hugging Face hub (or its cache).

    Offline, every missing resource of source='paper' (model, `datasets` package, data set) is named in one error.
    """
    from transformers import AutoTokenizer

    if offline() and (missing := paper_missing()):
        raise missing_resources("source='paper'", list(missing.values()))
    hub_cache = _hf_hub_cache()
    try:
        model = GPTNeoForCausalLM.from_pretrained(PAPER_MODEL, cache_dir=hub_cache, local_files_only=offline())
        tokenizer = AutoTokenizer.from_pretrained(PAPER_MODEL, cache_dir=hub_cache, local_files_only=offline())
    except (OSError, ValueError) as err:  # transformers' "not found / cannot connect" errors
        detail = str(err).splitlines()[0]
        raise missing_resources("source='paper'",
                                [_paper_resources()["model"] + f" (underlying error: {detail})"]) from None
    return model.to(device).eval().requires_grad_(False), tokenizer


def encode_texts(texts: Sequence[str], encode: Callable[[str], list[int]], n_texts: int, length: int = 16) -> Tensor:
    """The first `length` + 1 tokens of each text long enough, until `n_texts` are found: (n_texts, length + 1)."""
    rows = []
    for text in texts:
        ids = encode(text)
        if len(ids) > length:
            rows.append(ids[:length + 1])
            if len(rows) == n_texts:
                return torch.tensor(rows)
    raise ValueError(f"only {len(rows)} of the texts have more than {length} tokens; {n_texts} were asked for")


def paper_texts(tokenizer, n_texts: int = 10_000, length: int = 16, split: str = "train", skip: int = 0) -> Tensor:
    """`n_texts` TinyStories stories (after the first `skip`) cut to `length` + 1 tokens: (n_texts, length + 1)."""
    missing = {k: v for k, v in paper_missing().items() if k != "model"}
    if "datasets" in missing or offline() and missing:
        raise missing_resources(f"source='paper' (split {split!r})", list(missing.values()))
    import datasets

    try:
        data = datasets.load_dataset(PAPER_DATA, split=split, cache_dir=str(_hf_datasets_cache()))
    except Exception as err:  # datasets raises many kinds of errors when offline and uncached
        detail = str(err).splitlines()[0]
        raise missing_resources(f"source='paper' (split {split!r})",
                                [_paper_resources()["data"] + f" (underlying error: {detail})"]) from None
    texts = (data[i]["text"] for i in range(skip, len(data)))
    return encode_texts(texts, tokenizer.encode, n_texts, length)


# --- notebook 05: its settings, its model and texts, reading the subnetworks ----------------------
@dataclass(frozen=True)
class TransformerExperiment(ModelExperiment):
    """Notebook 05's settings: the embedded model (width, n_layers, n_heads, model_steps; ignored for the paper
    source; retrain_model: train it on this machine rather than load the one shipped for these settings), the
    attention block `layer`, texts of `length` tokens (n_texts decomposed, n_test_texts held out),
    batch_texts texts per step, init_texts texts whose gradients start the subnetworks (0: random start),
    purity_threshold, the purity at which a subnetwork owns a corpus pattern, and n_other_texts, the held-out texts
    whose every token is an "other" sample of the causal selectivity (all of them when there are fewer).
    None: SETTINGS[source]."""

    DEFAULTS: ClassVar[dict[str, dict]] = SETTINGS

    out_dir: str = "figures/05_transformer"
    width: int = bounded(32, low=8)
    n_layers: int = bounded(2, low=2)
    n_heads: int = bounded(2, low=1)
    model_steps: int = bounded(3000, low=1)
    retrain_model: bool = False
    layer: int = bounded(None, low=0)
    length: int = bounded(16, low=2)
    n_texts: int = bounded(None, low=2)
    n_test_texts: int = bounded(None, low=2)
    init_texts: int = bounded(None, low=0)
    batch_texts: int = bounded(16, low=1)
    n_top: int = bounded(20, low=1)
    purity_threshold: float = bounded(0.8, low=0, high=1)
    n_other_texts: int = bounded(16, low=1)

    def check(self) -> list[str]:
        problems = super().check()
        if self.batch_texts > self.n_texts:
            problems.append(f"batch_texts {self.batch_texts} must not exceed n_texts {self.n_texts}")
        if self.source == "embedded" and self.n_layers % 2:
            problems.append(f"n_layers must be even (global and local attention alternate), got {self.n_layers}")
        if self.source == "embedded" and self.width % self.n_heads:
            problems.append(f"width {self.width} must be a multiple of n_heads {self.n_heads}")
        if self.source == "embedded" and self.layer >= self.n_layers:
            problems.append(f"layer {self.layer} does not exist: the model has layers 0..{self.n_layers - 1}")
        return problems

    def model_options(self) -> dict:
        """`story_model`'s settings for the embedded model."""
        return dict(width=self.width, n_layers=self.n_layers, n_heads=self.n_heads, length=self.length,
                    steps=self.model_steps, seed=self.seed)

    def l3d_config(self, parameters: Mapping[str, Any]) -> L3DConfig:
        """KL between next-token distributions at every position; batch_texts texts per step, four batches per
        gradient pass when there are that many texts, 64 texts per vectorized gradient computation;
        init_texts > 0 starts from the gradients of the first init_texts texts."""
        batch = self.batch_texts
        return L3DConfig.from_parameters(
            parameters, divergence="kl", batch_size=batch, chunk_size=4 * batch if self.n_texts >= 4 * batch else batch,
            gradient_chunk_size=64, init="gradients" if self.init_texts else "random",
            init_samples=self.init_texts or None,
        )


@dataclass
class ModelAndTexts:
    """The model to decompose and texts of length + 1 tokens: it reads [:, :-1] and predicts [:, 1:]."""

    model: nn.Module
    train: Tensor                          # (n_texts, length + 1) decomposition texts
    test: Tensor                           # (n_test_texts, length + 1) held-out texts the subnetworks are read on
    decode: Callable[[Sequence[int]], str]
    corpus: Corpus | None                  # the held-out story corpus (every target's pattern); None for "paper"
    note: str                              # where the model comes from


def load_model_and_texts(settings: TransformerExperiment, device: str | torch.device = "cpu") -> ModelAndTexts:
    """The source's model and texts. Embedded: `story_model` (seed `seed`; the shipped one unless retrain_model),
    decomposition texts from corpus seed
    seed + 1, held-out texts from seed + 2. Paper: TinyStories-8M, the first n_texts TinyStories texts long
    enough, then n_test_texts held out."""
    s = settings
    if s.source == "embedded":
        model, record = story_model(**s.model_options(), device=device, shipped=not s.retrain_model)
        train = story_corpus(s.n_texts, s.length, seed=s.seed + 1)
        test = story_corpus(s.n_test_texts, s.length, seed=s.seed + 2)
        note = f"story GPT-Neo: final training loss {record['final_loss']:.3f} ({ORIGINS[record['origin']]})"
        return ModelAndTexts(model, train.tokens, test.tokens, train.tokenizer.decode, test, note)
    model, tokenizer = paper_model(device)
    tokens = paper_texts(tokenizer, s.n_texts + s.n_test_texts, s.length)
    return ModelAndTexts(model, tokens[:s.n_texts], tokens[s.n_texts:], tokenizer.decode, None, PAPER_MODEL)


def subnetwork_rows(model: nn.Module, decomposition: Decomposition, top: Tensor, p_act: Tensor, tokens: Tensor,
                    inputs: Tensor, decode: Callable[[Sequence[int]], str], n_logits: int = 5) -> list[dict]:
    """One row per live subnetwork, most active first: its P_act, its first three top tokens in context (the
    target in [brackets]) and the n_logits logits that moving along its direction changes most, averaged over
    its top tokens (sign: up or down as δ grows).

    top: (C, n_top) indices of (text × position) samples; p_act: (C,); tokens: (texts, length + 1) on the CPU;
    inputs: tokens[:, :-1] on the model's device.
    """
    length = inputs.shape[1]
    rows = []
    for k in p_act.argsort(descending=True).tolist():
        if p_act[k] == 0:
            continue
        texts, positions = top[k] // length, top[k] % length
        values, index = affected_outputs(model, decomposition, k, inputs[texts], positions.to(inputs.device), logits,
                                         n_logits)
        contexts = [marked_context(tokens, int(t), int(p), decode, 6) for t, p in zip(texts[:3], positions[:3])]
        moved = [f"{decode([int(i)]).strip()} ({v:+.2f})" for v, i in zip(values.tolist(), index.tolist())]
        rows.append({"subnetwork": k, "P_act": f"{p_act[k]:.3f}", "top tokens": " / ".join(contexts),
                     "top logits": ", ".join(moved)})
    return rows


def pattern_purity(top: Tensor, corpus: Corpus, p_act: Tensor, threshold: float = 0.8) -> dict:
    """Which corpus pattern each live subnetwork serves, for metrics.json.

    The (label) purity of a subnetwork is the share of its top tokens (top: (C, n_top) sample indices into the
    corpus's targets) whose target belongs to its most common pattern (`subnetworks.label_purity`); tokens of no
    pattern count against it. A pattern is owned when a live subnetwork (p_act > 0) serves it with purity ≥
    threshold. Returns mean_pattern_purity (over live subnetworks), patterns_owned, n_patterns, owned_patterns,
    best_pattern_purity (pattern -> best purity of a live subnetwork serving it, 0 if none) and purity_threshold.
    """
    pure, label = label_purity(top, corpus.tags.flatten(), ignore=0)
    live = p_act > 0
    owned = owned_labels(pure[live], label[live], threshold)
    best = {p: 0.0 for p in corpus.patterns[1:]}
    for k in torch.nonzero(live).flatten().tolist():
        if label[k] >= 0:
            name = corpus.patterns[label[k]]
            best[name] = max(best[name], pure[k].item())
    return {"mean_pattern_purity": pure[live].mean().item(), "patterns_owned": len(owned),
            "n_patterns": len(corpus.patterns) - 1, "owned_patterns": [corpus.patterns[i] for i in owned],
            "best_pattern_purity": best, "purity_threshold": threshold}
