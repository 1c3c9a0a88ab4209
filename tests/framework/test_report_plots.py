"""Figures and progress lines: the benchmarks' plots from small results dicts, `mmh report`'s readable comparison,
val curves, and the per-run progress line (ETA from given times)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from mmh.benchmarks.jobs import Progress, format_duration, format_progress
from mmh.evaluation.plots import plot_methods, plot_sweep
from mmh.evaluation.report import make_report


def _png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, path


def test_format_duration_and_progress_line():
    assert format_duration(12.4) == "12s" and format_duration(245) == "4m05s" and format_duration(3723) == "1h02m03s"
    assert format_duration(math.inf) == "?"
    # 5 of 24 runs in 62 s: the remaining 19 at 12.4 s each = 235.6 s
    assert (
        format_progress(5, 24, 62.0, "synthetic_motion/rad s1")
        == "[ 5/24 runs] synthetic_motion/rad s1 done; elapsed 1m02s, ETA 3m56s"
    )
    assert format_progress(24, 24, 100.0) == "[24/24 runs] elapsed 1m40s, ETA 0s"
    assert format_progress(0, 3, 0.0).endswith("ETA ?")
    with pytest.raises(ValueError, match="done <= total"):
        format_progress(4, 3, 1.0)


def test_progress_counts_with_a_given_clock():
    times = iter([100.0, 110.0, 130.0, 160.0])  # start, then three finished runs
    lines: list[str] = []
    p = Progress(4, lines.append, clock=lambda: next(times))
    p.step("a s0")
    p.step("b s0")
    assert p.step("c s0") == "[3/4 runs] c s0 done; elapsed 1m00s, ETA 20s"
    assert lines[0] == "[1/4 runs] a s0 done; elapsed 10s, ETA 30s" and len(lines) == 3


def test_plot_methods_and_sweep_write_pngs(tmp_path: Path):
    panels = {
        "synthetic_motion: accuracy": {
            "teacher": [0.83, 0.82, 0.81],
            "baseline": [0.67, 0.68, 0.66],
            "rad_attention": [0.675, 0.672, 0.68],
        },
        "ACER": {"teacher": [0.0, 0.0, 0.0], "baseline": [0.25, 0.22, 0.27]},
    }
    _png(plot_methods(panels, tmp_path / "m.png", title="main job"))
    _png(
        plot_sweep(
            {
                "two-stream": {"0": [0.7, 0.71], "0.1": [0.48, 0.5], "void": [0.56, 0.57]},
                "hallucination": {"0": [0.57, 0.58], "0.1": [0.57, 0.58], "void": [0.57, 0.58]},
            },
            tmp_path / "s.png",
        )
    )
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_methods({"empty": {}}, tmp_path / "e.png")


def test_benchmark_figures_from_small_results(tmp_path: Path):
    from mmh.benchmarks.main_job import MMH_METHODS, plot_mmh_results
    from mmh.benchmarks.thesis import MCL_METHODS, STEP_VARIANTS, plot_thesis_results

    methods = {m: {"accuracy": [0.6 + 0.01 * i, 0.62 + 0.01 * i]} for i, m in enumerate(MMH_METHODS)}
    anti = {m: {"acer": [0.2, 0.25]} for m in ("teacher", "baseline", "rad", "dad")}
    _png(plot_mmh_results(methods, anti, tmp_path / "mmh.png"))
    thesis = {
        m: {"accuracy": [0.5, 0.55]}
        for m in (*STEP_VARIANTS, "hoffman", "admd", "admd_naive", "moddrop", "two_stream_step2")
    }
    grid = ["0", "0.001", "void"]
    a = {
        "mcl": {
            m: {"rgb": [0.6, 0.62], "depth": [0.8, 0.81], "sum": [0.9, 0.91], "oracle": [0.99, 0.98]}
            for m in MCL_METHODS
        },
        "noise_sweep": {"two-stream (step 2)": {g: [0.7, 0.6] for g in grid}},
        "switch_signal": {"admd": {g: [0.1, 0.2] for g in grid}},
    }
    paths = plot_thesis_results(thesis, a, tmp_path)
    assert set(paths) == {"comparison", "noise_sweep", "switch_signal"}
    for p in paths.values():
        _png(p)


def _fake_run(root: Path, dataset: str, method: str, seed: int, acc: float, val: bool) -> Path:
    d = root / f"{dataset}-{method}-s{seed}"
    (d / "stages" / "student").mkdir(parents=True)
    res = {
        "method": method,
        "seed": seed,
        "dataset": dataset,
        "status": "done",
        "final": {"accuracy": acc},
        "stages": {"student": {"kind": "x", "source": "trained", "metrics": {"accuracy": acc}}},
    }
    (d / "results.json").write_text(json.dumps(res))
    fields = ["epoch", "step", "loss", "train_accuracy"] + (["val_accuracy"] if val else [])
    with open(d / "stages" / "student" / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for e in range(3):
            row = {"epoch": e, "step": 10 * (e + 1), "loss": 1.0 / (e + 1), "train_accuracy": 0.5 + 0.1 * e}
            if val:
                row["val_accuracy"] = 0.45 + 0.1 * e
            w.writerow(row)
    return d


def test_report_comparison_panels_per_dataset_and_val_curves(tmp_path: Path, monkeypatch):
    import mmh.evaluation.plots as plots
    import mmh.evaluation.report as report

    runs = [
        _fake_run(tmp_path, ds, m, s, 0.5 + 0.1 * s, val=(ds == "synthetic_antispoof"))
        for ds in ("synthetic_motion", "synthetic_antispoof")
        for m in ("baseline", "rad_attention")
        for s in (0, 1)
    ]
    seen: dict[str, object] = {}
    real = plots.plot_methods
    monkeypatch.setattr(
        plots, "plot_methods", lambda panels, path, **kw: seen.update(panels=panels) or real(panels, path, **kw)
    )
    paths = make_report(runs, tmp_path / "out")
    for key in ("curves", "comparison"):
        _png(paths[key])
    # one panel per dataset (no dataset names crammed into the tick labels), the seeds' values as dots
    assert seen["panels"] == {
        "synthetic_motion": {"baseline": [0.5, 0.6], "rad_attention": [0.5, 0.6]},
        "synthetic_antispoof": {"baseline": [0.5, 0.6], "rad_attention": [0.5, 0.6]},
    }

    # the val metric is drawn where the runs have it
    import matplotlib.pyplot as plt

    drawn: list[list[str]] = []
    monkeypatch.setattr(
        plt.Figure, "savefig", lambda fig, *a, **k: drawn.append([ln.get_label() for ax in fig.axes for ln in ax.lines])
    )
    plots.plot_curves(report.collect_runs(runs), tmp_path / "c.png")
    labels = drawn[0]
    assert sum(lab.endswith(" val") for lab in labels) == 4  # the four antispoof runs (val split) only
    assert sum(lab.endswith(" train") for lab in labels) == 8


def _capture_figures(monkeypatch) -> list:
    """Keep every figure that is saved (and still write it), to read back what was drawn."""
    import matplotlib.pyplot as plt

    figs: list = []
    real = plt.Figure.savefig
    monkeypatch.setattr(plt.Figure, "savefig", lambda fig, *a, **k: figs.append(fig) or real(fig, *a, **k))
    return figs


def test_plot_methods_draws_the_means_stds_and_seeds_with_readable_ticks(tmp_path: Path, monkeypatch):
    import statistics

    import numpy as np
    from matplotlib.collections import LineCollection, PathCollection

    figs = _capture_figures(monkeypatch)
    names = ["teacher", "baseline", "rad", "dad", "rad_dad", "kd", "rad_attention", "rad_self"]
    seeds = {m: [0.6 + 0.013 * i, 0.64 + 0.011 * i, 0.59 + 0.017 * i] for i, m in enumerate(names)}
    plot_methods(
        {"synthetic_motion: accuracy": seeds, "ACER": {"teacher": [0.1], "rad": [0.3, 0.2]}}, tmp_path / "m.png"
    )
    fig = figs[-1]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the figure was closed after saving: lay it out again at the saved size
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax, panel in zip(fig.axes, ({k: seeds[k] for k in names}, {"teacher": [0.1], "rad": [0.3, 0.2]})):
        methods = list(panel)
        mean = [statistics.fmean(v) for v in panel.values()]  # by hand: mean and sample std over seeds
        sd = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in panel.values()]
        (container,) = ax.containers  # the errorbar: (line through the means, caps, (bars,))
        line, _, (bars,) = container
        np.testing.assert_allclose(np.asarray(line.get_xdata(), float), np.arange(len(methods)))
        np.testing.assert_allclose(np.asarray(line.get_ydata(), float), mean, rtol=1e-12)
        assert isinstance(bars, LineCollection)
        segs = sorted((float(sg[0][0]), float(min(sg[:, 1])), float(max(sg[:, 1]))) for sg in bars.get_segments())
        np.testing.assert_allclose(segs, [(i, m - e, m + e) for i, (m, e) in enumerate(zip(mean, sd))], atol=1e-12)
        dots = np.concatenate([c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)])
        want = [(i, v) for i, vals in enumerate(panel.values()) for v in vals]
        assert len(dots) == len(want)
        for (x, y), (i, v) in zip(dots, want):  # each seed a dot, beside its method's tick
            assert abs(x - i) < 0.25 and y == v
        ticks = ax.get_xticklabels()
        assert [t.get_text() for t in ticks] == methods
        # readable: the labels are parallel strips (rotated by theta, anchored at their ticks) that do not overlap:
        # the distance between neighbouring strips, tick spacing * sin(theta), is at least the text's height
        spacing = ax.transData.transform((1, 0))[0] - ax.transData.transform((0, 0))[0]
        for t in ticks:
            theta = np.deg2rad(t.get_rotation())
            _, height, _ = renderer.get_text_width_height_descent(t.get_text(), t.get_fontproperties(), ismath=False)
            assert 0 < theta < np.pi / 2 and spacing * np.sin(theta) >= height, (t.get_text(), spacing, height)
        assert ticks[0].get_window_extent(renderer).x0 >= 0  # the first label is not cut off at the left
    # an error bar of exactly the given std when one is passed
    plot_methods({"p": {"a": [0.5, 0.7]}}, tmp_path / "s.png", std={"p": {"a": 0.05}})
    _, _, (bars,) = figs[-1].axes[0].containers[0]
    np.testing.assert_allclose(sorted(bars.get_segments()[0][:, 1]), [0.55, 0.65])


def test_plot_sweep_draws_the_means_and_seeds(tmp_path: Path, monkeypatch):
    import numpy as np
    from matplotlib.collections import PathCollection

    figs = _capture_figures(monkeypatch)
    curves = {
        "two-stream": {"0": [0.7, 0.72], "0.1": [0.48, 0.5], "void": [0.56, 0.6]},
        "hallucination": {"0": [0.57, 0.58], "0.1": [0.55, 0.58], "void": [0.5, 0.57]},
    }
    plot_sweep(curves, tmp_path / "s.png")
    ax = figs[-1].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.1", "void"]
    lines = {c.get_label(): c[0] for c in ax.containers}  # errorbar containers: (line through the means, ...)
    dots = np.concatenate([c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)])
    for label, curve in curves.items():
        means = [sum(v) / 2 for v in curve.values()]
        np.testing.assert_allclose(np.asarray(lines[label].get_ydata(), float), means, rtol=1e-12)
        for i, vals in enumerate(curve.values()):
            for v in vals:
                assert any(abs(x - i) < 0.2 and y == v for x, y in dots)


def test_plot_methods_draws_paired_differences_with_their_intervals(tmp_path: Path, monkeypatch):
    import numpy as np

    from mmh.benchmarks.stats import paired_comparison

    figs = _capture_figures(monkeypatch)
    base = [0.60, 0.62, 0.61, 0.63]
    comps = {
        "rad": paired_comparison([0.63, 0.64, 0.64, 0.66], base, vs="baseline"),  # every seed +2..+3: excludes 0
        "dad": paired_comparison([0.61, 0.61, 0.63, 0.62], base, vs="baseline"),  # straddles 0
        "one": {"vs": "baseline", "diff": 0.01, "ci95": None, "p": None, "n": 1},
    }
    plot_methods({"acc": {"baseline": base}}, tmp_path / "d.png", differences={"Δ vs baseline": comps})
    ax = figs[-1].axes[1]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(comps)
    assert [line.get_ydata()[0] for line in ax.get_lines() if line.get_ydata()[0] == line.get_ydata()[-1]][-1] == 0
    for i, c in enumerate(comps.values()):
        line, _, bars = ax.containers[i]
        np.testing.assert_allclose(np.asarray(line.get_ydata(), float), [100 * c["diff"]], rtol=1e-12)
        if c["ci95"] is None:
            assert bars == ()  # no interval to draw
            continue
        (seg,) = bars[0].get_segments()
        np.testing.assert_allclose(sorted(seg[:, 1]), [100 * c["ci95"][0], 100 * c["ci95"][1]], rtol=1e-9)
    filled = [ax.containers[i][0].get_markerfacecolor() for i in range(3)]
    assert filled[0] != "white" and filled[1] == "white"  # filled only where the interval excludes 0
