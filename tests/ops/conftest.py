import pytest
import torch

import mmh_ext  # noqa: F401  (must import: a broken build fails the suite, it is never skipped)

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=2e-4, atol=2e-5)}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=["fast", "device"])
def kernel_mode(request):
    """Run a test with the fast CPU kernels and with the CPU emulation of the CUDA kernels (mmh_ext.cpu_kernel_mode)."""
    with mmh_ext.cpu_kernel_mode(request.param):
        yield request.param
