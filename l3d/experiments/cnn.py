"""CNNs to decompose: a small CNN trained on scikit-learn's digits, or MobileNet-v3-small on CIFAR-100 (the paper's).

    model, record = digits_model();  images, labels, train = digits()
    run = l3d.decompose(model, images[train], DIGITS_BLOCK, config)     # the middle conv block's weight and bias

Notebook 06 reads its settings with `CNNExperiment.from_parameters(globals())`, loads the model and images
with `load_model_and_images`, and reads the subnetworks with `shown_subnetworks` and `subnetwork_rows`.

The digits CNN at the notebook's settings (paper and test scale) ships with l3d (`l3d.experiments.weights`,
SHA-256 verified on loading). Other settings, or retrain_model=True, train it on the CPU in seconds and cache it
(safetensors + JSON) keyed by its settings; another CPU trains another model.
The paper path loads torchvision's ImageNet weights and CIFAR-100 and says exactly what to download
when they are missing and the machine is offline.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..decomposition import Decomposition
from ..gradients import default_forward
from ..params import select_tensors
from ..pipeline import L3DConfig, decompose
from ..runtime.progress import tqdm
from ..runtime.resources import cache_dir, missing_resources, offline
from ..runtime.settings import bounded
from .model_experiment import ModelExperiment, fit_metrics, held_out_top
from .subnetworks import affected_outputs, label_purity, owned_labels
from .weights import ORIGINS, embedded_model

DIGITS_BLOCK = "features.1.*"
PAPER_BLOCK = "features.7.*"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"

# L3D settings per source. "paper": MobileNet-v3-small on CIFAR-100. "embedded": the digits CNN, minutes on a CPU.
# Tucker ranks: `rank` for every mode (capped at the mode's size), or `rank_fraction` of each dimension
# (fraction_ranks; the paper used about a tenth).
SETTINGS = {
    "embedded": dict(n_subnetworks=40, rank=12, epochs=20, lr=0.01, lr_decay_every=2, warm_start_epochs=2, n_ref=10,
                     init_images=0),
    "paper": dict(n_subnetworks=100, rank_fraction=0.1, epochs=100, lr=5e-3, lr_decay_every=10, warm_start_epochs=10,
                  n_ref=10, init_images=0),
}


def fraction_ranks(shapes: dict[str, tuple[int, ...]], fraction: float = 0.1) -> dict[str, tuple[int, ...]]:
    """Tucker ranks about `fraction` of each dimension (at least 1), per tensor; 0.1 is the paper's choice."""
    return {n: tuple(max(1, round(fraction * s)) for s in shape) for n, shape in shapes.items()}


