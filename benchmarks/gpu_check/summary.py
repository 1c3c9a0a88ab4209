"""Writes OUT/summary.md of the GPU check (:mod:`benchmarks.gpu_check`) from what its sections left in OUT.

    python -m benchmarks.gpu_check.summary OUT        (or python scripts/gpu_summary.py OUT)

Reads OUT/machine.txt, OUT/.status/<section> ("status<TAB>seconds<TAB>note"), OUT/logs/<section>.log,
OUT/test_cuda.xml, OUT/train/*/results.*, OUT/bench_ops.md. Exit status: 1 if a section failed or is missing,
3 if every section passed but a benchmark target was missed or not measured, else 0.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from .sections import SECTIONS


def read_status(out: Path, name: str) -> tuple[str, str, str]:
    path = out / ".status" / name
    if not path.is_file():
        return "FAIL", "", "no result (the section did not finish)"
    parts = path.read_text().rstrip("\n").split("\t")
    parts += [""] * (3 - len(parts))
    return parts[0] or "FAIL", parts[1], parts[2]


def tail(path: Path, n: int = 40) -> str:
    if not path.is_file():
        return "(no log)"
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:])


def failed_tests(xml: Path) -> list[str]:
    if not xml.is_file():
        return []
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError:
        return []
    out = []
    for case in root.iter("testcase"):
        for kind in ("failure", "error", "skipped"):
            el = case.find(kind)
            if el is not None:
                msg = (el.get("message") or "").splitlines()[0:1]
                out.append(
                    f"{kind}: {case.get('classname', '')}::{case.get('name')}" + (f" — {msg[0][:200]}" if msg else "")
                )
    return out


def sanitizer_lines(log: Path) -> list[str]:
    if not log.is_file():
        return []
    keep = re.compile(r"(ERROR SUMMARY|RACECHECK SUMMARY|gpu_ops_smoke: \d+ passed|Device not supported)")
    return [line.strip() for line in log.read_text(errors="replace").splitlines() if keep.search(line)]


def training(out: Path) -> list[str]:
    lines = []
    main_md = out / "train" / "main_quick" / "results.md"
    main_json = out / "train" / "main_quick" / "results.json"
    if main_md.is_file():
        wall = ""
        if main_json.is_file():
            try:
                wall = f" (wall time {json.loads(main_json.read_text()).get('wall_time_s')} s)"
            except ValueError:
                pass
        lines += [f"`mmh benchmark mmh --quick`{wall}:", "", main_md.read_text().strip(), ""]
    else:
        lines += ["`mmh benchmark mmh --quick`: no results.md", ""]
    thesis = out / "train" / "thesis" / "multistream" / "results.json"
    if thesis.is_file():
        try:
            res = json.loads(thesis.read_text())
            final = res.get("final", {})
            shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in final.items())
            lines += [
                f"`mmh train thesis/multistream` (status {res.get('status')}): final {shown or '-'}; stages "
                f"{', '.join(res.get('stages', {}))}",
                "",
            ]
        except ValueError:
            lines += ["`mmh train thesis/multistream`: unreadable results.json", ""]
    else:
        lines += ["`mmh train thesis/multistream`: no results.json", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    machine = (out / "machine.txt").read_text().strip().splitlines() if (out / "machine.txt").is_file() else []
    date = next((m.split(": ", 1)[1] for m in machine if m.startswith("date: ")), "")
    lines = [f"# mmh GPU check ({date})", "", "Machine (`scripts/gpu_check.sh`):", ""]
    lines += [f"- {m}" for m in machine if not m.startswith("date: ")]
    lines += ["", "## Sections", "", "| section | what | result | time | note |", "|---|---|---|---|---|"]
    statuses = {}
    for name, what in SECTIONS:
        status, secs, note = read_status(out, name)
        statuses[name] = status
        shown = {"PASS": "pass", "FAIL": "**FAIL**", "SKIP": "skipped"}.get(status, status)
        lines.append(f"| {name} | {what} | {shown} | {secs + ' s' if secs else '-'} | {note or ''} |")
    failed = [n for n, s in statuses.items() if s == "FAIL"]
    lines += [
        "",
        f"{sum(s == 'PASS' for s in statuses.values())} passed, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else "")
        + f", {sum(s == 'SKIP' for s in statuses.values())} "
        "skipped.",
        "",
    ]

    bad = failed_tests(out / "test_cuda.xml")
    if bad:
        lines += ["## Tests not passed (failed, errors, skipped)", ""] + [f"- {b}" for b in bad[:60]] + [""]
    san = [(n, sanitizer_lines(out / "logs" / f"{n}.log")) for n in ("memcheck", "racecheck")]
    if any(v for _, v in san):
        lines += ["## compute-sanitizer", ""] + [f"- {n}: {'; '.join(v) or '-'}" for n, v in san] + [""]
    lines += ["## Training smoke test", ""] + training(out)

    lines += ["## Microbenchmarks (`benchmarks/bench_ops.py`)", ""]
    bench_md = out / "bench_ops.md"
    targets_ok = False
    if bench_md.is_file():
        text = bench_md.read_text().strip()
        if "GPU kernel time per call" in text:  # bench_ops.md of a run with the profiler's table
            lines += [
                "Wall time per call first (CUDA events around back-to-back calls: host overhead included; the "
                "targets are judged on it), then the GPU kernel time per call (`torch.profiler`: what the GPU "
                "itself spends, which is what counts where the host work overlaps a network's GPU work).",
                "",
            ]
        lines += [text, ""]
        m = re.search(r"targets: (\d+) met, (\d+) missed, (\d+) not measured", text)
        targets_ok = bool(m) and int(m.group(2)) == 0 and int(m.group(3)) == 0 and int(m.group(1)) > 0
    else:
        lines += ["not measured (no bench_ops.csv)", ""]

    for name in failed:
        if (out / "logs" / f"{name}.log").is_file():
            lines += [
                f"## Log tail: {name} (`logs/{name}.log`)",
                "",
                "```",
                tail(out / "logs" / f"{name}.log"),
                "```",
                "",
            ]
    (out / "summary.md").write_text("\n".join(lines))
    if failed:
        return 1
    return 0 if targets_ok else 3


if __name__ == "__main__":
    raise SystemExit(main())
