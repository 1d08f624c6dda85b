"""The gateway's HTTP listener: accepted connections send small writes at once."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.infra.listener import bind_listener


async def test_accepted_connections_have_nagle_off() -> None:
    """asyncio sets TCP_NODELAY only on sockets made with protocol IPPROTO_TCP; with Nagle on,
    a response written as head then body waits ~40 ms for the client's delayed ACK."""
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    with bind_listener("127.0.0.1", 0) as listener:
        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        async with server:
            port = listener.getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await accepted != 0
            writer.close()


def test_a_busy_port_is_an_os_error_and_port_0_picks_one() -> None:
    with bind_listener("127.0.0.1", 0) as first:
        port = first.getsockname()[1]
        assert port != 0
        with pytest.raises(OSError):
            bind_listener("127.0.0.1", port).close()
