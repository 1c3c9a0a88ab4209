import pytest
import torch

import mmh_ext  # noqa: F401  (must import: a broken build fails the suite, it is never skipped)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def kernel_mode(request):
    """The CPU kernel mode of a test (parametrised indirectly; "fast" when not). A "device" run on CUDA is skipped:
    the mode selects CPU kernels only."""
    mode = getattr(request, "param", "fast")
    if mode != "fast" and "device" in request.fixturenames and request.getfixturevalue("device") != "cpu":
        pytest.skip("the kernel mode selects CPU kernels only")
    with mmh_ext.cpu_kernel_mode(mode):
        yield mode


def pytest_generate_tests(metafunc):
    """Op-tester classes (optester.OpTester): the kernel modes and the bad inputs come from the class."""
    cls = metafunc.cls
    if cls is None or not hasattr(cls, "kernel_modes"):
        return
    if "kernel_mode" in metafunc.fixturenames:
        metafunc.parametrize("kernel_mode", list(cls.kernel_modes), indirect=True)
    if "bad_input" in metafunc.fixturenames:
        cases = list(cls.bad_inputs)
        metafunc.parametrize("bad_input", cases, ids=[f"{i}-{c[2]}" for i, c in enumerate(cases)])
