"""A lean HTTP/1.1 load generator for the latency benchmarks.

On a 2-vCPU box the load generator shares the cores with the server it measures, so its own
CPU per request lands in the server's latency. httpx's async client spends about a millisecond
of CPU per 30 KB ranking request (connection pool, header models, body streams); this client
writes request bytes built once per body over keep-alive asyncio connections and reads each
answer by its Content-Length (or chunked encoding), a few hundredths of that.

    pool = HttpPool("http://127.0.0.1:8000/v1/rank", {"content-type": "application/json"})
    answer = await pool.post(body)  # Answer(status, headers, body)
    await pool.aclose()

Plain HTTP only (the benchmarks talk to loopback servers). A kept-alive connection the server
closed while it was idle (uvicorn's keep-alive timeout is 5 s) is dropped, and a request that
found it closed without an answer is sent again on another connection, as HTTP clients do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit


class HttpError(Exception):
    """The connection failed or the answer was not HTTP/1.1 the client understands."""


class _Stale(Exception):
    """A kept-alive connection the server had closed: nothing was answered on it."""


def server_timing(header: str) -> dict[str, float]:
    """A Server-Timing header's ``name;dur=X`` entries -> {name: X} (ms); entries without a
    duration are left out."""
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name and dur:
            out[name] = float(dur.split(";", 1)[0])
    return out


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[Answer, bool]:
        """Send one request, read its answer -> (answer, whether the connection stays open)."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise HttpError(f"not an HTTP/1.x status line: {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked()
        else:
            raise HttpError("an answer without Content-Length or chunked encoding")
        keep = headers.get("connection", "").lower() != "close"
        return Answer(int(parts[1]), headers, body), keep

    async def _chunked(self) -> bytes:
        chunks = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # no trailers expected
                return b"".join(chunks)
            chunks.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        self.writer.close()


class HttpPool:
    """POSTs to one URL over a pool of keep-alive connections (opened on demand)."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"HttpPool takes an http:// URL, not {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._head = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self._idle: list[_Connection] = []
        # id(body) -> (body, request bytes), built once; holding the body keeps its id unique
        self._requests: dict[int, tuple[bytes, bytes]] = {}

    def _request(self, body: bytes) -> bytes:
        cached = self._requests.get(id(body))
        if cached is not None and cached[0] is body:
            return cached[1]
        request = self._head + str(len(body)).encode() + b"\r\n\r\n" + body
        self._requests[id(body)] = (body, request)
        return request

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as e:
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {e}") from e
        return _Connection(reader, writer)

    async def open(self, n: int) -> None:
        """Open ``n`` idle connections ahead of a measurement (connects are not measured)."""
        self._idle += await asyncio.gather(*(self._connect() for _ in range(n)))

    async def post(self, body: bytes) -> Answer:
        request = self._request(body)
        while self._idle:
            conn = self._idle.pop()
            if conn.reader.at_eof():  # the server closed it while idle (keep-alive timeout)
                conn.close()
                continue
            try:
                return await self._exchange(conn, request)
            except _Stale:  # closed as we sent: the request never reached the app; resend
                continue
        return await self._exchange(await self._connect(), request, fresh=True)

    async def _exchange(self, conn: _Connection, request: bytes, fresh: bool = False) -> Answer:
        try:
            answer, keep = await conn.exchange(request)
        except asyncio.IncompleteReadError as e:
            conn.close()
            if not e.partial and not fresh:
                raise _Stale from e
            raise HttpError(f"connection closed after {len(e.partial)} bytes") from e
        except (ConnectionResetError, BrokenPipeError) as e:
            conn.close()
            if not fresh:
                raise _Stale from e
            raise HttpError(str(e) or type(e).__name__) from e
        except (OSError, asyncio.LimitOverrunError, ValueError) as e:
            conn.close()
            raise HttpError(str(e) or type(e).__name__) from e
        except BaseException:
            conn.close()
            raise
        if keep:
            self._idle.append(conn)
        else:
            conn.close()
        return answer

    async def aclose(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
