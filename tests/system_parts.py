"""The programs some tests need beyond Python and uv: redis-server, Chromium, Node, curl.

Why the two behaviours: the README promises that `uv run pytest` passes on a fresh machine
with only Python and uv, so there a missing program skips its tests, and the run ends with one
line per missing program saying what to install (`summary`, called from conftest.py). Where
the tests run as root beside apt-get, redis-server (one small package) is installed instead,
once for the whole run: one xdist worker installs under a file lock while the others wait.
Chromium and Node are hundreds of megabytes, so they are only named, never installed unasked.
CI (`CI=true`, as `.ci/run` runs) installs every one of them before the tests, so there a
missing program fails its tests rather than skipping them, and nothing is installed here
either: a skip or a rescue would hide that CI stopped running those tests or that `.ci/run`
lost an install step.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
CI_INSTALLS = "(CI installs it)"


def missing(what: str, install: str) -> NoReturn:
    """Skip the calling test (a plain machine) or fail it (CI): `what` is not there."""
    message = f"{what} not found: {install} {CI_INSTALLS}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def shared_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory every xdist worker of this run sees (the run's base temp directory)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def can_apt_get() -> bool:
    return not IN_CI and os.name == "posix" and os.geteuid() == 0 and bool(shutil.which("apt-get"))


def apt_get_install_once(package: str, program: str, shared: Path) -> str | None:
    """`program` after `apt-get install package`, tried at most once in this run."""
    import fcntl  # POSIX only, like apt-get

    with (shared / f"apt-get-{package}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other workers wait here for the first
        tried = shared / f"apt-get-{package}.tried"
        if shutil.which(program) is None and not tried.exists():
            tried.touch()
            env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
            for command in (["update", "-qq"], ["install", "-y", "-qq", package]):
                # A failure shows as the program still missing: the tests skip with the line.
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    subprocess.run(["apt-get", *command], env=env, capture_output=True, timeout=900)
    return shutil.which(program)


def require_program(
    program: str,
    install: str,
    *,
    apt_package: str | None = None,
    tmp_path_factory: pytest.TempPathFactory | None = None,
) -> str:
    """The path of `program`; else installed with apt-get where that can be done (root, not
    CI, `apt_package` given); else the test is skipped, or failed in CI (`missing`)."""
    found = shutil.which(program)
    if found is None and apt_package and tmp_path_factory is not None and can_apt_get():
        found = apt_get_install_once(apt_package, program, shared_directory(tmp_path_factory))
    if found is None:
        missing(program, install)
    return found


def summary(terminal: pytest.TerminalReporter) -> None:
    """One line per missing program, however many tests it skipped (xdist's too)."""
    reasons: Counter[str] = Counter()
    for report in terminal.stats.get("skipped", []):
        longrepr = getattr(report, "longrepr", None)
        if isinstance(longrepr, tuple) and len(longrepr) == 3:
            reason = str(longrepr[2]).removeprefix("Skipped: ")
            if reason.endswith(CI_INSTALLS):
                reasons[reason] += 1
    if reasons:
        terminal.section("skipped: not installed on this machine", sep="-")
        for reason, count in reasons.items():
            terminal.write_line(f"{count} skipped, {reason}")
