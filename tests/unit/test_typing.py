"""A user's type checker sees corral as it sees the stdlib: no more errors, generic results.

User programs (``examples/``, the README's Python snippets and
``tests/typing_programs/``) are checked with ``mypy --strict`` in one run, each
program twice: as written against corral, and with ``corral`` replaced by
``multiprocessing`` / ``concurrent.futures`` against typeshed's stubs. corral
must give no more errors than the stdlib on any program, and none on
``tests/typing_programs/``, whose ``assert_type`` calls pin the result types
(``Pool.map -> list[T]``, ``submit -> Future[T]``, ``DictProxy[K, V]``, ...).
The same comparison runs with pyright when it is installed (``pip install pyright``).
"""

from __future__ import annotations

import ast
import importlib
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import corral

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = ROOT / "tests" / "typing_programs"
EXAMPLES = ROOT / "examples"
README = ROOT / "README.md"

pytestmark = pytest.mark.skipif(not PROGRAMS.exists(), reason="runs from a source checkout")

_ERROR_LINE = re.compile(r"^(?P<path>[^:\n]+\.py):\d+: error: ", re.MULTILINE)


def _readme_snippets() -> dict[str, str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    return {f"readme_{i}": block for i, block in enumerate(blocks)}


def _user_programs() -> dict[str, str]:
    programs = {f"example_{p.stem}": p.read_text() for p in sorted(EXAMPLES.glob("*.py"))}
    programs.update(_readme_snippets())
    programs.update({p.stem: p.read_text() for p in sorted(PROGRAMS.glob("*.py"))})
    return programs


def _on_stdlib(source: str) -> str:
    """The same program written against ``multiprocessing`` and ``concurrent.futures``."""
    source = source.replace("corral.futures", "concurrent.futures")
    return re.sub(r"\bcorral\b", "multiprocessing", source)


def _both_versions(programs: dict[str, str]) -> dict[str, str]:
    both = {f"corral_{n}": s for n, s in programs.items()}
    both.update({f"stdlib_{n}": _on_stdlib(s) for n, s in programs.items()})
    return both


def _check_counts(programs: dict[str, str], counts: Counter[str], report: str) -> None:
    """corral's errors <= the stdlib's on every program; none on tests/typing_programs."""
    ours = {name: counts[f"corral_{name}"] for name in programs}
    theirs = {name: counts[f"stdlib_{name}"] for name in programs}
    worse = {name: (ours[name], theirs[name]) for name in programs if ours[name] > theirs[name]}
    assert worse == {}, f"corral vs stdlib errors: {worse}\n{report}"
    typed = {p.stem for p in PROGRAMS.glob("*.py")}
    assert {name: ours[name] for name in typed if ours[name]} == {}, report


def _mypy_errors(tmp_path: Path, programs: dict[str, str]) -> tuple[Counter[str], str]:
    """Run ``mypy --strict`` once over every program; return error counts per name."""
    files = []
    for name, source in programs.items():
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        files.append(str(path))
    command = [sys.executable, "-m", "mypy", "--strict", "--no-incremental"]
    command += ["--cache-dir", str(tmp_path / "cache"), "--no-error-summary", *files]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=110)
    assert result.returncode in (0, 1), result.stdout + result.stderr
    counts = Counter(Path(m["path"]).stem for m in _ERROR_LINE.finditer(result.stdout))
    return counts, result.stdout


@pytest.mark.slow
def test_strict_mypy_no_more_errors_than_stdlib(tmp_path: Path) -> None:
    programs = _user_programs()
    assert {"brief_program", "pool_results", "readme_0"} <= set(programs)
    counts, report = _mypy_errors(tmp_path, _both_versions(programs))
    _check_counts(programs, counts, report)


@pytest.mark.slow
def test_strict_pyright_no_more_errors_than_stdlib(tmp_path: Path) -> None:
    pytest.importorskip("pyright")
    pyright = shutil.which("pyright", path=str(Path(sys.executable).parent))
    if pyright is None:
        pytest.skip("the pyright command is not installed beside this interpreter")
    programs = _user_programs()
    for name, source in _both_versions(programs).items():
        (tmp_path / f"{name}.py").write_text(source)
    config = {"typeCheckingMode": "strict", "pythonVersion": "3.10"}
    (tmp_path / "pyrightconfig.json").write_text(json.dumps(config))
    command = [pyright, "--outputjson", "--pythonpath", sys.executable, str(tmp_path)]
    try:
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=100)
    except subprocess.TimeoutExpired:  # its first run may try to download node
        pytest.skip("pyright did not answer within 100 s (no node, no network?)")
    try:
        diagnostics = json.loads(result.stdout)["generalDiagnostics"]
    except (json.JSONDecodeError, KeyError):
        pytest.skip(f"pyright could not run here (it needs node): {result.stderr[-500:]}")
    errors = [d for d in diagnostics if d["severity"] == "error"]
    counts = Counter(Path(d["file"]).stem for d in errors)
    report = "\n".join(f"{Path(d['file']).name}: {d['message']}" for d in errors)
    _check_counts(programs, counts, report)


def test_type_checkers_see_every_top_level_name() -> None:
    """``__init__``'s ``TYPE_CHECKING`` block names all of ``__all__`` (it fills globals())."""
    tree = ast.parse(Path(corral.__file__).read_text())
    declared = set()
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for statement in node.body:
                if isinstance(statement, ast.Assign):
                    declared.update(t.id for t in statement.targets if isinstance(t, ast.Name))
                elif isinstance(statement, ast.ImportFrom):
                    declared.update(alias.asname or alias.name for alias in statement.names)
    assert set(corral.__all__) - declared == set()


@pytest.mark.parametrize(
    ("generic", "arguments"),
    [
        ("corral.queues.Queue", (int,)),
        ("corral.queues.SimpleQueue", (int,)),
        ("corral.pool.AsyncResult", (int,)),
        ("corral.managers.ValueProxy", (int,)),
        ("corral.managers.DictProxy", (str, int)),
        ("corral.managers.ListProxy", (int,)),
        ("corral.managers.ArrayProxy", (int,)),
        ("corral.shared_memory.ShareableList", (int,)),
        ("corral.connection.Connection", (int, str)),
    ],
)
def test_generic_annotations_evaluate_at_run_time(
    generic: str, arguments: tuple[type, ...]
) -> None:
    """``DictProxy[str, int]`` in an annotation evaluated at run time works, as the checker's."""
    module_name, _, name = generic.rpartition(".")
    cls = getattr(importlib.import_module(module_name), name)
    alias = cls[arguments]
    assert alias.__origin__ is cls
    assert alias.__args__ == arguments