# --- the embedded model ---------------------------------------------------------------------------
def digits(seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """scikit-learn's bundled 8×8 digits scaled to [0, 1], and a fixed random train/test split.

    Returns images (1797, 1, 8, 8), labels (1797,), and a bool mask (1797,) of the training images
    (two thirds).
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16
    labels = torch.tensor(data.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    train = torch.zeros(len(labels), dtype=torch.bool)
    train[order[: 2 * len(labels) // 3]] = True
    return images, labels, train


class DigitsCNN(nn.Module):
    """Three conv blocks (conv 3×3, ReLU; the last two max-pool) and a linear classifier over 10 digits."""

    def __init__(self, channels: tuple[int, int, int] = (16, 32, 32)):
        super().__init__()
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.ReLU()),
            nn.Sequential(nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
            nn.Sequential(nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        )
        self.classifier = nn.Linear(c3 * 2 * 2, 10)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, 1, 8, 8) -> logits (B, 10)
        return self.classifier(self.features(x).flatten(1))


def digits_model(
    channels: tuple[int, int, int] = (16, 32, 32), epochs: int = 60, batch_size: int = 64, lr: float = 3e-3,
    seed: int = 0, device: str | torch.device = "cpu", cache: str | os.PathLike | None = None, progress: bool = True,
    shipped: bool = True,
) -> tuple[DigitsCNN, dict]:
    """The digits CNN trained with AdamW on the training split: the one shipped with l3d for these settings
    (`l3d.experiments.weights`; shipped=False: not that one), else the one cached by settings, else trained now
    (seconds on a CPU) and cached.

    Returns the model (eval mode, on `device`, weights frozen: L3D takes gradients by its own means) and its
    record (settings, test accuracy, origin: "shipped", "cache" or "trained").
    """
    settings = dict(channels=list(channels), epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)

    def train() -> tuple[DigitsCNN, dict]:
        images, labels, split = digits(seed)
        torch.manual_seed(seed)
        model = DigitsCNN(tuple(channels)).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        x, y = images[split].to(device), labels[split].to(device)
        generator = torch.Generator().manual_seed(seed)
        for _ in tqdm(range(epochs), desc="digits CNN", disable=not progress):
            for idx in torch.randperm(len(y), generator=generator).split(batch_size):
                loss = F.cross_entropy(model(x[idx.to(device)]), y[idx.to(device)])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(images[~split].to(device)).argmax(1).cpu() == labels[~split]).float().mean().item()
        return model, {"test_accuracy": accuracy}

    model, record = embedded_model("digits-cnn", settings, lambda: DigitsCNN(tuple(channels)), train, cache, shipped,
                                   str(device))
    return model.to(device).eval().requires_grad_(False), record


# --- the paper's model and data -------------------------------------------------------------------
class ImageNetLogits:
    """forward(model, images): resize CIFAR-sized images in [0, 1] to `size`, normalize as ImageNet, logits."""

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, size: int = 224):
        self.size = size

    def __call__(self, model: nn.Module, images: Tensor) -> Tensor:
        x = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
        mean = torch.tensor(self.MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.STD, device=x.device).view(1, 3, 1, 1)
        return model((x - mean) / std)


def _torch_hub_checkpoints() -> Path:
    """torchvision's weight cache as the environment sets it now: $TORCH_HOME/hub/checkpoints."""
    home = os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch"
    return Path(home) / "hub" / "checkpoints"


def _weights_needed():
    """torchvision's MobileNet-v3-small ImageNet weights: (weights enum, file expected, what to do when it is
    missing)."""
    from torchvision.models import MobileNet_V3_Small_Weights

    weights = MobileNet_V3_Small_Weights.IMAGENET1K_V1
    file = _torch_hub_checkpoints() / Path(weights.url).name
    how = (f"torchvision's MobileNet-v3-small ImageNet weights, expected at {file}: download {weights.url} "
           f"on a machine with network access and put it there (or set TORCH_HOME to a folder whose "
           f"hub/checkpoints holds it)")
    return weights, file, how


def _cifar100_needed(root: str | os.PathLike | None = None, train: bool = False):
    """CIFAR-100: (folder, whether the split is there, what to do when it is missing)."""
    root = Path(root or cache_dir() / "cifar-100")
    present = (root / "cifar-100-python" / ("train" if train else "test")).exists()
    how = (f"CIFAR-100, expected under {root}/cifar-100-python: download {CIFAR100_URL} on a machine with network "
           f"access and unpack it into {root} (or pass root=... to cifar100)")
    return root, present, how


def paper_model(device: str | torch.device = "cpu") -> tuple[nn.Module, list[str]]:
    """MobileNet-v3-small with torchvision's ImageNet weights (eval mode, weights frozen), and the 1000 ImageNet
    class names.

    Offline, missing weights and a missing CIFAR-100 training split (at its default place, which source='paper' reads
    next) are named in one error.
    """
    from torchvision.models import mobilenet_v3_small

    weights, file, how = _weights_needed()
    if offline():
        _, cifar_here, cifar_how = _cifar100_needed(train=True)   # what source='paper' reads next (notebook 06)
        missing = [text for text, here in ((how, file.exists()), (cifar_how, cifar_here)) if not here]
        if missing:
            raise missing_resources("source='paper'", missing)
    try:
        state = torch.hub.load_state_dict_from_url(weights.url, model_dir=str(file.parent), progress=False,
                                                   map_location="cpu")
    except OSError as err:  # URLError and friends when the download fails
        raise missing_resources("source='paper'", [how + f" (underlying error: {err})"]) from None
    model = mobilenet_v3_small()
    model.load_state_dict(state)
    return model.to(device).eval().requires_grad_(False), list(weights.meta["categories"])


def cifar100(n_images: int = 10_000, train: bool = False, root: str | os.PathLike | None = None, seed: int = 0):
    """`n_images` CIFAR-100 images in [0, 1] drawn at random from a split, with labels and class names.

    Returns images (n, 3, 32, 32), labels (n,), class names (100). The data set lives in
    `root` (default: <l3d cache>/cifar-100) and is downloaded there unless offline.
    """
    from torchvision.datasets import CIFAR100

    root, present, how = _cifar100_needed(root, train)
    if offline() and not present:
        raise missing_resources("source='paper'", [how])
    try:
        data = CIFAR100(str(root), train=train, download=not present)
    except (OSError, RuntimeError) as err:
        raise missing_resources("source='paper'", [how + f" (underlying error: {err})"]) from None
    pixels = torch.tensor(data.data).permute(0, 3, 1, 2).float() / 255  # (N, 3, 32, 32)
    labels = torch.tensor(data.targets)
    if not 1 <= n_images <= len(labels):
        raise ValueError(f"n_images must lie in 1..{len(labels)}, got {n_images}")
    pick = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n_images]
    return pixels[pick], labels[pick], list(data.classes)


