"""One Redis connection that every request's read shares: commands pipelined, replies in order.

Redis answers a connection's commands in the order it received them, so a queue of waiting
reads pairs each reply with the read that sent its command. A read is one ``transport.write``
of its commands (packed by hiredis); hiredis parses the bytes in the protocol's
``data_received`` callback as they arrive, and a read's future completes when its last reply
is in. No connection pool, no command objects, no retry wrapper: on a 2-vCPU EPYC Zen 4 the
ranker's read (two HGETs and two ZRANGEs of 400 records) cost the event loop 0.21 ms of CPU
this way against 0.47 ms through ``redis.asyncio``'s pipeline, back to back, in one run of
``python -m loadtests.bench.features --tag zen4`` (docs/benchmarks/features-zen4.md).

A read that gives up (the request's budget cancels it) keeps its place in the queue: its
replies, when they come, are parsed and dropped, so a late reply is never taken for another
read's. A connection with a reply outstanding for longer than ``stale_s`` is closed by the
next read, which opens a new one. A connection that breaks fails every read waiting on it with
``ConnectionError``; the next read reconnects (one connect at a time, shared by the reads that
wait for it).

The ranker's reader for one Redis server. redis-py serves Redis Cluster and
``RANKER_REDIS_READER=redis-py``, the reference path; tests/ranker_service/test_redis_mux.py
holds the two equal.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hiredis
from redis.connection import SSLConnection, parse_url
from redis.exceptions import ResponseError

Command = Sequence[bytes | str | int]


def pack(commands: Sequence[Command]) -> bytes:
    """Commands -> their RESP bytes, back to back (one write)."""
    return b"".join(hiredis.pack_command(tuple(c)) for c in commands)


@dataclass(eq=False)
class _Read:
    future: asyncio.Future[list[Any]]
    expected: int  # replies
    sent_at: float
    replies: list[Any] = field(default_factory=list)


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Callable[[], float]) -> None:
        self.loop, self.clock = loop, clock
        self.parser = hiredis.Reader()
        self.waiting: deque[_Read] = deque()
        self.transport: asyncio.Transport | None = None
        self.made: asyncio.Future[None] = loop.create_future()  # connection_made has run
        self.error: ConnectionError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.made.set_result(None)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        try:
            while (reply := self.parser.gets()) is not False:
                if not self.waiting:
                    raise hiredis.ProtocolError("a reply nobody asked for")
                read = self.waiting[0]
                read.replies.append(reply)
                if len(read.replies) == read.expected:
                    self.waiting.popleft()
                    if not read.future.done():  # a read that gave up is done (cancelled)
                        read.future.set_result(read.replies)
        except hiredis.ProtocolError as e:
            self.fail(ConnectionError(f"redis protocol error: {e}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError(f"redis connection lost: {exc or 'closed by the server'}"))

    def fail(self, error: ConnectionError) -> None:
        """Close the connection and fail every read waiting on it (the first error wins)."""
        if self.error is None:
            self.error = error
        if self.transport is not None:
            self.transport.abort()
        while self.waiting:
            read = self.waiting.popleft()
            if not read.future.done():
                read.future.set_exception(ConnectionError(*self.error.args))

    def send(self, commands: Sequence[Command], limit: int) -> asyncio.Future[list[Any]]:
        if self.error is not None:
            raise self.error
        if len(self.waiting) >= limit:
            raise ConnectionError(f"{limit} redis reads already waiting on one connection")
        assert self.transport is not None
        read = _Read(self.loop.create_future(), len(commands), self.clock())
        self.waiting.append(read)
        self.transport.write(pack(commands))
        return read.future

    def stale(self, stale_s: float) -> bool:
        return bool(self.waiting) and self.clock() - self.waiting[0].sent_at > stale_s


class MultiplexedRedis:
    """Reads from one Redis server (``redis://``, ``rediss://`` or ``unix://`` URL, with the
    password, user and database the URL names) over one shared, pipelined connection."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float,
        stale_s: float,
        tls_ca_file: Path | None = None,
        max_waiting: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        options = parse_url(url)
        self.host: str | None = options.get("host", "localhost")
        self.port: int = options.get("port", 6379)
        self.path: str | None = options.get("path")
        self.ssl: ssl.SSLContext | None = None
        if options.get("connection_class") is SSLConnection:
            cafile = str(tls_ca_file) if tls_ca_file is not None else None
            self.ssl = ssl.create_default_context(cafile=cafile)
        self.setup: list[Command] = []
        if options.get("password") is not None:
            user = options.get("username")
            self.setup.append(("AUTH", *([user] if user else []), options["password"]))
        if options.get("db"):
            self.setup.append(("SELECT", options["db"]))
        self.connect_timeout_s, self.stale_s = connect_timeout_s, stale_s
        self.max_waiting, self.clock = max_waiting, clock
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self.connections_opened = 0

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """The replies to ``commands``, in order. Raises ``ConnectionError`` (or ``OSError``,
        ``TimeoutError`` from connecting) when Redis is unreachable and ``ResponseError`` when
        it answered a command with an error."""
        conn = self._conn
        if conn is not None and conn.error is None and conn.stale(self.stale_s):
            conn.fail(ConnectionError(f"no reply from redis in {self.stale_s} s"))
        if conn is None or conn.error is not None:
            conn = await self._connection()
        replies = await conn.send(commands, self.max_waiting)
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                raise ResponseError(str(reply))
        return replies

    async def ping(self) -> bool:
        return await self.execute([("PING",)]) == [b"PONG"]

    async def aclose(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._conn is not None:
            self._conn.fail(ConnectionError("the redis reader was closed"))
            self._conn = None

    async def _connection(self) -> _Connection:
        """The open connection: one connect at a time, awaited by every read that needs it."""
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, task: asyncio.Future[_Connection]) -> None:
        self._connecting = None
        if not task.cancelled() and task.exception() is None:  # exception(): marks it seen
            self._conn = task.result()

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()

        def protocol() -> _Connection:
            return _Connection(loop, self.clock)

        async with asyncio.timeout(self.connect_timeout_s):
            if self.path is not None:
                _, conn = await loop.create_unix_connection(protocol, self.path)
            else:
                _, conn = await loop.create_connection(
                    protocol,
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl is not None else None,
                )
            self.connections_opened += 1
            try:
                await conn.made  # uvloop may resolve create_connection before connection_made
                if self.setup:
                    for reply in await conn.send(self.setup, self.max_waiting):
                        if isinstance(reply, hiredis.ReplyError):
                            raise ConnectionError(f"redis refused the connection: {reply}")
            except BaseException as e:
                conn.fail(e if isinstance(e, ConnectionError) else ConnectionError(repr(e)))
                raise
        return conn
