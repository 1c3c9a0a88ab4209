"""The README's and the docs' result tables, generated from the results files kept in the repository.

``python -m mmh.benchmarks.tables`` rewrites every generated region of ``README.md`` and ``docs/benchmarks.md``
from ``docs/results/*.json`` (copies of benchmarks' ``results.json``); ``--check`` only reports the regions that
differ (exit status 1), which is what the test suite runs, so a number typed into a table by hand, or a results
file replaced without regenerating, fails the tests.

A region sits between two marker lines and is replaced whole:

- in ``README.md``, the snippet markers ``<!-- --8<-- [start:NAME] -->`` / ``<!-- --8<-- [end:NAME] -->`` (so that
  ``docs/benchmarks.md`` includes the same text with ``--8<-- "README.md:NAME"``);
- in the docs pages, ``<!-- results:NAME -->`` / ``<!-- /results:NAME -->``.

==========================  ==========================================================================================
region                      what
==========================  ==========================================================================================
``main-job-run``            how the main job's numbers were made: command, seeds, workers, machine, torch, wall time,
                            load (from the results file's ``record``)
``main-job-table``          the main job's table (:func:`mmh.benchmarks.main_job.format_table`)
``main-job-claims``         every claim of the main job with its paired difference, 95 % interval, p and verdict,
                            and what the baseline ensemble's values are (its members, from the results file)
``thesis-comparisons``      the thesis benchmark's paired comparisons and claims (docs/benchmarks.md)
``speed-targets``           the speed targets, met or missed, with the machine (README)
``speed-cpu``               the training-step speed table of ``mmh benchmark speed`` on the CPU and the speed targets,
                            met or missed (docs/speed.md)
==========================  ==========================================================================================
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..utils.io import read_json
from .main_job import format_table
from .speed import speed_markdown
from .stats import format_comparison, verdict

__all__ = [
    "REGIONS",
    "render_regions",
    "render_ensemble",
    "render_speed",
    "render_speed_targets",
    "stale_regions",
    "write_regions",
    "main",
]

#: The repository root (README.md, docs/) when mmh runs from a checkout.
ROOT = Path(__file__).resolve().parents[3]
RESULTS = Path("docs/results")

Renderer = Callable[[Mapping[str, Any]], str]


def _load(root: Path, name: str) -> dict[str, Any]:
    path = root / RESULTS / name
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} not found (the tables are generated from it)")
    data = read_json(path)
    if not isinstance(data, dict) or "methods" not in data:
        raise ValueError(f"{path} is not a benchmark's results.json (no 'methods' mapping)")
    return data


def _machine(rec: Mapping[str, Any]) -> str:
    device = rec.get("device_name") or "unknown CPU"
    if str(rec.get("device", "cpu")).startswith("cuda"):
        return f"one {device}"
    return f"a {rec.get('cpu_count')}-core {device} machine, no GPU"


def render_run(res: Mapping[str, Any]) -> str:
    """The sentence saying how the main job's numbers were made, from the results file's record and settings."""
    rec, st = res["record"], res["settings"]
    load = rec.get("load_average") or {}
    load_txt = ""
    if load.get("start") and load.get("end"):
        load_txt = (
            f"; load average {load['start'][0]:.1f} (1 minute) at the start, {load['end'][2]:.1f} (15 minutes) at "
            f"the end — its own {st['workers']} workers count for {st['workers']} of it, the rest was other jobs "
            "sharing the cores"
        )
    dirty = " with uncommitted changes" if (rec.get("git") or {}).get("dirty") else ""
    quick = " --quick" if st.get("quick") else ""
    workers = f"{st['workers']} worker process{'es' if st['workers'] != 1 else ''}"
    return (
        f"Measured with `mmh benchmark mmh{quick}` ({st['seeds']} seeds, {workers} × {rec.get('threads')} thread) "
        f"on {_machine(rec)}, torch {rec['torch']}, Python {rec['python']}, from a checkout{dirty} "
        f"({rec['time'][:10]}): wall time **{res['wall_time_s']:.0f} s**{load_txt}.\n"
    )


def render_table(res: Mapping[str, Any]) -> str:
    anti = res.get("antispoof") or {}
    return format_table(res["methods"], anti.get("methods"), res.get("comparisons"), anti.get("comparisons"))


def _claim(name: str, c: Mapping[str, Any], metric: str) -> str:
    who = name if " vs " in name else f"{name} vs {c['vs']}"
    v = verdict(c)
    v = f"**{v}**" if v in ("yes", "no, worse") else v.split(" (p = ")[0]  # the p follows in the numbers
    return f"- {metric}, {who}: {v} — {format_comparison(c)}"


def render_ensemble(res: Mapping[str, Any]) -> str:
    """What the ``baseline_ensemble`` values are, from the members the results file records: with disjoint members
    (seed ``s``'s baseline and the extra seed ``s + n``'s) its values are independent and pair with every method's
    seed ``s``; members that overlap make its intervals approximate, and the text says so. Empty without it."""
    members = ((res.get("methods") or {}).get("baseline_ensemble") or {}).get("members")
    if not members:
        return ""
    flat = [s for pair in members for s in pair]
    pairs = ", ".join(f"{a} + {b}" for a, b in members)
    n = len(members)
    if [list(pair) for pair in members] == [[s, s + n] for s in range(n)]:
        extra = f"seed {n}" if n == 1 else f"seeds {n}–{2 * n - 1}"
        return (
            f"`baseline_ensemble` of seed s averages the logits of the baselines of seeds s and s + {n} ({pairs}): "
            f"the baselines of {extra} are trained for it alone and enter no other row, no baseline serves two "
            f"ensembles, so its {n} values are independent, each paired with the other methods' seed s.\n"
        )
    if len(set(flat)) == len(flat):
        return f"`baseline_ensemble` averages the logits of two baselines ({pairs}), no baseline in two of them.\n"
    return (
        f"`baseline_ensemble` averages the logits of two baselines ({pairs}): the same baseline serves two ensembles, "
        "so its values are not independent and its intervals and p-values are approximate.\n"
    )


def render_claims(res: Mapping[str, Any]) -> str:
    """Every comparison of the main job as a claim: "yes" only when the 95 % interval excludes 0; what the baseline
    ensemble's values are (:func:`render_ensemble`)."""
    lines = [
        "Paired by seed (method − reference in points; 95 % t interval; two-sided paired t-test; "
        "ACER: lower is better, so a negative difference is the improvement):",
        "",
    ]
    note = render_ensemble(res)
    if note:
        lines[0:0] = [note.rstrip("\n"), ""]
    for name, c in {**res["comparisons"], **res["controls"]}.items():
        lines.append(_claim(name, c, "accuracy"))
    anti = res.get("antispoof") or {}
    for name, c in {**anti.get("comparisons", {}), **anti.get("controls", {})}.items():
        lines.append(_claim(name, c, "pooled ACER"))
    return "\n".join(lines) + "\n"