# --- notebook 06: its settings, its model and images, reading the subnetworks ---------------------
def block_shapes(source: str) -> dict[str, tuple[int, ...]]:
    """Shapes of the source's decomposed tensors, read off its architecture (built on the meta device: no weights)."""
    from torchvision.models import mobilenet_v3_small

    with torch.device("meta"):
        model, tensors = (DigitsCNN(), DIGITS_BLOCK) if source == "embedded" else (mobilenet_v3_small(), PAPER_BLOCK)
    return {n: tuple(p.shape) for n, p in select_tensors(model, tensors).items()}


@dataclass(frozen=True)
class CNNExperiment(ModelExperiment):
    """Notebook 06's settings: the embedded model's training epochs (model_epochs; retrain_model: train it on this
    machine rather than load the one shipped for these settings), the paper source's n_images
    decomposition and n_test_images held-out images (the digits source uses its own split), Tucker ranks (`rank`
    for every mode, else `rank_fraction` of each dimension), init_images images whose gradients start the
    subnetworks (0: random start), n_show subnetworks shown and n_other_images, the held-out images that are the
    "other" samples of the causal selectivity (all of them when there are fewer), resampled_every, the
    `resample_every` of a second decomposition beside the paper's loss (0: none), and revived, the `revive` weight of
    a third (0: none). The L3D batch is `batch_size`. None: SETTINGS[source]."""

    DEFAULTS: ClassVar[dict[str, dict]] = SETTINGS

    out_dir: str = "figures/06_cnn"
    n_top: int = bounded(8, low=1)
    n_logits: int = bounded(3, low=1)
    model_epochs: int = bounded(60, low=1)
    retrain_model: bool = False
    n_images: int = bounded(10_000, low=2)
    n_test_images: int = bounded(2_000, low=1)
    rank: int | None = bounded(None, low=1)
    rank_fraction: float | None = bounded(None, low=0, high=1, open_low=True)
    init_images: int = bounded(None, low=0)
    n_show: int = bounded(12, low=1)
    n_other_images: int = bounded(200, low=1)
    resampled_every: int = bounded(1, low=0)
    revived: float = bounded(1.0, low=0)

    def check(self) -> list[str]:
        problems = super().check()
        if self.rank is None and self.rank_fraction is None:
            problems.append("set rank (an int) or rank_fraction (a fraction of each dimension)")
        return problems

    def model_options(self) -> dict:
        """`digits_model`'s settings for the embedded model."""
        return dict(epochs=self.model_epochs, seed=self.seed)

    def l3d_config(self, parameters: Mapping[str, Any]) -> L3DConfig:
        """KL between class distributions; Tucker rank `rank` (it wins), else `rank_fraction` of each dimension
        (`fraction_ranks`); 16 batches per gradient pass (all training images when fewer), 256 images per
        vectorized gradient computation; init_images > 0 starts from the gradients of the first init_images images."""
        rank = self.rank if self.rank is not None else fraction_ranks(block_shapes(self.source), self.rank_fraction)
        config = L3DConfig.from_parameters(parameters, divergence="kl", rank=rank, gradient_chunk_size=256,
                                           init="gradients" if self.init_images else "random",
                                           init_samples=self.init_images or None)
        return config.replace(chunk_size=16 * config.batch_size)


@dataclass
class ModelAndImages:
    """The model to decompose, which of its tensors and how to call it, and its images."""

    model: nn.Module
    tensors: str                                       # the decomposed block's tensors (a glob)
    forward: Callable[[nn.Module, Tensor], Tensor] | None   # None: model(images)
    train: Tensor                                      # (n, channels, height, width) decomposition images
    test: Tensor                                       # held-out images the subnetworks are read on
    test_labels: Tensor                                # (n_test,) their classes
    class_names: list[str]                             # of the labels
    output_names: list[str]                            # of the model's logits
    note: str                                          # where the model comes from


