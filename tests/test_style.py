"""The codebase stays clean: ruff, mypy, and no stdlib multiprocessing in src/."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "corral"


def test_src_never_imports_stdlib_multiprocessing():
    pattern = re.compile(
        r"^\s*(import multiprocessing|from multiprocessing"
        r"|import concurrent\.futures\.process|from concurrent\.futures\.process"
        r"|from concurrent\.futures import .*ProcessPoolExecutor)",
        re.MULTILINE,
    )
    offenders = [str(p) for p in SRC.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


@pytest.mark.skipif(not SRC.exists(), reason="runs from a source checkout")
def test_ruff_clean():
    ruff = pytest.importorskip("ruff")
    del ruff
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks", "tools", "examples"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not SRC.exists(), reason="runs from a source checkout")
def test_mypy_clean():
    pytest.importorskip("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
