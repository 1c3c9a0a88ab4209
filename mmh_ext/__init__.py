"""mmh_ext: the C++/CUDA operator core of mmh, as PyTorch operators.

Functional API (all differentiable, all traceable by ``torch.compile(fullgraph=True)``):

* :func:`rad_loss` — region-aware distillation: fused spatial-pyramid region logits + KL;
* :func:`cosine_discrepancy`, :func:`dad_loss` — discrepancy-aware distillation;
* :func:`cross_stream_inject` — cross-stream multiplicative residual injection ``x * relu(gate)``.

One module per operator — :mod:`mmh_ext.rad`, :mod:`mmh_ext.dad`, :mod:`mmh_ext.inject` — holds its Python API (which
defaults the arguments and calls the op: the argument checks live once, in the C++ op) and its fake (meta)
implementations; what they share is in ``mmh_ext._common``. Modules in :mod:`mmh_ext.nn`; pure-PyTorch references with
the same signatures in :mod:`mmh_ext.reference`; build information with ``python -m mmh_ext.info``. The raw operators
are ``torch.ops.mmh_ext.*``; the compiled library's test hooks are ``torch.ops.mmh_ext_testing.*``.
"""

from ._build import MmhExtBuildError
from ._build import load as _load

BUILD_INFO = _load()

from . import nn, reference  # noqa: E402
from .dad import cosine_discrepancy, dad_loss  # noqa: E402
from .inject import cross_stream_inject  # noqa: E402
from .rad import cpu_kernel_mode, rad_loss, rad_num_regions  # noqa: E402  (one module per operator)

__version__ = "0.1.0"
__all__ = [
    "BUILD_INFO",
    "MmhExtBuildError",
    "cosine_discrepancy",
    "cpu_kernel_mode",
    "cross_stream_inject",
    "dad_loss",
    "nn",
    "rad_loss",
    "rad_num_regions",
    "reference",
]
