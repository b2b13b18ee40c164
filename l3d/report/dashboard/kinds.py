"""The three kinds of input a dashboard shows, and what each adds to the core that `collect` shares.

vectors (N, F) and images (N, channels, H, W) are one sample per input. For texts, token ids (N texts, L), every
position is a sample (sample index = text · L + position), read off the model's output at that position.

Each kind answers the same questions: the inputs and the forward that give one output row per top sample, the
default name of an output, what a subnetwork's row and a shown item add, the vocabulary, the files saved beside
data.json, and the kind's part of a subnetwork's one-line summary.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from ...runtime.atomic import write_file
from .data import IMAGES, round_values
from .measures import Forward, forward_at


class InputKind:
    """What every kind shares: one sample per input, its outputs named y0, y1, ..., nothing added."""

    name: str
    length = 1                   # samples per input
    listed = 5                   # subnetworks listed per sample on an input's page

    def __init__(self, inputs: Tensor):
        self.inputs = inputs
        self.n_items = inputs.shape[0]

    def probe(self, forward: Forward, top: Tensor) -> tuple[Tensor, Forward]:
        """The inputs of the samples `top` (n,) and a forward giving one output row per sample."""
        return self.inputs[top.to(self.inputs.device)], forward

    def output_name(self, j: int) -> str:
        """Output j's name when collect is given none."""
        return f"y{j}"

    def row(self, impact: Tensor, k: int, top: Tensor) -> dict:
        """What subnetwork k's row adds, given the impact matrix (N, C) and its top samples (n,)."""
        return {}

    def item(self, item: int) -> dict:
        """What a shown input's entry adds."""
        return {}

    def vocabulary(self, items: dict[str, dict]) -> dict[str, str] | None:
        """Each token id's text in the shown items, for texts; None for other kinds."""
        return None

    def summary(self, data: dict, row: dict) -> str:
        """What the top samples share, for the index."""
        return ""

    def save(self, folder: Path, shown: list[int]) -> None:
        """Files beside data.json for the shown inputs (sorted indices)."""


class Vectors(InputKind):
    """Input vectors (N, F): their values are shown, and the summary names the largest inputs."""

    name = "vectors"

    def item(self, item: int) -> dict:
        return {"x": round_values(self.inputs[item].detach().cpu(), 3)}

    def summary(self, data: dict, row: dict) -> str:
        x = torch.tensor([data["items"][str(s)]["x"] for s in row["top"]], dtype=torch.float32).abs().mean(0)
        features = data["feature_names"] or [f"x{i}" for i in range(len(x))]
        return "inputs " + ", ".join(features[i] for i in x.argsort(descending=True)[:2].tolist() if x[i] > 0)


class Images(InputKind):
    """Images (N, channels, H, W): the shown ones are saved as uint8 pixels in images.safetensors."""

    name = "images"

    def save(self, folder: Path, shown: list[int]) -> None:
        from safetensors.torch import save_file

        pixels = {"images": to_uint8(self.inputs[torch.tensor(shown, device=self.inputs.device)]).contiguous(),
                  "ids": torch.tensor(shown, dtype=torch.int64)}
        write_file(folder / IMAGES, lambda f: save_file(pixels, f))


class Texts(InputKind):
    """Token ids (N texts, L), a sample per position: each top sample is read at its position, its row keeps the
    impact on every token of its text, and a shown text keeps its ids (decoded once, in the vocabulary)."""

    name = "texts"
    listed = 3                   # per token

    def __init__(self, inputs: Tensor, tokens: Tensor | None, decode: Callable[[list[int]], str]):
        super().__init__(inputs)
        self.length = inputs.shape[1]
        self.tokens = (tokens if tokens is not None else inputs).detach().cpu()   # (N, L + 1) with the last target
        self.decode = decode

    def probe(self, forward: Forward, top: Tensor) -> tuple[Tensor, Forward]:
        device = self.inputs.device
        return self.inputs[(top // self.length).to(device)], forward_at(forward, (top % self.length).to(device))

    def output_name(self, j: int) -> str:
        return self.decode([j])

    def row(self, impact: Tensor, k: int, top: Tensor) -> dict:
        L = self.length
        return {"token_impact": [round_values(impact[t * L:(t + 1) * L, k], 3) for t in (top // L).tolist()]}

    def item(self, item: int) -> dict:
        return {"ids": self.tokens[item].tolist()}

    def vocabulary(self, items: dict[str, dict]) -> dict[str, str]:
        ids = sorted({i for e in items.values() for i in e["ids"]})
        return {str(i): s for i, s in token_strings(ids, self.decode, self.tokens[0, :2].tolist()).items()}

    def summary(self, data: dict, row: dict) -> str:
        length, vocabulary = data["length"], data["vocabulary"]
        targets = []
        for s in row["top"]:
            ids = data["items"][str(s // length)]["ids"]
            if s % length + 1 < len(ids):
                targets.append(vocabulary[str(ids[s % length + 1])].strip())
        return "→ " + " ".join(f"‘{t}’×{c}" for t, c in Counter(targets).most_common(3))


def input_kind(sequence: bool, inputs: Tensor, tokens: Tensor | None,
               decode: Callable[[list[int]], str] | None) -> InputKind:
    """The kind of `inputs`: texts for a sequence model's collector, else vectors (N, F) or images (N, C, H, W)."""
    if sequence:
        if decode is None:
            raise ValueError("a sequence model's dashboard needs decode (ids -> text) to show its texts")
        return Texts(inputs, tokens, decode)
    if inputs.dim() == 2:
        return Vectors(inputs)
    if inputs.dim() == 4:
        return Images(inputs)
    raise ValueError(f"inputs must be vectors (N, F), images (N, C, H, W) or token ids, "
                     f"got shape {tuple(inputs.shape)}")


def token_strings(ids: Sequence[int], decode: Callable[[list[int]], str], example: Sequence[int]) -> dict[int, str]:
    """Each token id's text, ending in the separator the tokenizer puts between tokens.

    A word-level tokenizer joins tokens with spaces (decode([a, b]) = "a b"), a subword one does not; the
    separator is read off `example`, two tokens of a real text.
    """
    a, b = int(example[0]), int(example[1])
    sep = " " if decode([a, b]) == decode([a]) + " " + decode([b]) else ""
    return {int(i): decode([int(i)]) + sep for i in ids}


def to_uint8(images: Tensor) -> Tensor:
    """Images (n, channels, H, W) as uint8; values outside [0, 1] are scaled per image to its min and max."""
    x = images.detach().float().cpu()
    if x.min() < 0 or x.max() > 1:
        lo = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
        hi = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    return (x * 255).round().clamp(0, 255).to(torch.uint8)
