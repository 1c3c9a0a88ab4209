"""``python -m benchmarks.ops``: the operator microbenchmark (:mod:`benchmarks.ops.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python -m benchmarks.ops"))
