"""The checks `uv run pytest` keeps besides the behaviour: lint, formatting, types and the
generated gRPC stubs. They are tests so that the README's test command is the whole gate,
as `.ci/run` runs only it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["gateway", "tests", "bench"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_finds_nothing_and_the_code_is_formatted() -> None:
    lint = _run("ruff", "check", *SOURCES)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    formatted = _run("ruff", "format", "--check", *SOURCES)
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def test_mypy_finds_nothing() -> None:
    # Incremental: .mypy_cache (ignored by git) makes a run after a small change take ~1 s.
    checked = _run("mypy", "gateway", "bench")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_grpc_stubs_are_generated_from_the_proto(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["proto", "--check"]) == 0, capsys.readouterr().err
