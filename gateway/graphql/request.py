"""What a `/graphql` HTTP request must look like before its document is even parsed.

strawberry's own body parsing answers 500 to a body that is not UTF-8 or not a JSON object,
and reads variables of any depth. These checks run first and refuse such a request with a
4xx and a GraphQL-shaped error (`extensions.code`), following GraphQL-over-HTTP:

- POST needs `Content-Type: application/json` (charset utf-8 if given), else 415;
- the body must be strict UTF-8 JSON (orjson: lone surrogates refused too), else 400;
- it must be one JSON object — a batched array is refused, batching is not offered;
- `query` and `operationName` are strings, `variables` and `extensions` objects, if present;
- variables and extensions nest at most `max_depth` levels (a ListingRef list needs 4).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

BAD_REQUEST_CODE = "BAD_USER_INPUT"
JSON_MEDIA_TYPES = frozenset({"application/json", "application/graphql-response+json"})


class RequestRefused(Exception):
    """The request is refused before execution; the edge answers `status` with one error."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str = BAD_REQUEST_CODE,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.extensions = dict(extensions or {})

    def body(self) -> dict[str, Any]:
        """The GraphQL response that carries this refusal."""
        extensions = {**self.extensions, "code": self.code}
        return {"errors": [{"message": self.message, "extensions": extensions}]}


def check_content_type(content_type: str | None) -> None:
    """Refuses a POST whose body is not declared as UTF-8 JSON (415)."""
    media_type, _, params = (content_type or "").partition(";")
    media_type = media_type.strip().lower()
    if media_type not in JSON_MEDIA_TYPES:
        raise RequestRefused(
            415,
            "POST /graphql takes Content-Type: application/json",
            headers={"Accept-Post": "application/json"},
        )
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            raise RequestRefused(415, "the request body must be UTF-8 JSON")


def decode_json(data: str | bytes) -> object:
    """Strict JSON: invalid UTF-8, lone surrogates and nesting past 1024 levels are refused."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise RequestRefused(400, "the request body is not valid UTF-8 JSON") from None


def check_params(data: object, *, max_depth: int) -> dict[str, Any]:
    """The request's parameters (a POST body or GET's query parameters), checked for shape."""
    if isinstance(data, list):
        raise RequestRefused(
            400, "batched requests are not supported: send one operation per request"
        )
    if not isinstance(data, dict):
        raise RequestRefused(400, "the request body must be a JSON object")
    for name, kind in (("query", str), ("operationName", str)):
        value = data.get(name)
        if value is not None and not isinstance(value, kind):
            raise RequestRefused(400, f"`{name}` must be a string")
    for name in ("variables", "extensions"):
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise RequestRefused(400, f"`{name}` must be an object")
        check_nesting(name, value, max_depth=max_depth)
    persisted = "persistedQuery" in (data.get("extensions") or {}) or "documentId" in data
    if data.get("query") is None and not persisted:
        raise RequestRefused(400, "the request has no `query`")
    return data


def check_nesting(name: str, value: object, *, max_depth: int) -> None:
    """Refuses `value` (the request's `name`) if it nests deeper than `max_depth` levels."""
    if _depth_exceeds(value, max_depth):
        raise RequestRefused(400, f"`{name}` nest deeper than {max_depth} levels")


def _depth_exceeds(value: object, limit: int) -> bool:
    # Iterative, so a hostile value cannot exhaust the interpreter's stack.
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, dict):
            children: Any = current.values()
        elif isinstance(current, list):
            children = current
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def is_graphiql_page(method: str, params: Mapping[str, str], accept: str) -> bool:
    """A browser asking for the GraphiQL page: a GET that names no document at all.

    The view renders GraphiQL for exactly these requests, so the page can stay open
    without letting any operation through.
    """
    return (
        method == "GET"
        and not any(name in params for name in ("query", "extensions", "documentId"))
        and ("text/html" in accept or "*/*" in accept)
    )