def render_thesis(res: Mapping[str, Any]) -> str:
    """The thesis benchmark's comparisons: every RGB-deployed method against the step-1 RGB stream, the MCL methods
    against independent training, and the claims as paired contrasts."""
    st = res["settings"]
    rec = res.get("record") or {}
    lines = [
        f"From `mmh benchmark thesis{' --quick' if st.get('quick') else ''} --seeds {st['seeds']}` "
        f"(wall time {res['wall_time_s']:.0f} s on {_machine(rec) if rec else 'an unrecorded machine'}); accuracy "
        "points, method − reference, 95 % t interval, p, paired by seed:",
        "",
    ]
    for name, c in {**res["comparisons"], **res["controls"]}.items():
        lines.append(_claim(name, c, "accuracy"))
    return "\n".join(lines) + "\n"


def _pct(x: float) -> str:
    return f"{x * 100:+.1f} %"


def _ops_verdict(f: Mapping[str, Any]) -> tuple[str, str]:
    """The "mmh_ext step at least as fast as the reference step" verdict and its numbers: **met** when the median
    of the per-round step-time ratios (reference / mmh_ext) is >= 1; **met, no measurable difference** when it is
    below 1 but the 95 % t interval of the rounds' mean ratio reaches 1 (the step-to-step noise covers the
    difference) and the operators alone are faster; else **missed**."""
    ratio, rounds, ops = f["mmh_vs_reference"], f.get("mmh_vs_reference_rounds"), f.get("ops_alone")
    numbers = f"step time ratio {ratio:.3f}"
    high = None
    if rounds and len(rounds) > 1:
        from scipy import stats

        ci = stats.ttest_1samp(rounds, 1.0).confidence_interval(0.95)
        high = float(ci.high)
        numbers += f" (median of {len(rounds)} rounds; 95 % interval of their mean [{ci.low:.3f}, {ci.high:.3f}])"
    if ops:
        numbers += (
            f"; the step's operator calls alone, forward + backward: {ops['reference_ms']:.2f} ms reference, "
            f"{ops['mmh_ext_ms']:.2f} ms mmh_ext ({ops['ratio']:.2f}x)"
        )
    if ratio >= 1.0:
        return "met", numbers
    if high is not None and high >= 1.0 and ops and ops["ratio"] >= 1.0:
        return "met, no measurable difference", numbers
    return "missed", numbers


