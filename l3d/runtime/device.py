"""Device selection."""
from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """`"auto"` is the GPU when one is present, else the CPU; anything else is taken as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but no CUDA GPU is available; use 'cpu' or 'auto'")
    return device
