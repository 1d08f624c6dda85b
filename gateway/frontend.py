"""The browser pages, GraphiQL and the status board, with every asset served by the gateway.

Nothing loads from a CDN: the third-party bundles are vendored under `static/vendor/` in one
folder per package and version (re-vendored by `scripts/vendor-frontend.sh`), so their URLs
change with their version and can be cached for a year. The gateway's own page scripts keep
stable URLs and are revalidated (ETag) instead. Each page carries a Content-Security-Policy
that allows only this origin, so a stray external reference fails loudly in the browser.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from string import Template

from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
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


def vendor_url(package: str, file: str) -> str:
    return f"{STATIC_PREFIX}/vendor/{VENDOR[package]}/{file}"


def _render(name: str, **values: str) -> str:
    template = Template((TEMPLATES_DIR / name).read_text(encoding="utf-8"))
    urls = {f"{key}_dir": f"{STATIC_PREFIX}/vendor/{folder}" for key, folder in VENDOR.items()}
    return template.substitute(static=STATIC_PREFIX, **urls, **values)


def graphiql_html() -> str:
    """The GraphiQL page: the vendored bundles and our own start-up script."""
    return _render("graphiql.html")


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

    static = GZipMiddleware(CachedStatic(directory=STATIC_DIR), minimum_size=1024)
    return [
        Route("/board", board, methods=["GET"]),
        Mount(STATIC_PREFIX, app=static, name="static"),
    ]
