import os

import pytest
import torch
from threadpoolctl import threadpool_limits

# NumPy's and SciPy's BLAS (OpenBLAS) run one thread too: its worker threads spin while they
# wait, and on busy cores that makes a small fit (the studies' logistic-regression probes)
# ten times slower. Child processes inherit the limit through the environment.
threadpool_limits(limits=1)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    """The tests' tensors are tiny: a second intra-op thread only adds synchronisation
    (many times slower when the cores are busy)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
    threadpool_limits(limits=1)  # a CLI run in this process (--threads) may have raised it


@pytest.fixture
def float64():
    """Run a test in double precision (tight tolerance comparisons)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
