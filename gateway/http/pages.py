"""The browser pages, GraphiQL and the status board, with every asset served by the gateway.

Nothing loads from a CDN: the third-party bundles are vendored under `static/vendor/` in one
folder per package and version (re-vendored by `scripts/vendor-frontend.sh`), so their URLs
change with their version and can be cached for a year. The gateway's own page scripts keep
stable URLs and are revalidated (ETag) instead. Each page carries a Content-Security-Policy
that allows only this origin, so a stray external reference fails loudly in the browser.
"""

from __future__ import annotations

import asyncio
import gzip
import html
import os
from collections.abc import Sequence
from pathlib import Path
from string import Template
from typing import Final

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

PACKAGE_DIR = Path(__file__).parent
STATIC_DIR = PACKAGE_DIR / "static"
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_PREFIX = "/static"

# Folder names under static/vendor/; scripts/vendor-frontend.sh writes the same ones.
VENDOR: dict[str, str] = {
    "react": "react@18.2.0",
    "react_dom": "react-dom@18.2.0",
    "graphiql": "graphiql@3.8.3",
    "explorer": "graphiql-plugin-explorer@1.0.2",
    "graphql_ws": "graphql-ws@5.16.2",
}

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

# GraphiQL sets inline styles from React; scripts, fonts and sockets stay on this origin.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": REVALIDATE,
}


class CachedStatic(StaticFiles):
    """Static files with a cache policy by path: versioned vendor files are immutable."""

    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        vendored = "/vendor/" in str(scope.get("path", ""))
        response.headers["Cache-Control"] = IMMUTABLE if vendored else REVALIDATE
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


# Below this, gzip's framing costs more than it saves.
MIN_COMPRESSED_BYTES: Final = 1024
_COMPRESSIBLE: Final = ("text/", "application/javascript", "application/json", "image/svg+xml")


class CompressedStatic(CachedStatic):
    """`CachedStatic` that answers `Accept-Encoding: gzip` with a copy compressed once.

    The files are the package's own and few (GraphiQL's bundle is 3.5 MB): compressing
    them per request cost ~300 ms of CPU per page load. Each is compressed at most once per
    version on disk, in a worker thread (zlib releases the GIL), and kept in memory (about
    0.9 MB in all). The gzip copy carries the file's ETag as a weak one, so revalidation
    still answers 304. Range requests and HEAD get the file as it is.
    """

    def __init__(self, *, directory: PathLike) -> None:
        super().__init__(directory=directory)
        # path -> ((mtime, size), the compression): one entry per file, its latest version.
        self._gzipped: dict[str, tuple[tuple[int, int], asyncio.Future[bytes]]] = {}
        self.compressions = 0

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        request_headers = Headers(scope=scope)
        if (
            not isinstance(response, FileResponse)
            or response.status_code != 200
            or scope["method"] != "GET"
            or "range" in request_headers
            or "gzip" not in request_headers.get("accept-encoding", "")
            or response.stat_result is None
            or response.stat_result.st_size < MIN_COMPRESSED_BYTES
            or not (response.media_type or "").startswith(_COMPRESSIBLE)
        ):
            return response
        body = await self._compressed(str(response.path), response.stat_result)
        headers = MutableHeaders(raw=list(response.raw_headers))
        del headers["content-length"]
        headers["content-encoding"] = "gzip"
        headers["vary"] = "Accept-Encoding"
        headers["etag"] = "W/" + headers["etag"]
        return Response(body, headers=dict(headers))

    async def _compressed(self, path: str, stat: os.stat_result) -> bytes:
        version = (stat.st_mtime_ns, stat.st_size)
        known = self._gzipped.get(path)
        if known is None or known[0] != version or _failed(known[1]):
            self.compressions += 1
            known = (version, asyncio.ensure_future(asyncio.to_thread(_gzip_file, path)))
            self._gzipped[path] = known
        # Shielded: a client that goes away must not cancel the copy others are waiting for.
        return await asyncio.shield(known[1])


def _failed(task: asyncio.Future[bytes]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


def _gzip_file(path: str) -> bytes:
    with open(path, "rb") as file:
        return gzip.compress(file.read(), compresslevel=9, mtime=0)


def vendor_url(package: str, file: str) -> str:
    return f"{STATIC_PREFIX}/vendor/{VENDOR[package]}/{file}"


def _render(name: str, **values: str) -> str:
    template = Template((TEMPLATES_DIR / name).read_text(encoding="utf-8"))
    urls = {f"{key}_dir": f"{STATIC_PREFIX}/vendor/{folder}" for key, folder in VENDOR.items()}
    return template.substitute(static=STATIC_PREFIX, **urls, **values)


def graphiql_html(default_refs: Sequence[str] = ()) -> str:
    """The GraphiQL page: the vendored bundles and our own start-up script; `default_refs`
    (in the board's ref syntax) fill the variables of the query it opens with."""
    return _render("graphiql.html", default_refs=html.escape("\n".join(default_refs), quote=True))


def board_html(default_refs: Sequence[str]) -> str:
    """The board page; `default_refs` are shown when the URL names none."""
    return _render("board.html", default_refs=html.escape("\n".join(default_refs), quote=True))


def page_response(body: str) -> HTMLResponse:
    return HTMLResponse(body, headers=PAGE_HEADERS)


def frontend_routes(*, board_refs: Sequence[str] = ()) -> list[BaseRoute]:
    """`GET /board` and the static files under `/static`."""
    board_page = board_html(board_refs)

    async def board(request: Request) -> Response:
        return page_response(board_page)

    static = CompressedStatic(directory=STATIC_DIR)
    return [
        Route("/board", board, methods=["GET"]),
        Mount(STATIC_PREFIX, app=static, name="static"),
    ]
