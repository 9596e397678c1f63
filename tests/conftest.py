"""Shared fixtures: the `device` parametrization of the op tests.

"cpu" always runs; "cuda" runs only where torch sees a GPU (it is skipped with
reason "CUDA not available" otherwise). On cuda the op tests also compare the
CUDA kernels against the CPU kernels.
"""
import pytest
import torch

CUDA_AVAILABLE = torch.cuda.is_available()

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not CUDA_AVAILABLE, reason="CUDA not available")),
]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture
def restore_threads():
    """Restores torch's intra-op thread count after a test that changes it."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