def render_speed_targets(res: Mapping[str, Any]) -> str:
    """The speed targets, each met or missed with its numbers, as a table: trainer overhead <= 3 % against the
    minimal loop for every method, RAD and DAD steps with mmh_ext at least as fast as with the reference losses
    (:func:`_ops_verdict`), with ``train.teacher_cache`` a RAD or DAD step within 15 % of the baseline's, and the
    GPU rates (measured only by a GPU run of the benchmark)."""
    rec, per = res["record"], res["record"]["methods"]
    rows = []
    over = {m: 1.0 / per[m]["minimal_vs_trainer"] - 1.0 for m in res["methods"] if per[m].get("minimal_vs_trainer")}
    if over:
        worst = max(over.values())
        rows.append(
            (
                "trainer overhead against a minimal hand-written loop ≤ 3 %, every method",
                ", ".join(f"{m} {_pct(v)}" for m, v in over.items()),
                "met" if worst <= 0.03 else "missed",
            )
        )
    for m in ("rad", "dad"):
        if per.get(m, {}).get("mmh_vs_reference") is not None:
            v, numbers = _ops_verdict(per[m])
            rows.append((f"{m.upper()} step with mmh_ext at least as fast as with the reference losses", numbers, v))
    base = res["methods"].get("baseline")
    for m in ("rad", "dad"):
        cached = per.get(m, {}).get("teacher_cache_samples_per_s")
        if base is not None and cached is not None:
            slower = base["samples_per_s"] / cached - 1.0
            rows.append(
                (
                    f"{m.upper()} step with `train.teacher_cache` within 15 % of the baseline's step",
                    f"step time {_pct(slower)} against the baseline's",
                    "met" if slower <= 0.15 else "missed",
                )
            )
    gpu = str(rec.get("device", "cpu")).startswith("cuda")
    if not gpu:
        rows.append(
            (
                "on a GPU: the step rates with AMP, the GPU busy ≥ 90 % of the step",
                "not measured by this CPU run (`scripts/gpu_check.sh` runs `mmh benchmark speed --device cuda`)",
                "open",
            )
        )
    sizes = {f"{f['model']} batch {f['batch']}" for f in per.values()}
    lines = [
        f"Measured by `mmh benchmark speed{' --quick' if rec.get('quick') else ''}` on {_machine(rec)}, torch "
        f"{rec.get('torch')} ({str(rec.get('time', ''))[:10]}), at the recipes' sizes ({', '.join(sorted(sizes))}):",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        *[f"| {t} | {n} | **{v}** |" for t, n, v in rows],
    ]
    return "\n".join(lines) + "\n"


