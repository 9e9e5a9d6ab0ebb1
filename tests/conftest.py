import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The tests' tensors are tiny: a second intra-op thread only adds synchronisation
    (many times slower when the cores are busy)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def float64():
    """Run a test in double precision (tight tolerance comparisons)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
