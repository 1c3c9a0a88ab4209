"""examples/plain_loop.py runs with mmh_ext alone and its distillation losses go down."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

pytest.importorskip("mmh_ext")
ROOT = Path(__file__).resolve().parents[2]


def test_plain_loop_runs(capsys):
    runpy.run_path(str(ROOT / "examples" / "plain_loop.py"), run_name="__main__")
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert len(lines) == 4
    first, last = lines[0], lines[-1]
    assert float(last[5]) < float(first[5])  # rad
    assert float(last[7]) < float(first[7])  # dad
