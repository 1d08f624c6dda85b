"""The HTTP listening socket, bound before the server starts.

Binding first lets the commands name the real port (0 picks a free one) and report a busy
port in one line. The socket is made with protocol IPPROTO_TCP on purpose: asyncio turns
Nagle's algorithm off (TCP_NODELAY) only on accepted sockets whose protocol says TCP, and
`socket.create_server` leaves it 0. Without it, a keep-alive response written in two parts
(head, then body) waited for the client's delayed ACK: about 40 ms on every request after a
connection's first.
"""

from __future__ import annotations

import socket
from typing import Final

# uvicorn's own default.
BACKLOG: Final = 2048


def bind_listener(
    host: str, port: int, *, backlog: int = BACKLOG, reuse_port: bool = False
) -> socket.socket:
    """A TCP socket bound to `host:port` and listening; raises OSError (e.g. port in use).

    With `reuse_port`, other sockets of this user may listen on the same port (SO_REUSEPORT):
    the kernel spreads new connections over them, as the workers of `serve --workers N` do.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
        flags=socket.AI_PASSIVE,
    )[0]  # fmt: skip
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
