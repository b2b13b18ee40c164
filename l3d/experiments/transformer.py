"""Transformers to decompose: a small GPT-Neo trained on the story corpus, or TinyStories-8M (the paper's).

    model, corpus = story_model(), story_corpus(2000, seed=1)
    collector = attention_collector(model, layer=1)     # q, k, v, out projections and out bias

The embedded model is trained on CPU in minutes and cached (safetensors + JSON) under l3d's cache
folder, keyed by its settings. The paper path loads `roneneldan/TinyStories-8M` and the TinyStories
data through `transformers` / `datasets` and says exactly what to download when they are missing.
"""
from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import Tensor, nn
from ..runtime.progress import tqdm
from transformers import GPTNeoConfig, GPTNeoForCausalLM

from ..gradients import GradientCollector
from ..runtime.atomic import write_folder
from ..runtime.resources import MissingResourceError, cache_dir, missing_resources, offline, settings_key
from .corpus import Corpus, Tokenizer, story_corpus

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


def attention_tensors(layer: int) -> str:
    """Glob naming a GPT-Neo attention block's q, k, v, out projections and out bias."""
    return f"transformer.h.{layer}.attn.attention.*"


def attention_collector(model: nn.Module, layer: int, chunk_size: int = 64) -> GradientCollector:
    """Per-token KL-divergence gradients (reference: a random other position) of one attention block."""
    n_layers = model.config.num_layers
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} does not exist: the model has layers 0..{n_layers - 1}")
    model.requires_grad_(False)  # else the collected gradients keep a graph through the model's weights
    return GradientCollector(
        model, attention_tensors(layer), divergence="kl", sequence=True, forward=logits, chunk_size=chunk_size
    )


# --- the embedded model ---------------------------------------------------------------------------
def story_config(vocab_size: int, width: int = 32, n_layers: int = 2, n_heads: int = 2, length: int = 16) -> GPTNeoConfig:
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
) -> tuple[GPTNeoForCausalLM, dict]:
    """The embedded GPT-Neo trained on `n_texts` story texts (corpus seed `seed` + 10_000), cached by settings.

    Returns the model (eval mode, on `device`) and its training record (settings, loss curve, final
    loss, whether it came from the cache).
    """
    settings = dict(width=width, n_layers=n_layers, n_heads=n_heads, length=length, n_texts=n_texts,
                    steps=steps, batch_size=batch_size, lr=lr, seed=seed, vocab=Tokenizer().vocab)
    folder = Path(cache or cache_dir()) / settings_key("story-gptneo", settings)
    if (folder / "model.safetensors").exists():
        config = GPTNeoConfig.from_dict(json.loads((folder / "config.json").read_text()))
        model = GPTNeoForCausalLM(config)
        load_model(model, folder / "model.safetensors", device="cpu")
        record = json.loads((folder / "training.json").read_text())
        return model.to(device).eval(), {**record, "cached": True}
    config = story_config(len(settings["vocab"]), width, n_layers, n_heads, length)
    corpus = story_corpus(n_texts, length, seed=seed + 10_000)
    model, losses = train_story_model(config, corpus, steps, batch_size, lr, seed, device, progress)
    record = {"settings": settings, "loss": losses, "final_loss": sum(losses[-50:]) / len(losses[-50:])}

    def write(tmp: Path) -> None:
        save_model(model.cpu(), str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(config.to_json_string())
        (tmp / "training.json").write_text(json.dumps(record))

    write_folder(folder, write)
    return model.to(device).eval(), {**record, "cached": False}


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
    """TinyStories-8M and its tokenizer from the Hugging Face hub (or its cache).

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
        raise missing_resources("source='paper'", [_paper_resources()["model"] + f" (underlying error: {detail})"]) from None
    return model.to(device).eval(), tokenizer


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
