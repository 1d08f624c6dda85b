"""The project's documents as the tests read them: README.md and every docs/*.md.

A test finds a block by the words written just before it, in whichever document holds them,
so a block can move between documents without its test changing. `EXERCISED` lists every
fenced block a reader could run, with the test that runs it; `tests/test_docs.py` refuses a
runnable block that is not listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README_PATH = ROOT / "README.md"
DOCUMENTS: dict[str, str] = {
    path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8")
    for path in [README_PATH, *sorted((ROOT / "docs").glob("*.md"))]
}
README = DOCUMENTS["README.md"]
ALL = "\n".join(DOCUMENTS.values())

FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)
# Languages a reader would paste into a shell, GraphiQL, Python or a JavaScript app.
RUNNABLE = frozenset({"sh", "bash", "shell", "console", "graphql", "python", "js", "javascript"})


def document_with(marker: str) -> tuple[str, str]:
    """The one document holding `marker`: its path and text."""
    holders = [name for name, text in DOCUMENTS.items() if marker in text]
    assert len(holders) == 1, f"{marker!r} is in {holders or 'no document'}; expected one"
    return holders[0], DOCUMENTS[holders[0]]


def fenced_after(marker: str, language: str) -> str:
    """The first ```language block after `marker`, in the document that holds it."""
    _, text = document_with(marker)
    match = re.compile(rf"^```{language}\n(.*?)^```", re.S | re.M).search(text, text.index(marker))
    assert match is not None, f"no {language} block after {marker!r}"
    return match.group(1)


@dataclass(frozen=True)
class Block:
    marker: str
    language: str
    test: str  # the test module that runs it


EXERCISED: tuple[Block, ...] = (
    Block("confined to the fields that needed it", "sh", "test_readme.py"),
    Block("ready to paste", "graphql", "test_readme.py"),
    Block("can be seen with curl", "sh", "test_readme.py"),
    Block("<!-- live-subscription -->", "graphql", "test_readme.py"),
    Block("<!-- listing-changed-subscription -->", "graphql", "test_listing_changes.py"),
    Block("bench/executor.py` prints", "sh", "test_readme.py"),
    Block("needs no proto file", "sh", "test_readme_grpc.py"),
    Block("From Python", "python", "test_readme_grpc.py"),
    Block("run more workers behind the same ports", "sh", "test_workers.py"),
    Block("figures are read as ratios to it", "sh", "test_docs.py"),
    Block("so Relay refetches its next page through `node(id:)`:", "js", "test_clients.py"),
    Block("merges the pages of a history into one list in the cache:", "js", "test_clients.py"),
    Block("until `hasNextPage` is false:", "js", "test_clients.py"),
    Block("taking the first event:", "js", "test_clients.py"),
    Block("so a mistyped field fails in the client, not on the wire:", "python", "test_clients.py"),
    Block("the health service answers the same way:", "sh", "test_clients.py"),
    Block("reads the same file):", "sh", "test_clients.py"),
    Block("from the `stubs` folder:", "python", "test_clients.py"),
)


def fenced_blocks(text: str) -> list[tuple[int, str, str]]:
    """Every fenced block of `text`: where it starts, its language, its content."""
    return [(match.start(), match.group(1), match.group(2)) for match in FENCE.finditer(text)]
