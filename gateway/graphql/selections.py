"""Looking ahead at a query's selection, so one read can answer several fields."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from strawberry.types import Info
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection


def fields_of(selections: Iterable[Selection]) -> Iterator[SelectedField]:
    """The fields of a selection set, through fragments of any depth."""
    for selection in selections:
        if isinstance(selection, SelectedField):
            yield selection
        elif isinstance(selection, FragmentSpread | InlineFragment):
            yield from fields_of(selection.selections)


def selected_below(info: Info[Any, Any]) -> Iterator[SelectedField]:
    """The fields selected under the field being resolved."""
    for field in info.selected_fields:
        yield from fields_of(field.selections)
