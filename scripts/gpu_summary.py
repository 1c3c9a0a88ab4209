"""``python scripts/gpu_summary.py`` runs :mod:`benchmarks.gpu_check.summary` (see there; the same arguments)."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        from benchmarks.gpu_check.summary import main
    except ModuleNotFoundError as exc:  # not installed (or installed before the package existed): the checkout's
        if not (exc.name or "").startswith("benchmarks"):
            raise
        sys.path.insert(0, os.path.dirname(here))
        from benchmarks.gpu_check.summary import main
    raise SystemExit(main())
