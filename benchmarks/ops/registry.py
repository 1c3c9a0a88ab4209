"""The benchmarked operators: one case module per operator (its shapes, its case builder, its targets, its tiny case
for the per-call overhead), found in this package — every module that defines ``OP`` — and run and reported in the
order of their module names. A new operator gets a module like :mod:`benchmarks.ops.rad`; nothing here lists it."""

from __future__ import annotations

import importlib
import os
import pkgutil
from types import ModuleType

from .common import Case

#: the package's own machinery, not operators (some import this module: they are not imported from here)
TOOLS = frozenset({"cli", "common", "gpu_time", "overhead", "registry", "report", "timing"})


def _case_modules() -> tuple[ModuleType, ...]:
    """The package's modules but :data:`TOOLS`, by module name; each must define ``OP``."""
    names = sorted(
        i.name
        for i in pkgutil.iter_modules([os.path.dirname(__file__)])
        if not i.name.startswith("_") and i.name not in TOOLS
    )
    mods = tuple(importlib.import_module(f"{__package__}.{name}") for name in names)
    for m in mods:
        if not hasattr(m, "OP"):
            raise ImportError(f"{m.__name__}: a case module of the op benchmark must define OP (or be in TOOLS)")
    return mods


OPS = _case_modules()

#: Targets, forward+backward, per device: (op, what, threshold), in :data:`OPS` order. ``x_eager``/``x_compile``/
#: ``x_cupy``: mmh_ext's speed-up; ``memcpy_fraction``: achieved bandwidth / copy bandwidth; ``peak_vs_eager``:
#: mmh_ext's peak memory must not exceed eager's.
TARGETS: dict[str, list[tuple[str, str, float]]] = {
    device: [(m.OP, what, threshold) for m in OPS for what, threshold in m.TARGETS.get(device, [])]
    for device in ("cuda", "cpu")
}


def cases(quick: bool, device: str) -> list[Case]:
    """Every operator's cases (``quick``: two shapes each), in :data:`OPS` order."""
    return [c for m in OPS for c in m.cases(quick, device)]


def op_names() -> list[str]:
    return [m.OP for m in OPS]
