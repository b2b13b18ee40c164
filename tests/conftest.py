import pytest
import torch


@pytest.fixture
def float64():
    """The test runs with float64 as the default dtype; the previous default is restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
