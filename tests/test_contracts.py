"""The public contracts are guarded (`scripts/contracts.py`, run by `.ci/run`): the proto passes
`buf lint`, and neither contract changes from its released copy in a way that could break a
client unless the change is acknowledged in `schema/acknowledged-changes.txt`.

Seeded changes are made in a copy of the contract files under `tmp_path`. buf comes from
`npm ci --prefix tests/clients`; without it the proto's tests are skipped with that command
(failed in CI, which installs it: see `system_parts.py`).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from system_parts import missing

from scripts import contracts

ROOT = Path(__file__).resolve().parent.parent
COPIED = [
    "buf.yaml",
    "schema/schema.graphql",
    "schema/listing_status.proto",
    "schema/acknowledged-changes.txt",
    "schema/released/schema.graphql",
    "schema/released/listing_status.proto",
    "schema/released/buf.yaml",
]


@pytest.fixture
def buf() -> str:
    found = contracts.find_buf(ROOT)
    if found is None:
        missing("buf (npm @bufbuild/buf)", contracts.NPM_CI)
    return found


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the contract files, to seed changes in."""
    for name in COPIED:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, tmp_path / name)
    return tmp_path


def check(root: Path, buf: str | None, only: str | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = contracts.check(root, buf, only=only, out=out)
    return code, out.getvalue()


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def acknowledge(root: Path, line: str) -> None:
    with (root / contracts.ACKNOWLEDGED).open("a", encoding="utf-8") as file:
        file.write(line + "\n")


def test_the_graphql_contract_keeps_its_release_or_says_why() -> None:
    code, out = check(ROOT, None, only="graphql")
    assert code == 0, out


def test_the_proto_lints_and_keeps_its_release_or_says_why(buf: str) -> None:
    code, out = check(ROOT, buf, only="proto")
    assert code == 0, out


def test_a_removed_graphql_field_fails_until_acknowledged(repo: Path) -> None:
    edit(repo / "schema/schema.graphql", "  endCursor: String\n", "  lastCursor: String\n")
    code, out = check(repo, None, only="graphql")
    line = "graphql breaking FIELD_REMOVED: Field PageInfo.endCursor was removed."
    assert code == 1 and f"not acknowledged: {line}" in out, out
    acknowledge(repo, line)
    assert check(repo, None, only="graphql")[0] == 0


def test_a_dangerous_graphql_change_fails_until_acknowledged(repo: Path) -> None:
    """A value added to an output enum: a client's exhaustive switch meets it unprepared."""
    edit(repo / "schema/schema.graphql", "enum Provider {\n", "enum Provider {\n  SOMEONE_NEW\n")
    code, out = check(repo, None, only="graphql")
    line = "graphql dangerous VALUE_ADDED_TO_ENUM: Enum value Provider.SOMEONE_NEW was added."
    assert code == 1 and f"not acknowledged: {line}" in out, out
    acknowledge(repo, line)
    assert check(repo, None, only="graphql")[0] == 0


def test_an_added_graphql_field_needs_no_acknowledgement(repo: Path) -> None:
    edit(repo / "schema/schema.graphql", "  endCursor: String\n", "  endCursor: String\n  x: Int\n")
    assert check(repo, None, only="graphql") == (
        0,
        "contracts: 0 change(s) since the release, all acknowledged\n",
    )


def test_a_deleted_proto_field_fails_until_acknowledged(repo: Path, buf: str) -> None:
    edit(repo / "schema/listing_status.proto", "  string page_token = 3;\n", "")
    code, out = check(repo, buf, only="proto")
    assert code == 1, out
    [line] = [
        found.removeprefix("not acknowledged: ")
        for found in out.splitlines()
        if "FIELD_NO_DELETE" in found
    ]
    assert line.startswith("proto breaking FIELD_NO_DELETE: ") and "page_token" in line
    acknowledge(repo, line)
    assert check(repo, buf, only="proto")[0] == 0


def test_a_lint_finding_fails(repo: Path, buf: str) -> None:
    edit(
        repo / "schema/listing_status.proto",
        "  repeated string classified_ids = 1;",
        "  repeated string ClassifiedIds = 1;",
    )
    code, out = check(repo, buf, only="proto")
    assert code == 1 and "buf lint: " in out and "lower_snake_case" in out, out


def test_a_release_takes_the_contracts_as_they_are(repo: Path) -> None:
    edit(repo / "schema/schema.graphql", "  endCursor: String\n", "  lastCursor: String\n")
    contracts.release(repo)
    assert check(repo, None, only="graphql")[0] == 0
    assert contracts.acknowledged(repo) == set()
    released = (repo / "schema/released/schema.graphql").read_text(encoding="utf-8")
    assert released == (repo / "schema/schema.graphql").read_text(encoding="utf-8")
