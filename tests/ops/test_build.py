"""Build metadata, the info command, and the error when the compiled library is missing or stale."""

import subprocess
import sys

import pytest
import torch

import mmh_ext
from mmh_ext import _build
from mmh_ext.testing import operators


def test_build_info_matches_installed_torch():
    assert mmh_ext.BUILD_INFO["torch_version"] == torch.__version__
    assert mmh_ext.BUILD_INFO["cpu_kernels"] == "1"
    assert mmh_ext.BUILD_INFO["cuda_kernels"] in ("0", "1")


def test_info_command():
    out = subprocess.run([sys.executable, "-m", "mmh_ext.info"], capture_output=True, text=True, check=True).stdout
    assert "CPU kernels: yes" in out and "rad_forward" in out and torch.__version__ in out


def test_every_operator_is_complete():
    """Each operator the library registers (read from the dispatcher, no list kept here) has a CPU kernel, a CUDA
    kernel exactly when the build has CUDA kernels (or is a composite of the others), the Autocast kernels (define_op,
    csrc/library.h), a fake (meta) implementation for torch.compile, and each forward op its autograd kernel."""
    ops = operators()
    assert {"rad_forward", "dad_forward", "cross_stream_inject"} <= set(ops), ops  # the registry is read, not empty
    has_cuda = mmh_ext.BUILD_INFO["cuda_kernels"] == "1"
    for op in ops:
        name = f"mmh_ext::{op}"
        if torch._C._dispatch_has_kernel_for_dispatch_key(name, "CompositeExplicitAutograd"):
            pass  # a composite of other mmh_ext ops (rad_loss): it runs where they have kernels
        else:
            assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU"), op
            assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA") == has_cuda, op
        for key in ("AutocastCPU", "AutocastCUDA", "Meta"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(name, key), (op, key)
        if not op.endswith("_backward"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "Autograd"), op


def test_test_hooks_are_out_of_the_public_namespace():
    """The test-only hooks live in torch.ops.mmh_ext_testing; torch.ops.mmh_ext holds the operators and build_info."""
    public = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith("mmh_ext::")]
    assert public and not [n for n in public if n.split("::")[1].startswith("_")], public
    assert {"mmh_ext::build_info"} == set(public) - {f"mmh_ext::{op}" for op in operators()}
    assert set(operators("mmh_ext_testing")) == set()  # hooks take and return no tensors
    hooks = {n for n in torch._C._dispatch_get_all_op_names() if n.startswith("mmh_ext_testing::")}
    assert hooks == {"mmh_ext_testing::set_cpu_kernel_mode", "mmh_ext_testing::rad_cpu_fused_passes"}


def test_missing_library_gives_one_clear_error(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(_build.importlib, "import_module", missing)
    with pytest.raises(_build.MmhExtBuildError, match="not built") as e:
        _build.load()
    assert "pip install --no-build-isolation -e ." in str(e.value)


def test_library_for_another_torch_gives_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "0.0.1")
    with pytest.raises(_build.MmhExtBuildError, match="built for torch .* but torch 0.0.1 is installed"):
        _build.load()


def test_unloadable_library_gives_one_clear_error(monkeypatch):
    def broken(name):
        raise ImportError("undefined symbol: _ZN3c10...")

    monkeypatch.setattr(_build.importlib, "import_module", broken)
    with pytest.raises(_build.MmhExtBuildError, match="another torch"):
        _build.load()


def test_import_without_library_in_a_fresh_interpreter(tmp_path):
    """A copy of the Python package without the compiled file: `import mmh_ext` raises MmhExtBuildError."""
    import shutil
    from pathlib import Path

    src = Path(mmh_ext.__file__).parent
    dst = tmp_path / "mmh_ext"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
        # an editable install maps mmh_ext to the checkout through a meta-path finder: take it out
        "sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        "try:\n    import mmh_ext\nexcept ImportError as e:\n    print(type(e).__name__); print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path).stdout
    assert out.startswith("MmhExtBuildError") and "pip install" in out


def test_cpu_kernel_mode_switches_and_restores():
    assert torch.ops.mmh_ext_testing.set_cpu_kernel_mode("fast") == "fast"
    with mmh_ext.cpu_kernel_mode("device"):
        assert torch.ops.mmh_ext_testing.set_cpu_kernel_mode("device") == "device"
        with mmh_ext.cpu_kernel_mode("separate"):
            assert torch.ops.mmh_ext_testing.set_cpu_kernel_mode("separate") == "separate"
        assert torch.ops.mmh_ext_testing.set_cpu_kernel_mode("device") == "device"
    assert torch.ops.mmh_ext_testing.set_cpu_kernel_mode("fast") == "fast"
    with pytest.raises(ValueError, match="mode"):
        torch.ops.mmh_ext_testing.set_cpu_kernel_mode("gpu")


def test_kernel_mode_changes_only_rad():
    """RAD's two CPU modes run different code (pooling GEMMs vs per-item kernels) and agree to rounding; DAD and the
    injection do not read the mode (their CPU kernels always run the per-item math): bit-identical."""
    x, g = torch.randn(3, 5, 7, 9, dtype=torch.float64), torch.randn(3, 5, 7, 9, dtype=torch.float64)
    others = lambda: (mmh_ext.cross_stream_inject(x, g), mmh_ext.dad_loss(x, g), mmh_ext.dad_loss(x, g, form="sp"))  # noqa
    fast = others()
    with mmh_ext.cpu_kernel_mode("device"):
        dev = others()
    assert all(torch.equal(a, b) for a, b in zip(fast, dev))
    args = [torch.randn(*s, dtype=torch.float64) for s in ((2, 3, 9, 7), (2, 4, 5, 5), (6, 3), (6,), (6, 4), (6,))]
    fast = mmh_ext.rad_loss(*args, grid=4, reduction="none")
    with mmh_ext.cpu_kernel_mode("device"):
        dev = mmh_ext.rad_loss(*args, grid=4, reduction="none")
    torch.testing.assert_close(fast, dev, rtol=1e-12, atol=1e-12)
