"""What a caller asks of listings, in domain terms: the edges describe it, the service plans it.

An edge (GraphQL, gRPC) turns its request into a `ListingSelection`: does the caller want
the legacy view, the unified portals and state, the classified's latest status, which
pages of its history (each distinct argument set once), which media. The service then
decides which upstream reads answer all of it and gathers them in one async step
(`ListingRequest.listings`). Nothing here knows GraphQL or gRPC.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.domain.cursors import Cursor, KeysetCursor, decode_cursor
from gateway.domain.models import ClassifiedStatusCode, ListingRef, Portal
from gateway.service.checks import DEFAULT_PAGE_SIZE


@dataclass(frozen=True, slots=True)
class PageArgs:
    """One page of a status history as asked; normalised, so equal asks compare equal."""

    first: int = DEFAULT_PAGE_SIZE
    after: str | None = None
    statuses: tuple[ClassifiedStatusCode, ...] = ()
    portals: tuple[Portal, ...] = ()

    @classmethod
    def of(
        cls,
        first: int | None = None,
        after: str | None = None,
        statuses: Iterable[str] | None = None,
        portals: Iterable[str] | None = None,
    ) -> PageArgs:
        """Arguments as an edge received them: absent or null mean the defaults."""
        return cls(
            first=DEFAULT_PAGE_SIZE if first is None else first,
            after=after or None,
            statuses=tuple(sorted({ClassifiedStatusCode(code) for code in statuses or ()})),
            portals=tuple(sorted({Portal(code) for code in portals or ()})),
        )

    @property
    def cursor(self) -> Cursor | None:
        """The decoded `after` (argument checks have refused one that does not decode)."""
        return None if self.after is None else decode_cursor(self.after)


@dataclass(frozen=True, slots=True)
class MediaSelection:
    """What is asked of one media of a classified."""

    media_id: str
    latest: bool = False
    pages: tuple[PageArgs, ...] = ()


@dataclass(frozen=True, slots=True)
class ClassifiedSelection:
    """What is asked of a listing's V3 view."""

    latest: bool = False
    pages: tuple[PageArgs, ...] = ()
    media: tuple[MediaSelection, ...] = ()


@dataclass(frozen=True, slots=True)
class ListingSelection:
    """What is asked of each listing of a request."""

    legacy: bool = False  # the legacy view itself
    unified: bool = False  # portals and state: both sources, the whole V3 history
    classified: ClassifiedSelection = ClassifiedSelection()


@dataclass(slots=True)
class SelectionBuilder:
    """Collects asks one at a time (in any order, with repeats) into a `ListingSelection`."""

    legacy: bool = False
    unified: bool = False
    latest: bool = False
    pages: dict[PageArgs, None] = field(default_factory=dict)
    media: dict[str, tuple[bool, dict[PageArgs, None]]] = field(default_factory=dict)

    def add_page(self, args: PageArgs) -> None:
        self.pages[args] = None

    def add_media(
        self, media_id: str, *, latest: bool = False, page: PageArgs | None = None
    ) -> None:
        was_latest, pages = self.media.get(media_id, (False, {}))
        if page is not None:
            pages[page] = None
        self.media[media_id] = (was_latest or latest, pages)

    def build(self) -> ListingSelection:
        return ListingSelection(
            legacy=self.legacy,
            unified=self.unified,
            classified=ClassifiedSelection(
                latest=self.latest,
                pages=tuple(self.pages),
                media=tuple(
                    MediaSelection(media_id, latest, tuple(pages))
                    for media_id, (latest, pages) in self.media.items()
                ),
            ),
        )

    def add(self, selection: ListingSelection) -> None:
        """Every ask of `selection` (another root field's, for one listing)."""
        self.legacy |= selection.legacy
        self.unified |= selection.unified
        asked = selection.classified
        self.latest |= asked.latest
        for args in asked.pages:
            self.add_page(args)
        for media in asked.media:
            self.add_media(media.media_id, latest=media.latest)
            for args in media.pages:
                self.add_media(media.media_id, page=args)


def asked_per_classified(
    asks: Iterable[tuple[Iterable[ListingRef], ListingSelection]],
) -> dict[str, ListingSelection]:
    """What `asks` (each root field's refs and selection) ask of each classified, merged."""
    classifieds: dict[str, list[ListingSelection]] = {}
    for refs, selection in asks:
        for ref in refs:
            if ref.classified_id is not None:
                classifieds.setdefault(ref.classified_id, []).append(selection)
    return {classified_id: merged(selections) for classified_id, selections in classifieds.items()}


def merged(selections: Iterable[ListingSelection]) -> ListingSelection:
    """One selection that asks all that `selections` ask (of one listing)."""
    builder = SelectionBuilder()
    for selection in selections:
        builder.add(selection)
    return builder.build()


def reads_whole_history(asked: ClassifiedSelection, *, unified: bool, refresh: bool) -> bool:
    """Whether a classified's asks are answered from its whole history, read once: the
    unified state and a refresh need it, a keyset cursor pages through it, and two or more
    fresh asks (its latest status, first pages) cost one read on a one-page history instead
    of one each."""
    return (
        unified
        or refresh
        or any(isinstance(args.cursor, KeysetCursor) for args in asked.pages)
        or asked.latest + _fresh(asked.pages) >= 2
    )


def _fresh(pages: Iterable[PageArgs]) -> int:
    return sum(1 for args in pages if args.after is None)
