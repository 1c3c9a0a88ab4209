"""The benchmarked operators, in the order they run and are reported: one case module per operator (its shapes,
its case builder, its targets). A new operator gets a module like :mod:`benchmarks.ops.rad` and a place in
:data:`OPS`."""
from __future__ import annotations

from . import dad, inject, rad
from .common import Case

OPS = (rad, dad, inject)

#: Targets, forward+backward, per device: (op, what, threshold), in :data:`OPS` order. ``x_eager``/``x_compile``/
#: ``x_cupy``: mmh_ext's speed-up; ``memcpy_fraction``: achieved bandwidth / copy bandwidth; ``peak_vs_eager``:
#: mmh_ext's peak memory must not exceed eager's.
TARGETS: dict[str, list[tuple[str, str, float]]] = {
    device: [(m.OP, what, threshold) for m in OPS for what, threshold in m.TARGETS.get(device, [])]
    for device in ("cuda", "cpu")}


def cases(quick: bool, device: str) -> list[Case]:
    """Every operator's cases (``quick``: two shapes each), in :data:`OPS` order."""
    return [c for m in OPS for c in m.cases(quick, device)]


def op_names() -> list[str]:
    return [m.OP for m in OPS]
