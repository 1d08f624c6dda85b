"""The public contracts, guarded: the gRPC proto is linted, and both contracts are compared with
the copies last released (`schema/released/`), so a change that could break a client is seen.

- `buf lint` checks `schema/listing_status.proto` against `buf.yaml` (STANDARD, less the two
  rules that keep `GetListing` answering the resource itself, as AIP-131 has it).
- `buf breaking` compares it with `schema/released/listing_status.proto` (FILE rules: what a
  client's generated stubs rely on, which includes the wire).
- graphql-core's `find_breaking_changes` and `find_dangerous_changes` compare
  `schema/schema.graphql` with `schema/released/schema.graphql`.

A breaking or dangerous change fails the check unless a line of `schema/acknowledged-changes.txt`
names it exactly as this script prints it: a change is made on purpose, and said so, in the
same review. Releasing copies the contracts into `schema/released/` and empties that file.

    uv run python -m scripts.contracts            # lint, and compare with the released contracts
    uv run python -m scripts.contracts --release  # the current contracts become the released ones

buf comes from `npm ci --prefix tests/clients` (the npm package carries the binary), or PATH.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from graphql import build_schema, find_breaking_changes, find_dangerous_changes

ROOT = Path(__file__).resolve().parent.parent
SDL = Path("schema/schema.graphql")
PROTO = Path("schema/listing_status.proto")
RELEASED = Path("schema/released")
ACKNOWLEDGED = Path("schema/acknowledged-changes.txt")
NPM_CI = "npm ci --prefix tests/clients"

ACKNOWLEDGED_HEADER = """\
# Breaking and dangerous changes of the public contracts since the copies in schema/released/,
# made on purpose: one line each, exactly as `uv run python -m scripts.contracts` prints it.
# Releasing (`uv run python -m scripts.contracts --release`) empties this file.
"""


@dataclass(frozen=True, slots=True)
class Change:
    """One difference from the released contract that could break a client."""

    contract: str  # "graphql" or "proto"
    kind: str  # "breaking" or "dangerous"
    rule: str  # graphql-core's change type, or buf's rule
    message: str

    @property
    def line(self) -> str:
        return f"{self.contract} {self.kind} {self.rule}: {self.message}"


class ContractsError(Exception):
    """The check could not run (buf missing or failing); the message is one line."""


def graphql_changes(root: Path) -> list[Change]:
    """How `schema/schema.graphql` differs from the released SDL, as graphql-core judges it."""
    released = build_schema((root / RELEASED / SDL.name).read_text(encoding="utf-8"))
    current = build_schema((root / SDL).read_text(encoding="utf-8"))
    return [
        Change("graphql", "breaking", change.type.name, change.description)
        for change in find_breaking_changes(released, current)
    ] + [
        Change("graphql", "dangerous", change.type.name, change.description)
        for change in find_dangerous_changes(released, current)
    ]


def find_buf(root: Path = ROOT) -> str | None:
    """buf from the locked npm install under tests/clients, else from PATH."""
    local = root / "tests" / "clients" / "node_modules" / ".bin" / "buf"
    return str(local) if local.exists() else shutil.which("buf")


def _buf(buf: str, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [buf, *args], cwd=root, capture_output=True, text=True, timeout=120, check=False
        )
    except OSError as exc:
        raise ContractsError(f"cannot run {buf}: {exc}") from None


def proto_lint(root: Path, buf: str) -> list[str]:
    """What `buf lint` finds wrong with the proto, one line each (nothing when it passes)."""
    done = _buf(buf, root, "lint")
    if done.returncode not in (0, 100):  # 100: lint findings; anything else: buf itself failed
        raise ContractsError(f"buf lint failed: {(done.stderr or done.stdout).strip()}")
    return [line for line in done.stdout.splitlines() if line.strip()]


def proto_changes(root: Path, buf: str) -> list[Change]:
    """How the proto differs from the released one, as `buf breaking` (FILE rules) judges it."""
    against = RELEASED.as_posix()
    done = _buf(buf, root, "breaking", "--against", against, "--error-format", "json")
    if done.returncode not in (0, 100):
        raise ContractsError(f"buf breaking failed: {(done.stderr or done.stdout).strip()}")
    changes = []
    for line in done.stdout.splitlines():
        if line.strip():
            found = json.loads(line)
            changes.append(Change("proto", "breaking", found["type"], found["message"]))
    return changes


def acknowledged(root: Path) -> set[str]:
    path = root / ACKNOWLEDGED
    if not path.exists():
        return set()
    lines = path.read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def check(root: Path, buf: str | None, *, only: str | None = None, out: TextIO = sys.stdout) -> int:
    """0 when every change is acknowledged and the proto lints clean; else 1, naming each."""
    problems: list[str] = []
    changes: list[Change] = []
    if only in (None, "proto"):
        if buf is None:
            raise ContractsError(f"buf not found: {NPM_CI}")
        problems += [f"buf lint: {line}" for line in proto_lint(root, buf)]
        changes += proto_changes(root, buf)
    if only in (None, "graphql"):
        changes += graphql_changes(root)
    accepted = acknowledged(root)
    for change in changes:
        if change.line not in accepted:
            problems.append(f"not acknowledged: {change.line}")
    seen = {change.line for change in changes}
    for line in sorted(accepted - seen):
        if only is None or line.startswith(f"{only} "):
            print(f"acknowledged but no longer seen (remove it): {line}", file=out)
    for problem in problems:
        print(problem, file=out)
    if any(problem.startswith("not acknowledged") for problem in problems):
        print(
            f"A change not acknowledged breaks or endangers clients of the released contract: "
            f"if it is meant, add its line to {ACKNOWLEDGED}; otherwise undo it.",
            file=out,
        )
    if problems:
        return 1
    print(f"contracts: {len(changes)} change(s) since the release, all acknowledged", file=out)
    return 0


def release(root: Path) -> None:
    """The current contracts become the released ones; no change is pending any more."""
    for path in (SDL, PROTO):
        shutil.copyfile(root / path, root / RELEASED / path.name)
    (root / ACKNOWLEDGED).write_text(ACKNOWLEDGED_HEADER, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.contracts", description=__doc__)
    parser.add_argument("--release", action="store_true", help="copy the contracts to released/")
    parser.add_argument("--only", choices=["graphql", "proto"], help="check one contract only")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (for tests)")
    parser.add_argument("--buf", help="the buf binary (default: tests/clients' own, else PATH)")
    args = parser.parse_args(argv)
    if args.release:
        release(args.root)
        print(f"released: {SDL} and {PROTO} copied into {RELEASED}/; {ACKNOWLEDGED} emptied")
        return 0
    try:
        return check(args.root, args.buf or find_buf(args.root), only=args.only)
    except ContractsError as exc:
        print(f"contracts: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