def load_model_and_images(settings: CNNExperiment, device: str | torch.device = "cpu") -> ModelAndImages:
    """The source's model and images. Embedded: `digits_model` (seed `seed`; the shipped one unless
    retrain_model) and the digits split of that seed
    (train: decomposition, the rest held out). Paper: MobileNet-v3-small and n_images + n_test_images CIFAR-100
    training images (seed `seed`), the first n_images decomposed."""
    s = settings
    if s.source == "embedded":
        model, record = digits_model(**s.model_options(), device=device, shipped=not s.retrain_model)
        images, labels, train = digits(s.seed)
        names = [str(d) for d in range(10)]
        note = f"digits CNN: test accuracy {record['test_accuracy']:.3f} ({ORIGINS[record['origin']]})"
        return ModelAndImages(model, DIGITS_BLOCK, None, images[train], images[~train], labels[~train], names, names,
                              note)
    model, output_names = paper_model(device)
    images, labels, class_names = cifar100(s.n_images + s.n_test_images, train=True, seed=s.seed)
    n = s.n_images
    return ModelAndImages(model, PAPER_BLOCK, ImageNetLogits(224), images[:n], images[n:], labels[n:], class_names,
                          output_names, "MobileNet-v3-small (ImageNet weights) on CIFAR-100")


def class_purity(top: Tensor, labels: Tensor, p_act: Tensor, n_classes: int,
                 threshold: float = 0.8) -> tuple[Tensor, Tensor, dict]:
    """Label purity and main class of every subnetwork's top images (`subnetworks.label_purity`; top: (C, n_top)
    indices, labels: (N,)), and for metrics.json: mean_class_purity over the live subnetworks (p_act > 0),
    classes_owned (classes a live subnetwork serves with purity ≥ threshold) and n_classes."""
    pure, label = label_purity(top, labels)
    live = torch.nonzero(p_act > 0).flatten()
    owned = owned_labels(pure[live], label[live], threshold)
    return pure, label, {"mean_class_purity": pure[live].mean().item(), "classes_owned": len(owned),
                         "n_classes": n_classes}


def decompose_variant(loaded: ModelAndImages, settings: CNNExperiment, test_inputs: Tensor,
                      **changes: Any) -> dict:
    """The notebook's decomposition again with some L3D settings changed (our additions beside the paper's loss,
    e.g. resample_every=1 or revive=1.0), for metrics.json: the changed settings, `fit_metrics` (with the history)
    and `class_purity`'s numbers on the held-out `test_inputs`."""
    run = decompose(loaded.model, loaded.train.to(test_inputs.device), loaded.tensors,
                    settings.l3d.replace(**changes), forward=loaded.forward)
    _, top = held_out_top(run, test_inputs, settings)
    p_act = torch.tensor(run.history.p_act[-1])
    return {**changes, **fit_metrics(run, test_inputs),
            **class_purity(top, loaded.test_labels, p_act, len(loaded.class_names))[2]}


def shown_subnetworks(pure: Tensor, p_act: Tensor, n_show: int) -> list[int]:
    """The n_show live subnetworks (p_act > 0) of highest purity `pure` (C,), purest first (ties: lower index first)."""
    live = torch.nonzero(p_act > 0).flatten()
    return live[pure[live].argsort(descending=True, stable=True)][:n_show].tolist()


def subnetwork_rows(loaded: ModelAndImages, decomposition: Decomposition, top: Tensor, shown: list[int], p_act: Tensor,
                    pure: Tensor, label: Tensor, inputs: Tensor, n_logits: int = 3) -> list[dict]:
    """One row per shown subnetwork: P_act, class purity (`pure`), main class (`label`) and the n_logits logits
    that moving along its direction changes most, averaged over its top images (sign: up or down as δ grows).
    top: (C, n_top) indices into `inputs` (the held-out images on the model's device)."""
    rows = []
    for k in shown:
        values, index = affected_outputs(loaded.model, decomposition, k, inputs[top[k]],
                                         forward=loaded.forward or default_forward, n=n_logits)
        logit_text = ", ".join(f"{loaded.output_names[i]} ({v:+.2f})" for v, i in zip(values.tolist(), index.tolist()))
        rows.append({"subnetwork": k, "P_act": f"{p_act[k]:.3f}", "class purity": f"{pure[k]:.2f}",
                     "main class": loaded.class_names[label[k]], "top logits": logit_text})
    return rows
