"""Opaque cursors: they round-trip, and anything else is refused as the caller's mistake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.domain import ids
from gateway.domain.cursors import KeysetCursor, UpstreamCursor, decode_cursor, encode_cursor
from gateway.domain.errors import InvalidInput
from gateway.domain.models import ClassifiedStatusCode, ClassifiedStatusItem
from gateway.service.histories import History

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def item(minutes: int, status_id: str | None = None) -> ClassifiedStatusItem:
    return ClassifiedStatusItem(
        status=ClassifiedStatusCode.CREATED,
        raw_status="CREATED",
        message="",
        status_date=T0 + timedelta(minutes=minutes),
        status_id=status_id,
    )


def id_of(entry: ClassifiedStatusItem) -> str:
    return ids.status_item_id("c1", entry)


@pytest.mark.parametrize(
    "cursor",
    [UpstreamCursor("eyJ0b2tlbiI6IDF9|+/="), KeysetCursor(T0, "s-1|x"), KeysetCursor(T0, "id")],
)
def test_cursors_round_trip(cursor: UpstreamCursor | KeysetCursor) -> None:
    opaque = encode_cursor(cursor)
    assert decode_cursor(opaque) == cursor
    assert "|" not in opaque and "=" not in opaque


# "ks:2024-01-01T00:00:00|x": a keyset position whose date has no UTC offset, which the
# gateway never writes and which cannot be compared with the history's dates.
FORGED_NAIVE_KEYSET = "a3M6MjAyNC0wMS0wMVQwMDowMDowMHx4"


@pytest.mark.parametrize(
    "opaque",
    ["", "e:c29tZQ", "not base64!", "djM6", "a3M6bm90LWEtZGF0ZXxpZA", "a3M6", FORGED_NAIVE_KEYSET],
)
def test_anything_but_a_cursor_is_invalid_input(opaque: str) -> None:
    with pytest.raises(InvalidInput):
        decode_cursor(opaque)


def test_keyset_pages_cover_a_history_once_even_when_newer_items_arrive() -> None:
    history = History(tuple(item(m, f"s{m}") for m in range(9, -1, -1)), complete=True)
    first = history.cut(4, id_of)
    assert first is not None and first.has_next_page
    assert [i.status_id for i in first.items] == ["s9", "s8", "s7", "s6"]
    assert first.ids == ("s9", "s8", "s7", "s6")
    grown = History((item(20, "new"), *history.items), complete=True)
    after = decode_cursor(first.end_cursor or "")
    assert isinstance(after, KeysetCursor)
    second = grown.cut(4, id_of, after=after)
    assert second is not None and [i.status_id for i in second.items] == ["s5", "s4", "s3", "s2"]
    third = grown.cut(4, id_of, after=decode_cursor(second.end_cursor or ""))  # type: ignore[arg-type]
    assert third is not None and [i.status_id for i in third.items] == ["s1", "s0"]
    assert not third.has_next_page and third.end_cursor is None


def test_keyset_position_survives_its_item_disappearing() -> None:
    history = History(tuple(item(m, f"s{m}") for m in (5, 3, 1)), complete=True)
    page = history.cut(2, id_of, after=KeysetCursor(T0 + timedelta(minutes=4), "gone"))
    assert page is not None and [i.status_id for i in page.items] == ["s3", "s1"]


def test_an_incomplete_history_leaves_a_short_first_page_to_v3() -> None:
    history = History((item(2), item(1)), complete=False)
    assert history.cut(5, id_of) is None
    page = history.cut(1, id_of)
    assert page is not None and page.has_next_page


def test_a_history_of_the_same_cached_pages_is_built_once() -> None:
    import gc

    from gateway.domain.models import StatusPage
    from gateway.service.histories import HistoryMemo

    memo = HistoryMemo(max_entries=4)
    pages = (StatusPage((item(1), item(3)), "t"), StatusPage((item(2),)))
    first = memo.get(pages, complete=True)
    assert [entry.status_date.minute for entry in first.items] == [3, 2, 1]
    assert memo.get(pages, complete=True) is first
    replaced = (pages[0], StatusPage((item(4),)))  # the cache read the last page anew
    assert memo.get(replaced, complete=True) is not first
    assert len(memo) == 2
    del pages, replaced, first
    gc.collect()
    assert len(memo) == 0  # the pages are gone: so are the histories built from them


def test_a_history_the_memo_lets_go_leaves_no_reference_cycle() -> None:
    import gc

    from gateway.domain.models import StatusPage
    from gateway.service.histories import HistoryMemo

    memo = HistoryMemo(max_entries=1)
    first = (StatusPage((item(1),)),)
    second = (StatusPage((item(2),)),)
    gc.collect()
    gc.disable()
    try:
        memo.get(first, complete=True)
        memo.get(second, complete=True)  # the first history is evicted
        assert len(memo) == 1
        assert gc.collect() == 0
        del second
        assert len(memo) == 0  # its page gone, the second history is forgotten too
    finally:
        gc.enable()
