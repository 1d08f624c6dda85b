"""Client tokens (`GATEWAY_CLIENT_TOKENS`): who may call the gateway at all.

Transport-neutral, so the HTTP, WebSocket and gRPC edges judge a presented
`Authorization: Bearer <token>` value the same way. Every configured token is compared,
each through a SHA-256 digest with `hmac.compare_digest`, so neither the position of a
match nor a token's length shows in the time taken. The tokens themselves are kept only
as digests and never appear in a repr, a log line or an error.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from pydantic import SecretStr

UNAUTHENTICATED_MESSAGE = "this gateway needs 'Authorization: Bearer <client token>'"


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

    def __init__(self, tokens: Iterable[str | SecretStr]) -> None:
        self._digests = tuple(
            _digest(t.get_secret_value() if isinstance(t, SecretStr) else t) for t in tokens
        )

    def __repr__(self) -> str:
        return f"ClientTokens(count={len(self._digests)})"

    @property
    def required(self) -> bool:
        return bool(self._digests)

    def allows(self, authorization: str | None) -> bool:
        """Whether an `Authorization` header value admits the caller."""
        if not self._digests:
            return True
        token = bearer_token(authorization)
        presented = _digest(token if token is not None else "")
        matched = False
        for digest in self._digests:
            # No early exit: every configured token costs the same comparison.
            matched |= hmac.compare_digest(presented, digest)
        return matched and token is not None