def render_speed(res: Mapping[str, Any]) -> str:
    """``mmh benchmark speed``'s table (:func:`mmh.benchmarks.speed.speed_markdown` without its heading) and the
    speed targets (:func:`render_speed_targets`)."""
    rec = res["record"]
    table = speed_markdown(res).split("\n", 2)[2].lstrip("\n")  # drop "# Training step speed" and its blank line
    lines = [
        f"From `mmh benchmark speed{' --quick' if rec.get('quick') else ''}` on {_machine(rec)}, torch "
        f"{rec.get('torch')} ({str(rec.get('time', ''))[:10]}):",
        "",
        table.rstrip("\n"),
        "",
        "The targets, met or missed:",
        "",
        render_speed_targets(res).split("\n", 2)[2].rstrip("\n"),
    ]
    return "\n".join(lines) + "\n"


#: file -> region -> (results file, renderer)
REGIONS: dict[str, dict[str, tuple[str, Renderer]]] = {
    "README.md": {
        "main-job-run": ("main_job.json", render_run),
        "main-job-table": ("main_job.json", render_table),
        "main-job-claims": ("main_job.json", render_claims),
        "speed-targets": ("speed_cpu.json", render_speed_targets),
    },
    "docs/benchmarks.md": {"thesis-comparisons": ("thesis.json", render_thesis)},
    "docs/speed.md": {"speed-cpu": ("speed_cpu.json", render_speed)},
}


def _markers(file: str, name: str) -> tuple[str, str]:
    if file == "README.md":
        return f"<!-- --8<-- [start:{name}] -->\n", f"<!-- --8<-- [end:{name}] -->"
    return f"<!-- results:{name} -->\n", f"<!-- /results:{name} -->"


def _replace(text: str, file: str, name: str, body: str) -> str:
    start, end = _markers(file, name)
    pattern = re.compile(re.escape(start) + r".*?(?=" + re.escape(end) + ")", re.S)
    if not pattern.search(text):
        raise ValueError(f"{file}: region {name!r} not found (markers {start.strip()} ... {end})")
    return pattern.sub(lambda _m: start + body, text, count=1)


def render_regions(root: Path = ROOT) -> dict[str, str]:
    """``{file: its text with every generated region rendered from the results files}``."""
    out = {}
    for file, regions in REGIONS.items():
        path = root / file
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        text = path.read_text(encoding="utf-8")
        for name, (results, render) in regions.items():
            text = _replace(text, file, name, render(_load(root, results)))
        out[file] = text
    return out


def stale_regions(root: Path = ROOT) -> list[str]:
    """``file: region`` of every generated region whose text is not what the results files give."""
    stale = []
    for file, want in render_regions(root).items():
        have = (root / file).read_text(encoding="utf-8")
        for name in REGIONS[file]:
            start, end = _markers(file, name)
            pattern = re.compile(re.escape(start) + r"(.*?)" + re.escape(end), re.S)
            if pattern.search(have).group(1) != pattern.search(want).group(1):
                stale.append(f"{file}: {name}")
    return stale


def write_regions(root: Path = ROOT) -> list[str]:
    """Rewrite the stale regions; returns what was rewritten."""
    stale = stale_regions(root)
    for file, text in render_regions(root).items():
        if any(s.startswith(f"{file}: ") for s in stale):
            (root / file).write_text(text, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mmh.benchmarks.tables", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only report regions that differ (exit status 1)")
    p.add_argument("--root", type=Path, default=ROOT, help="the repository root (README.md, docs/)")
    ns = p.parse_args(argv)
    if ns.check:
        stale = stale_regions(ns.root)
        for s in stale:
            print(f"stale: {s} (run python -m mmh.benchmarks.tables)")
        return 1 if stale else 0
    for s in write_regions(ns.root):
        print(f"rewrote {s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
