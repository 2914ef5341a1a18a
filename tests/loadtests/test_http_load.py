"""The benchmarks' HTTP/1.1 load generator against a scripted loopback server: keep-alive reuse,
chunked answers, Connection: close, and a kept-alive connection the server closed while idle."""

from __future__ import annotations

import asyncio

import pytest

from loadtests.bench.http_load import HttpError, HttpPool


class _Server:
    """Answers each request with ``mode``: "length", "chunked", "close" (Connection: close), or
    "drop-idle" (answers, then closes the connection once the client is idle)."""

    def __init__(self, mode: str) -> None:
        self.mode, self.connections, self.bodies = mode, 0, []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                body = await reader.readexactly(length)
                self.bodies.append(body)
                answer = b"echo:" + body
                if self.mode == "chunked":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + b"%x\r\n%s\r\n" % (3, answer[:3])
                        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(answer) - 3, answer[3:])
                    )
                else:
                    close = b"Connection: close\r\n" if self.mode == "close" else b""
                    writer.write(
                        b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n%s\r\n%s"
                        % (len(answer), close, answer)
                    )
                await writer.drain()
                if self.mode in ("close", "drop-idle"):
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


async def _run(mode: str, bodies: list[bytes], pause: bool = True) -> tuple[list, _Server]:
    server = _Server(mode)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    pool = HttpPool(f"http://127.0.0.1:{port}/v1/rank", {"content-type": "application/json"})
    answers = []
    try:
        for body in bodies:
            answers.append(await pool.post(body))
            if pause:
                await asyncio.sleep(0.01)  # a closing server's FIN arrives before the next post
    finally:
        await pool.aclose()
        listener.close()
    return answers, server


@pytest.mark.parametrize("mode", ["length", "chunked"])
def test_answers_are_read_whole_over_one_kept_alive_connection(mode: str) -> None:
    bodies = [b'{"a": 1}', b'{"b": 22}', b"x" * 70_000]
    answers, server = asyncio.run(_run(mode, bodies))
    assert [a.body for a in answers] == [b"echo:" + b for b in bodies]
    assert server.bodies == bodies
    assert server.connections == 1
    assert answers[0].status == (200 if mode == "chunked" else 201)


@pytest.mark.parametrize("pause", [True, False], ids=["closed-seen", "closed-as-sent"])
@pytest.mark.parametrize("mode", ["close", "drop-idle"])
def test_a_connection_the_server_closed_is_replaced_and_nothing_is_lost(
    mode: str, pause: bool
) -> None:
    # Without the pause the next request may be written to a connection the server has just
    # closed: it is sent again on a new one, and the server still sees it once.
    bodies = [b"1", b"2", b"3"]
    answers, server = asyncio.run(_run(mode, bodies, pause))
    assert [a.body for a in answers] == [b"echo:1", b"echo:2", b"echo:3"]
    assert server.bodies == bodies  # each request reached the server exactly once
    assert server.connections == 3


def test_no_server_is_an_http_error() -> None:
    async def go() -> None:
        listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        listener.close()
        await listener.wait_closed()
        await HttpPool(f"http://127.0.0.1:{port}/").post(b"x")

    with pytest.raises(HttpError, match="cannot connect"):
        asyncio.run(go())


def test_only_plain_http_urls() -> None:
    with pytest.raises(ValueError, match="http://"):
        HttpPool("https://example.com/")
