"""The README and docs/*.md as a whole: a front page, every runnable block run by a test,
links that resolve, flags that exist, and the tables generated from the code kept current."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest
from documents import (
    ALL,
    DOCUMENTS,
    EXERCISED,
    README,
    ROOT,
    RUNNABLE,
    document_with,
    fenced_after,
    fenced_blocks,
)

from bench.__main__ import parse_options
from gateway.cli import build_parser
from gateway.config import Settings, SettingsError, load_settings
from scripts import settings_table

BENCH = "figures are read as ratios to it"


def test_the_readme_is_a_front_page_linking_every_document() -> None:
    assert len(README.splitlines()) <= 300
    documents = [name for name in DOCUMENTS if name.startswith("docs/")]
    assert len(documents) >= 3
    for name in documents:
        assert f"]({name})" in README, f"README.md does not link {name}"


def test_every_runnable_block_is_run_by_a_test() -> None:
    """A fenced shell, GraphQL or Python block is listed in `documents.EXERCISED`, found
    there by the words before it; anything else a reader could paste is not shown as a block."""
    found: set[tuple[str, int]] = set()
    for block in EXERCISED:
        name, text = document_with(block.marker)
        content = fenced_after(block.marker, block.language)
        found.add((name, text.index(f"```{block.language}\n{content}```")))
        test = (ROOT / "tests" / block.test).read_text(encoding="utf-8")
        assert block.marker in test, f"{block.test} does not look for {block.marker!r}"
    for name, text in DOCUMENTS.items():
        for start, language, _ in fenced_blocks(text):
            if language in RUNNABLE:
                line = text.count("\n", 0, start) + 1
                assert (name, start) in found, f"{name}:{line}: a {language} block no test runs"


def _slug(heading: str) -> str:
    """A heading's anchor, as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose, flags=re.M):
        slug = _slug(heading)
        suffix = 0
        while (candidate := slug if suffix == 0 else f"{slug}-{suffix}") in anchors:
            suffix += 1
        anchors.add(candidate)
    return anchors


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_relative_links_and_their_anchors_resolve(name: str) -> None:
    text = DOCUMENTS[name]
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    targets = re.findall(r"\]\(([^)\s]+)\)", prose) + re.findall(r'src="([^"]+)"', prose)
    base = (ROOT / name).parent
    for target in targets:
        if re.match(r"^[a-z]+:", target):
            continue  # http(s): outside the repository
        path, _, anchor = target.partition("#")
        file = (base / path).resolve() if path else ROOT / name
        assert file.exists(), f"{name}: {target} does not exist"
        if anchor and file.suffix == ".md":
            assert anchor in _anchors(file.read_text(encoding="utf-8")), (
                f"{name}: {target} names no heading"
            )


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_flag_shown_for_a_gateway_command_exists() -> None:
    subcommands = _subcommands()
    shown = re.findall(r"`(?:uv run )?gateway (\w+)([^`]*)`", ALL)
    for _, language, content in (b for text in DOCUMENTS.values() for b in fenced_blocks(text)):
        for line in content.splitlines() if language in RUNNABLE else ():
            shown += re.findall(r"(?:^|\s)gateway (\w+)(.*)", line.split(" #")[0])
    assert len(shown) >= 10
    for command, rest in shown:
        assert command in subcommands, f"gateway {command}{rest}"
        options = set(subcommands[command]._option_string_actions)
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest):
            assert flag in options, f"`gateway {command}` has no {flag}"


def test_the_benchmark_commands_shown_are_accepted() -> None:
    """The benchmark's own options parse each command shown (tests/test_bench.py runs it)."""
    commands = [line.split("#")[0] for line in fenced_after(BENCH, "sh").splitlines()]
    commands += re.findall(r"`(uv run python -m bench(?:\s[^`]*)?)`", ALL)
    assert len(commands) >= 4
    for command in commands:
        words = shlex.split(" ".join(command.split()))
        assert words[:5] == ["uv", "run", "python", "-m", "bench"], command
        parse_options(words[5:])


def test_the_benchmark_scripts_shown_exist_and_take_the_flags_shown() -> None:
    """`uv run python -m bench.<script> …` in the docs: the script answers --help and lists
    every flag shown."""
    shown = re.findall(r"uv run python -m (bench\.[a-z_]+)((?:[ \t]+[^`\n#]*)?)", ALL)
    flags: dict[str, set[str]] = {}
    for script, rest in shown:
        flags.setdefault(script, set()).update(re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest))
    assert set(flags) >= {"bench.isolation", "bench.subscriptions"}
    for script, wanted in flags.items():  # one --help per script, however often it is shown
        # In this process: `python -m` runs the same main(); a subprocess per script cost ~1 s.
        module = importlib.import_module(script)
        assert module.__file__ is not None
        assert 'if __name__ == "__main__":' in Path(module.__file__).read_text(), script
        shown_help = io.StringIO()
        with contextlib.redirect_stdout(shown_help), pytest.raises(SystemExit) as ended:
            module.main(["--help"])
        assert ended.value.code == 0, script
        for flag in sorted(wanted):
            assert flag in shown_help.getvalue(), f"{script} has no {flag}"


def test_the_grpc_status_table_names_every_code_the_edge_ends_a_call_with() -> None:
    source = (ROOT / "gateway" / "grpc" / "errors.py").read_text(encoding="utf-8")
    used = set(re.findall(r"StatusCode\.([A-Z_]+)", source))
    _, text = document_with("| status | when | `gateway-code` | retry? |")
    table = text[text.index("| status | when |") :].split("\n\n", 1)[0]
    shown = set(re.findall(r"^\| `([A-Z_]+)` \|", table, flags=re.M))
    assert shown == used


# --- the settings table ---------------------------------------------------------------------


def test_the_settings_table_is_generated_from_config() -> None:
    shown = settings_table.shown(DOCUMENTS["docs/operating.md"])
    assert shown == settings_table.block(), (
        f"docs/operating.md's settings table differs from gateway/config.py; "
        f"run: {settings_table.REGENERATE}"
    )


def test_every_setting_has_a_meaning_and_no_meaning_is_left_over() -> None:
    fields = Settings.model_fields
    missing = [name for name, field in fields.items()
               if not field.description and name not in settings_table.MEANINGS]  # fmt: skip
    assert not missing, (
        f"give {missing} a `description=` in gateway/config.py (or a line in "
        f"scripts/settings_table.py), then run: {settings_table.REGENERATE}"
    )
    leftover = (
        set(settings_table.MEANINGS)
        | set(settings_table.REQUIRED)
        | set(settings_table.SHOWN_DEFAULTS)
    ) - set(fields)
    assert not leftover
    for name in settings_table.SHOWN_DEFAULTS:
        assert fields[name].default_factory is not None, f"{name}'s default can be read"


@pytest.mark.parametrize(("name", "claim"), sorted(settings_table.REQUIRED.items()))
def test_a_setting_shown_as_required_is_refused_when_empty(
    name: str, claim: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    mode = "oauth" if "oauth" in claim else "static"
    values = {"v3_url": "http://127.0.0.1:1/v3", "legacy_url": "http://127.0.0.1:1/rest/v1",
              "legacy_api_key": "k", "v3_auth": mode, "v3_token": "t",
              "v3_token_url": "http://127.0.0.1:1/oauth/token", "v3_client_id": "c",
              "v3_client_secret": "s", "v3_audience": "a", "v3_intermediary_id": "agency"}  # fmt: skip
    load_settings(**values)
    with pytest.raises(SettingsError, match=settings_table.variable(name)):
        load_settings(**(values | {name: ""}))
