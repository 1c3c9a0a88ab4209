"""``python -m benchmarks.gpu_check [OUT_DIR]``: the GPU check (:mod:`benchmarks.gpu_check.check`)."""

from __future__ import annotations

from .check import main

if __name__ == "__main__":
    raise SystemExit(main())
