"""The mmh_ext operator microbenchmark: ``python -m benchmarks.ops`` (or ``python benchmarks/bench_ops.py``).

Modules: :mod:`~benchmarks.ops.rad`, :mod:`~benchmarks.ops.dad`, :mod:`~benchmarks.ops.inject` (one per operator:
its shapes, its case builder, its targets), :mod:`~benchmarks.ops.registry` (the operators in order, every case,
the targets), :mod:`~benchmarks.ops.common` (the :class:`~benchmarks.ops.common.Case` record),
:mod:`~benchmarks.ops.timing` (median time, peak memory, copy bandwidth), :mod:`~benchmarks.ops.report` (CSV rows,
printed and markdown tables, target verdicts), :mod:`~benchmarks.ops.gpu_time` (the GPU kernel time, in a separate
process) and :mod:`~benchmarks.ops.cli` (the command line). It imports mmh_ext and torch, nothing of mmh.
"""
