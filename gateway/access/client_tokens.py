"""Client tokens (`GATEWAY_CLIENT_TOKENS`): who may call the gateway at all.

Transport-neutral, so the HTTP, WebSocket and gRPC edges judge a presented
`Authorization: Bearer <token>` value the same way. Every configured token is compared,
each through a SHA-256 digest with `hmac.compare_digest`, so neither the position of a
match nor a token's length shows in the time taken. The tokens themselves are kept only
as digests and never appear in a repr, a log line or an error.

A token may be bound to agencies, `<token>@<agency>|<agency>…`: it then admits only requests
that name one of them with `X-Intermediary-Id` (or, naming none, whose default agency is
one of them), so a client holding it cannot act for another agency. A token itself cannot
contain `@`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Iterable

from pydantic import SecretStr

UNAUTHENTICATED_MESSAGE = "this gateway needs 'Authorization: Bearer <client token>'"
FORBIDDEN_AGENCY_MESSAGE = "this client token does not act for the agency the request names"


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    # No configured token matched (or none was presented).
    UNAUTHENTICATED = "unauthenticated"
    # A token matched, but it is bound to agencies and the request names another.
    FORBIDDEN = "forbidden"


def split_entry(entry: str) -> tuple[str, frozenset[str] | None]:
    """A `GATEWAY_CLIENT_TOKENS` entry as (token, the agencies it is bound to or None)."""
    token, at, agencies = entry.partition("@")
    if not at:
        return entry, None
    bound = frozenset(a.strip() for a in agencies.split("|") if a.strip())
    if not token or not bound:
        raise ValueError("a bound client token reads `<token>@<agency>[|<agency>…]`")
    return token, bound


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def bearer_token(value: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value, None unless it has that form."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class ClientTokens:
    """The bearer tokens callers must present; empty means the gateway is open."""

    def __init__(self, tokens: Iterable[str | SecretStr], *, default_agency: str = "") -> None:
        entries = [
            split_entry(t.get_secret_value() if isinstance(t, SecretStr) else t) for t in tokens
        ]
        self._digests = tuple(_digest(token) for token, _ in entries)
        self._agencies = tuple(agencies for _, agencies in entries)
        self._default_agency = default_agency

    def __repr__(self) -> str:
        return f"ClientTokens(count={len(self._digests)})"

    @property
    def required(self) -> bool:
        return bool(self._digests)

    def allows(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header value admits the caller (for some agency)."""
        return self.judge(authorization, agency=None) is not Verdict.UNAUTHENTICATED

    def judge(self, authorization: str | None, *, agency: str | None) -> Verdict:
        """What an `Authorization` header value admits for a request that names `agency`
        with `X-Intermediary-Id` (None or blank: the default agency)."""
        if not self._digests:
            return Verdict.ALLOWED
        token = bearer_token(authorization)
        presented = _digest(token if token is not None else "")
        matched: int | None = None
        for index, digest in enumerate(self._digests):
            # No early exit: every configured token costs the same comparison.
            if hmac.compare_digest(presented, digest):
                matched = index
        if matched is None or token is None:
            return Verdict.UNAUTHENTICATED
        bound = self._agencies[matched]
        if agency is not None and bound is not None:
            named = agency.strip() or self._default_agency
            if named not in bound:
                return Verdict.FORBIDDEN
        return Verdict.ALLOWED
