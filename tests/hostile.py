"""Shared parts of the hostile-input tests: a simulator that logs every raw upstream path,
and the check that each one addresses exactly one classified (and media) by encoded id."""

from __future__ import annotations

import re
from urllib.parse import unquote

from aiohttp import web

from gateway.simulator import Simulator

_SEGMENT = r"(?:[A-Za-z0-9._~-]|%[0-9A-F]{2})+"
V3_PATH = re.compile(
    rf"^/v3/classifieds/(?P<classified>{_SEGMENT})/(?:media/(?P<media>{_SEGMENT})/)?statuses$"
)
OTHER_UPSTREAM_PATHS = ("/legacy/", "/oauth/")


class SpiedSimulator(Simulator):
    """The simulator, with every request's raw path logged before routing (so a path that
    matches no route is seen too)."""

    def __init__(self) -> None:
        super().__init__(seed=7)
        self.raw_paths: list[str] = []

    def app(self) -> web.Application:
        app = super().app()

        @web.middleware
        async def spy(request: web.Request, handler: web.Handler) -> web.StreamResponse:
            self.raw_paths.append(request.raw_path.partition("?")[0])
            return await handler(request)

        app.middlewares.insert(0, spy)
        return app


def unencoded_paths(raw_paths: list[str]) -> list[str]:
    """The V3 paths that do not name one classified (and media) by a percent-encoded id."""
    bad = []
    for path in raw_paths:
        if path.startswith(OTHER_UPSTREAM_PATHS):
            continue
        match = V3_PATH.match(path)
        if match is None or any(
            segment in {".", ".."} or "/" in segment
            for segment in (match["classified"], match["media"] or "x")
        ):
            bad.append(path)
    return bad


def decoded_ids(raw_paths: list[str]) -> set[str]:
    """The classified ids the V3 paths name, decoded."""
    return {
        unquote(match["classified"])
        for path in raw_paths
        if (match := V3_PATH.match(path)) is not None
    }
