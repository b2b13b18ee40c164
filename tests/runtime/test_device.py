"""Device names and seeds are checked where they come in, with errors that say what would be right."""
import numpy as np
import pytest
import torch

from l3d.runtime.device import resolve_device
from l3d.runtime.validate import SEED_MAX, as_seed


def test_resolve_device_refuses_unknown_names_and_missing_gpus():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError,
                       match=r"device 'bogus' is not a torch device: use 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device("bogus")
    missing = f"cuda:{torch.cuda.device_count()}"   # one past the last GPU (cuda:0 without any)
    with pytest.raises(ValueError, match=rf"device '{missing}' asked for, but"):
        resolve_device(missing)


def test_seeds_are_ints_in_what_torchs_generators_take():
    assert as_seed("seed", np.int64(3)) == 3 and as_seed("seed", SEED_MAX) == SEED_MAX
    torch.Generator().manual_seed(SEED_MAX)   # the bound is torch's
    with pytest.raises((RuntimeError, ValueError), match="Overflow"):
        torch.Generator().manual_seed(SEED_MAX + 1)
    for bad in (2**70, -1, SEED_MAX + 1):
        with pytest.raises(ValueError, match=rf"seed must be an int in 0\.\.2\*\*64 - 1 .*, got {bad}"):
            as_seed("seed", bad)
    with pytest.raises(TypeError, match="seed must be an int, got 1.5"):
        as_seed("seed", 1.5)
