"""``python benchmarks/bench_ops.py [flags]``: the operator microbenchmark, :mod:`benchmarks.ops` (same flags as
``python -m benchmarks.ops``; see there). Kept as a script for the commands that name it (the GPU check, the docs)."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    # run as a script, this folder is sys.path[0]: its packages (ops, gpu_check) must not pass for top-level modules;
    # the checkout root holds the benchmarks package when it is not installed (or installed before it existed)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        from benchmarks.ops.cli import main
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("benchmarks"):
            raise
        sys.path.insert(0, os.path.dirname(here))
        from benchmarks.ops.cli import main
    raise SystemExit(main())
