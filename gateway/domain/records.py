"""Frozen records built at the speed of plain ones.

A frozen dataclass's generated `__init__` sets each field through `object.__setattr__` by
name, to get past its own refusal of assignment: ~1.3 µs for a 12-field status item against
~0.2 µs for a plain one. The V3 parsers build one item per history entry — some 4,000 for a
200-listing cache-cold request — so they use `frozen_builder`, which sets the slots through
their descriptors directly (~0.7 µs). The records stay what they are: frozen, hashable,
compared by value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

__all__ = ["frozen_builder"]

T = TypeVar("T")


def frozen_builder(cls: type[T]) -> Callable[..., T]:
    """A function taking every field of the frozen, slotted dataclass `cls` positionally, in
    declaration order, and returning the record `cls(*those)` would; no defaults, no
    `__post_init__`."""
    if not is_dataclass(cls) or "__slots__" not in vars(cls):
        raise TypeError(f"{cls.__name__} is not a slotted dataclass")
    if "__post_init__" in vars(cls):
        raise TypeError(f"{cls.__name__} has a __post_init__, which the builder would skip")
    names = [f.name for f in fields(cls)]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    for name in names:
        namespace[f"_set_{name}"] = getattr(cls, name).__set__
    body = "".join(f"    _set_{name}(record, {name})\n" for name in names)
    source = f"def build({', '.join(names)}):\n    record = _new(_cls)\n{body}    return record\n"
    exec(compile(source, f"<builder of {cls.__name__}>", "exec"), namespace)
    build: Callable[..., T] = namespace["build"]
    build.__qualname__ = build.__name__ = f"build_{cls.__name__}"
    return build
