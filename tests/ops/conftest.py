import pytest
import torch

import mmh_ext  # noqa: F401  (must import: a broken build fails the suite, it is never skipped)

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=2e-4, atol=2e-5)}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
