"""The "Request limits" table of docs/security.md names real settings with their real defaults."""

from __future__ import annotations

import re

from documents import document_with

from gateway.config import Settings

HEADER = "| limit | setting | default | refused with |"


def security_rows() -> list[tuple[str, str]]:
    _, text = document_with(HEADER)
    table = text[text.index(HEADER) :].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and cells[1].startswith("`GATEWAY_"):
            rows.append((cells[1], cells[2]))
    return rows


def test_every_limit_names_a_setting_with_its_default() -> None:
    rows = security_rows()
    assert len(rows) >= 10
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    for names, shown in rows:
        settings = re.findall(r"`GATEWAY_([A-Z0-9_]+)`", names)
        values = [value.strip() for value in shown.split("/")]
        assert len(settings) == len(values), names
        for setting, value in zip(settings, values, strict=True):
            default = defaults[setting.lower()]
            number = re.match(r"^(\d+|true|false|unset)", value)
            assert number is not None, (setting, value)
            expected = {"true": True, "false": False, "unset": None}.get(
                number.group(1), number.group(1)
            )
            actual = default if isinstance(default, bool | None) else str(default)
            assert actual == expected, setting
