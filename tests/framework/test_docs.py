"""The front page and the documentation site: a short README that still states the test command and runs its own
example, docs pages free of commit hashes and session history, every page in the site's navigation, and the build
hook that renders the docstrings' Sphinx roles. (``mkdocs build --strict`` itself runs in scripts/test.sh.)"""

from __future__ import annotations

import functools
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

#: What could be a git object name as prose cites one: 7-40 hex digits.
_HEX = re.compile(r"\b[0-9a-f]{7,40}\b")
#: Narrative of how the work went, which belongs in git history, not in the docs.
_HISTORY = re.compile(r"\b(sessions?|commits?|run [0-9]+)\b", re.IGNORECASE)


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


@functools.cache
def _is_commit(name: str) -> bool:
    """Whether this checkout's git knows ``name`` as a commit (False outside a git checkout)."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-t", name], capture_output=True, text=True)
    except OSError:
        return False
    return out.returncode == 0 and out.stdout.strip() == "commit"


def _cites_commit(line: str) -> bool:
    """A hex word with both digits and letters (an abbreviated hash by its look), or digits that name a commit."""
    return any(re.search(r"[a-f]", w) and re.search(r"[0-9]", w) or _is_commit(w) for w in _HEX.findall(line))


def history_problems(path: Path) -> list[str]:
    """Lines of ``path`` that cite a commit hash or tell session history, as ``file:line: text``."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if _cites_commit(line) or _HISTORY.search(line):
            out.append(f"{path.name}:{n}: {line.strip()}")
    return out


def _nav_files(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [f for item in nav for f in _nav_files(item)]
    if isinstance(nav, dict):
        return [f for value in nav.values() for f in _nav_files(value)]
    return []


def test_readme_is_a_short_front_page_that_states_the_test_command():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250, "README.md is the front page: move details to a page under docs/"
    assert "bash scripts/test.sh" in text and ".ci/run" in text  # .ci/run calls it "the README's test command"
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).is_file(), f"README.md links to {link}, which does not exist"


def test_readme_example_trains_the_student_and_leaves_the_teacher_alone():
    pytest.importorskip("mmh_ext")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## `mmh_ext` in your own loop", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    ns: dict = {}
    exec(compile(code, "README.md example", "exec"), ns)  # noqa: S102  (the README's own code)
    assert ns["loss"].isfinite()
    assert ns["s_fc"].weight.grad is not None and ns["s_fc"].weight.grad.abs().sum() > 0
    assert ns["s_body"][0].weight.grad.abs().sum() > 0  # RAD and CE reach the student's features
    assert ns["t_fc"].weight.grad is None and ns["t_body"][0].weight.grad is None


def test_no_commit_hashes_or_session_history_in_the_docs():
    problems = [p for page in [ROOT / "README.md", *_pages()] for p in history_problems(page)]
    assert not problems, "write results as dated entries naming the machine:\n" + "\n".join(problems)


def test_history_check_catches_hashes_and_sessions(tmp_path: Path):
    page = tmp_path / "x.md"
    page.write_text(
        "Measured at 24b4676 on the VM.\nIn the third session RAD got faster.\nRun 2 passed.\n"
        "2026-11-30, one NVIDIA H200: 63 of 63 tests, 40x2048x7x7, 1e-4, 1048576 B, cafe, 0.8233.\n"
    )
    found = [line.split(": ", 1)[1] for line in history_problems(page)]
    assert found == ["Measured at 24b4676 on the VM.", "In the third session RAD got faster.", "Run 2 passed."]


def test_every_page_is_in_the_navigation_and_every_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = _nav_files(config["nav"])
    pages = [str(p.relative_to(DOCS)) for p in _pages()]
    assert sorted(listed) == sorted(set(listed)), "a page is listed twice in mkdocs.yml's nav"
    assert sorted(listed) == pages, (
        f"not in nav: {sorted(set(pages) - set(listed))}; in nav but missing: {sorted(set(listed) - set(pages))}"
    )


def test_docs_include_the_readme_main_job_table_and_code_map():
    """The main job's table and the code map are written once, in the README, and included by the docs pages."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for section, page in (("main-job-table", "benchmarks.md"), ("code-map", "index.md")):
        assert f"--8<-- [start:{section}]" in readme and f"--8<-- [end:{section}]" in readme
        assert f'--8<-- "README.md:{section}"' in (DOCS / page).read_text(encoding="utf-8")
    table = readme.split("--8<-- [start:main-job-table] -->\n", 1)[1].split("<!-- --8<-- [end:main-job-table]")[0]
    assert table.startswith("| method | synthetic_motion accuracy") and len(table.splitlines()) == 12


def test_hook_renders_sphinx_roles_as_code():
    spec = importlib.util.spec_from_file_location("mmh_docs_hooks", DOCS / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    html = (
        "<p>:func:<code>rad_loss</code>, :py:class:<code>mmh.train.Trainer</code>, :mod:<code>mmh_ext.nn</code>; "
        "ratio: <code>x</code>, a:b</p>"
    )
    assert hooks.on_page_content(html, page=None) == (
        "<p><code>rad_loss</code>, <code>mmh.train.Trainer</code>, "
        "<code>mmh_ext.nn</code>; ratio: <code>x</code>, a:b</p>"
    )


def _test_functions(path: Path) -> set[str]:
    import ast

    return {
        n.name
        for n in ast.walk(ast.parse(path.read_text()))
        if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
    }


def _cited_tests(text: str) -> list[tuple[str, str]]:
    return re.findall(r"`(test_\w+\.py)::(test_\w+)`", text)


def test_every_test_the_reliability_page_cites_exists():
    """The reliability page's table names the test behind each promise as ``file::function``; a renamed or deleted test
    must fail here, not leave a promise without its proof."""
    page = (DOCS / "reliability.md").read_text()
    cited = _cited_tests(page)
    assert len(cited) >= 20, "the reliability table lost its test references"
    files = {p.name: p for p in (ROOT / "tests").rglob("test_*.py")}
    missing = [f"{f}::{t}" for f, t in cited if f not in files or t not in _test_functions(files[f])]
    assert not missing, f"docs/reliability.md cites tests that do not exist: {missing}"


def test_cited_test_check_catches_a_missing_test():
    fake = "| a promise | `test_cli.py::test_cli_errors`<br>`test_cli.py::test_no_such_thing` |"
    cited = _cited_tests(fake)
    assert cited == [("test_cli.py", "test_cli_errors"), ("test_cli.py", "test_no_such_thing")]
    funcs = _test_functions(ROOT / "tests" / "framework" / "test_cli.py")
    assert [t for _, t in cited if t not in funcs] == ["test_no_such_thing"]
