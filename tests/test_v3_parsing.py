"""V3 dates and items are read the same on the fast path as on the general one."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.domain.models import (
    ClassifiedStatusCode,
    ClassifiedStatusItem,
    MediaStatusCode,
    MediaStatusItem,
    Portal,
)
from gateway.domain.records import frozen_builder
from gateway.upstreams.v3 import (
    _classified_status_item,
    _media_status_item,
    _parse_rfc3339_general,
    parse_classified_status,
    parse_rfc3339,
)

# Built once: hypothesis validates a strategy object at its first draw.
_DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=9)
_WHEN = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30))
_FRACTIONS = st.sampled_from(["", "."]) | _DIGITS.map(lambda d: "." + d)
_ZONES = st.sampled_from(["Z", "z", "", "+00:00", "-05:30", "+0200", "+14:00", "-23:59", " "])
_SWAPS = st.sampled_from(["-", ":", "T", "t", " ", "x", "٣", ",", "."])


@st.composite
def rfc3339_like(draw: st.DrawFn) -> str:
    """Dates in and near the shape V3 sends: valid ones, and ones broken in one place."""
    when = draw(_WHEN).replace(microsecond=0)
    text = when.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0")
    fraction = draw(_FRACTIONS)
    zone = draw(_ZONES)
    value = text + fraction + zone
    if draw(st.booleans()):
        position = draw(st.integers(0, len(value) - 1))
        swap = draw(_SWAPS)
        value = value[:position] + swap + value[position + 1 :]
    return value


@settings(max_examples=2000, deadline=None)
@given(rfc3339_like() | st.text(max_size=40))
@example("2024-03-01T10:20:30.123456789Z")
@example("0001-01-01T00:30:00+01:00")
@example("2024-03-01T10:20:30,5Z")
@example("2024-03-01T10:20:30.Z")
@example("٢٠٢٤-03-01T10:20:30Z")
@example(" 2024-03-01T10:20:30Z")
def test_the_fast_path_reads_every_date_as_the_general_one_does(value: str) -> None:
    assert parse_rfc3339(value) == _parse_rfc3339_general(value)


def test_dates_are_aware_utc_and_fractions_are_truncated() -> None:
    parsed = parse_rfc3339("2024-03-01T12:20:30.1234569+02:00")
    assert parsed == datetime(2024, 3, 1, 10, 20, 30, 123456, tzinfo=UTC)
    assert parsed is not None and parsed.utcoffset() is not None
    assert parse_rfc3339("2024-03-01T10:20:30Z") == datetime(2024, 3, 1, 10, 20, 30, tzinfo=UTC)


def test_an_item_keeps_every_field_and_repeats_no_portal() -> None:
    item = parse_classified_status(
        {
            "status": "RECEIVED",
            "subStatus": "RECEIVING_PATCH",
            "message": "ok",
            "statusDate": "2024-03-01T10:20:30.5Z",
            "portals": ["SL", "SL", "NOT_A_PORTAL", "NOT_A_PORTAL", "", 7],
            "subStatusDetails": 12,
            "statusId": "s-1",
            "classifiedId": "c-1",
            "customerId": "",
            "creationDate": "2024-03-01T10:00:00+01:00",
            "revision": "3",
        }
    )
    assert [p.value for p in item.portals] == ["SL"]
    assert item.unknown_portals == ("NOT_A_PORTAL",)
    assert item.sub_status == "RECEIVED_PATCH"  # the vendor's typo, mended
    assert item.sub_status_details == "12"
    assert (item.status_id, item.classified_id, item.customer_id) == ("s-1", "c-1", None)
    assert not hasattr(item, "creation_date")  # read by neither edge, so not kept
    assert item.revision == 3


def test_repeated_strings_of_a_history_are_held_once() -> None:
    def item(status_id: str) -> dict[str, object]:
        return {
            "status": "CREATED", "message": "".join(["Published on ", "every portal"]),
            "statusDate": "2024-03-01T10:20:30Z", "subStatus": "".join(["PUB", "LISHED_OK"]),
            "statusId": status_id, "classifiedId": "".join(["c-", "1"]), "customerId": "RC-1",
        }  # fmt: skip

    first, second = parse_classified_status(item("s-1")), parse_classified_status(item("s-2"))
    for name in ("raw_status", "message", "sub_status", "classified_id", "customer_id"):
        assert getattr(first, name) is getattr(second, name), name
    assert first.status_id != second.status_id
    empty = parse_classified_status(item("s-3") | {"subStatus": "", "customerId": ""})
    assert (empty.sub_status, empty.customer_id) == ("", None)


def test_a_portal_list_is_read_the_same_the_second_time() -> None:
    def portals_of(codes: object) -> tuple[tuple[str, ...], tuple[str, ...]]:
        item = parse_classified_status(
            {"status": "PUBLISHED", "message": "", "statusDate": "2024-03-01T10:20:30Z",
             "portals": codes}
        )  # fmt: skip
        return tuple(p.value for p in item.portals), item.unknown_portals

    for codes in (["SL", "LI", "SL"], ["SL", {"odd": 1}, ["x"], "BU"], ["XX", "SL"], "LI"):
        first = portals_of(codes)
        assert portals_of(codes) == first
    assert portals_of(["SL", {"odd": 1}, ["x"], "BU"]) == (("SL", "BU"), ())
    assert portals_of(["XX", "SL"]) == (("SL",), ("XX",))


@settings(max_examples=200, deadline=None)
@given(
    status=st.sampled_from(list(ClassifiedStatusCode)),
    message=st.text(max_size=5),
    portals=st.lists(st.sampled_from(list(Portal)), max_size=3).map(tuple),
    optional=st.lists(st.none() | st.text(max_size=4), min_size=5, max_size=5),
    revision=st.none() | st.integers(1, 9),
)
def test_a_built_item_is_the_item_its_constructor_makes(
    status: ClassifiedStatusCode,
    message: str,
    portals: tuple[Portal, ...],
    optional: list[str | None],
    revision: int | None,
) -> None:
    """The parsers build items with `frozen_builder`: equal, equally hashed, as frozen."""
    values = (status, status.value, message, datetime(2024, 1, 2, tzinfo=UTC), portals, ())
    values += (*optional, revision)
    built = _classified_status_item(*values)
    made = ClassifiedStatusItem(*values)
    assert type(built) is ClassifiedStatusItem
    assert built == made and hash(built) == hash(made) and repr(built) == repr(made)
    with pytest.raises(FrozenInstanceError):
        built.message = "changed"  # type: ignore[misc]
    media = (MediaStatusCode.DOWNLOADED, "DOWNLOADED", message, values[3], None, *optional)
    media += ("media-1", "customer-1")
    assert _media_status_item(*media) == MediaStatusItem(*media)


def test_only_slotted_dataclasses_without_post_init_get_a_builder() -> None:
    @dataclass(frozen=True)
    class Unslotted:
        a: int

    @dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            raise ValueError

    for cls in (Unslotted, Checked):
        with pytest.raises(TypeError):
            frozen_builder(cls)
