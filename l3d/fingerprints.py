"""What a result depends on besides its settings, as short JSON values: the inputs and the model.

Checkpoints and run.json record them, and resuming compares them (`l3d.fit`): a changed weight, tensor selection,
divergence or input is refused by name instead of training on from other gradients.
"""
from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from .gradients import GradientCollector


def _hash_bytes(digest, tensor: Tensor) -> None:
    """Feed the bytes of `tensor` (in row-major order) to a hashlib digest."""
    flat = tensor.detach().contiguous().view(-1)
    for part in (flat.view(torch.uint8) if flat.numel() else flat.new_empty(0, dtype=torch.uint8)).split(1 << 26):
        digest.update(part.cpu().numpy())


def fingerprint(inputs: Tensor) -> str:
    """dtype, shape and SHA-256 of the bytes of `inputs`, e.g. 'torch.float32[1000, 5] sha256:…'."""
    digest = hashlib.sha256()
    _hash_bytes(digest, inputs)
    return f"{inputs.dtype}{list(inputs.shape)} sha256:{digest.hexdigest()}"


def gradient_settings(collector: GradientCollector) -> dict:
    """Everything the collector's per-sample gradients depend on besides the inputs, as JSON values: the tensors
    decomposed (names, in order), divergence, reference, engine, sequence, and the model itself, as `fingerprint`
    of every decomposed tensor ("model") and one SHA-256 over the names, dtypes, shapes and bytes of the rest of
    its state_dict, its other parameters and buffers ("rest of model"). (A `forward` function is not
    fingerprinted: resuming trusts that it is the same.)"""
    rest = hashlib.sha256()
    for name, tensor in collector.model.state_dict().items():
        if name not in collector.params:
            rest.update(f"{name} {tensor.dtype}{list(tensor.shape)};".encode())
            _hash_bytes(rest, tensor)
    return {
        "tensors": list(collector.names), "divergence": collector.divergence, "reference": collector.reference,
        "engine": collector.engine, "sequence": collector.sequence,
        "model": {name: fingerprint(p) for name, p in collector.params.items()},
        "rest of model": f"sha256:{rest.hexdigest()}",
    }
