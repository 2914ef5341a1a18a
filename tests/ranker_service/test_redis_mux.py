"""The multiplexed Redis reader: the same bytes as redis-py's pipeline (the reference), each
reply to the read that asked for it, and every way a connection can go wrong.

Real redis-servers for what Redis does; a scripted RESP server (``_FakeRedis``) where the test
must decide when, or whether, replies come.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import hiredis
import pytest
import redis
import uvloop
from redis.connection import Connection
from redis.exceptions import ResponseError

from loadtests.stack.servers import LOOPBACK, RedisServer
from ranker_service.redis_mux import MultiplexedRedis, pack
from ranker_service.settings import Settings
from ranker_service.store import FeatureStore, FetchOutcome, UserData
from shared_model.contract import (
    EMBEDDING_FIELD_RECORD,
    history_key,
    versioned_embedding_key,
)
from tests.ranker_service.helpers import (
    make_history,
    self_signed_certificate,
    write_content,
    write_embedding,
    write_history,
)

VERSION = "upstream-test-v1"


def _store(url: str, reader: str, **overrides: object) -> FeatureStore:
    return FeatureStore(
        Settings(redis_url=url, redis_reader=reader, redis_budget_ms=2000, **overrides)
    )


async def _fetch(store: FeatureStore, user: str, content_ids: list[str] | None = None) -> UserData:
    return await store.fetch(
        user,
        history_limit=5,
        read_embedding=True,
        read_history=True,
        content_ids=content_ids or [],
        embedding_version=VERSION,
    )


def _bytes(data: UserData) -> tuple:
    return data.outcome, data.embedding, data.history, data.content


_LOOP = {"run": asyncio.run}


@pytest.fixture(autouse=True, params=["asyncio", "uvloop"])
def event_loop_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every scenario on both loops: the ranker serves on uvloop, TestClient on asyncio's."""
    _LOOP["run"] = uvloop.run if request.param == "uvloop" else asyncio.run
    yield request.param
    _LOOP["run"] = asyncio.run


def _run(scenario: Callable[[], Awaitable[object]]) -> object:
    return _LOOP["run"](scenario())  # type: ignore[operator]


def _write_users(client: redis.Redis, users: int) -> None:
    for u in range(users):
        user = f"u{u}"
        write_history(client, user, make_history(3 + u % 9, 4, seed=u))
        if u % 3:
            write_embedding(client, user, [u / 10] * 8, model_version=VERSION)
    # One user's versioned key, one's corrupt members, content vectors for some ids.
    client.hset(versioned_embedding_key("u1", VERSION), EMBEDDING_FIELD_RECORD, b"versioned")
    client.zadd(history_key("u2", "eng"), {b"\x01corrupt": 1, b"": 2})
    for c in range(0, 10, 2):
        write_content(client, f"ad-{c}", [c / 7] * 4)


# ------------------------------------------------------------------------------------------
# Against a real redis-server
# ------------------------------------------------------------------------------------------


def test_pack_writes_what_redis_py_writes() -> None:
    commands = [("HGET", "llatte:u:{u1}:emb", "record"), ("ZRANGE", b"k\x00\xff", -400, -1)]
    assert pack(commands) == b"".join(Connection().pack_commands(commands))


def test_both_readers_return_the_same_bytes(redis_server: RedisServer, redis_client) -> None:
    _write_users(redis_client, 12)
    ids = [f"ad-{c}" for c in range(10)]  # half of them missing

    async def scenario() -> list[tuple[tuple, tuple]]:
        mux, ref = _store(redis_server.url, "multiplexed"), _store(redis_server.url, "redis-py")
        assert mux.mux is not None and ref.mux is None
        try:
            return [
                (_bytes(await _fetch(mux, f"u{u}", ids)), _bytes(await _fetch(ref, f"u{u}", ids)))
                for u in [*range(13), 99]  # 99: a user Redis has never seen
            ]
        finally:
            await mux.aclose()
            await ref.aclose()

    pairs = _run(scenario)
    for got, want in pairs:  # type: ignore[union-attr]
        assert got == want
    by_user = dict(zip([*range(13), 99], pairs, strict=True))  # type: ignore[arg-type]
    outcome, embedding, history, content = by_user[1][0]
    assert outcome is FetchOutcome.OK and embedding == b"versioned"  # the versioned key wins
    assert [len(h) for h in history] == [2, 2]  # u1: 4 records, limit 5 per source
    assert b"\x01corrupt" in by_user[2][0][2][0]
    assert by_user[99][0][1:3] == (None, [[], []])
    assert [c for c, v in content.items() if v is not None] == ids[::2]


def test_concurrent_reads_each_get_their_own_replies(
    redis_server: RedisServer, redis_client
) -> None:
    _write_users(redis_client, 40)
    rng = random.Random(7)
    order = [f"u{rng.randrange(40)}" for _ in range(300)]

    async def scenario() -> tuple[list[tuple], list[tuple], int]:
        mux, ref = _store(redis_server.url, "multiplexed"), _store(redis_server.url, "redis-py")
        try:
            got = await asyncio.gather(
                *(_fetch(mux, u, [f"ad-{i % 10}"]) for i, u in enumerate(order))
            )
            want = [_bytes(await _fetch(ref, u, [f"ad-{i % 10}"])) for i, u in enumerate(order)]
            return [_bytes(d) for d in got], want, mux.mux.connections_opened  # type: ignore[union-attr]
        finally:
            await mux.aclose()
            await ref.aclose()

    got, want, opened = _run(scenario)  # type: ignore[misc]
    assert got == want
    assert len({repr(w[1:3]) for w in want}) == len(set(order)) > 30  # each user's own
    assert opened == 1  # 300 reads in flight at once, one connection


def test_an_error_reply_fails_its_read_only(redis_server: RedisServer, redis_client) -> None:
    _write_users(redis_client, 3)
    redis_client.set(history_key("u0", "imp"), b"not a sorted set")  # ZRANGE: WRONGTYPE

    async def scenario() -> tuple[FetchOutcome, FetchOutcome, UserData, int]:
        mux, ref = _store(redis_server.url, "multiplexed"), _store(redis_server.url, "redis-py")
        try:
            bad, bad_ref = (await _fetch(mux, "u0")).outcome, (await _fetch(ref, "u0")).outcome
            good = await _fetch(mux, "u1")  # on the same connection
            return bad, bad_ref, good, mux.mux.connections_opened  # type: ignore[union-attr]
        finally:
            await mux.aclose()
            await ref.aclose()

    bad, bad_ref, good, opened = _run(scenario)  # type: ignore[misc]
    assert bad is bad_ref is FetchOutcome.UNAVAILABLE
    assert good.outcome is FetchOutcome.OK and good.embedding is not None
    assert opened == 1


def test_a_lost_connection_fails_its_read_and_the_next_read_reconnects() -> None:
    with RedisServer() as server:
        _write_users(server.client(), 2)

        async def scenario() -> list[FetchOutcome]:
            store = _store(server.url, "multiplexed")
            outcomes = [(await _fetch(store, "u1")).outcome]
            server.stop()
            outcomes.append((await _fetch(store, "u1")).outcome)
            outcomes.append((await _fetch(store, "u1")).outcome)  # no server to reconnect to
            server.start()  # same port, empty: the data was in memory only
            _write_users(server.client(), 2)
            outcomes.append((await _fetch(store, "u1")).outcome)
            assert store.mux is not None and store.mux.connections_opened == 2
            await store.aclose()
            return outcomes

        assert _run(scenario) == [FetchOutcome.OK, *[FetchOutcome.UNAVAILABLE] * 2, FetchOutcome.OK]


def test_the_url_names_password_user_and_database() -> None:
    password, reader_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    wrong_password = "not-" + password
    with RedisServer(password=password) as server:
        admin = server.client()
        admin.execute_command(
            "ACL", "SETUSER", "reader", "on", f">{reader_password}", "~*", "+@all"
        )
        _write_users(server.client(db=3), 2)
        base = f"{LOOPBACK}:{server.port}"

        async def scenario() -> list[tuple[FetchOutcome, bool]]:
            out = []
            for url in (
                f"redis://:{password}@{base}/3",
                f"redis://reader:{reader_password}@{base}/3",
                f"redis://:{wrong_password}@{base}/3",
                f"redis://:{password}@{base}/0",  # right password, a database without the user
            ):
                store = _store(url, "multiplexed")
                data = await _fetch(store, "u1")
                out.append((data.outcome, data.embedding is not None))
                await store.aclose()
            return out

        assert _run(scenario) == [
            (FetchOutcome.OK, True),
            (FetchOutcome.OK, True),
            (FetchOutcome.UNAVAILABLE, False),
            (FetchOutcome.OK, False),
        ]


def test_ping(redis_server: RedisServer) -> None:
    async def scenario() -> tuple[bool, bool]:
        up = _store(redis_server.url, "multiplexed")
        down = _store(f"redis://{LOOPBACK}:1/0", "multiplexed")  # nothing listens on port 1
        try:
            return await up.ping(), await down.ping()
        finally:
            await up.aclose()
            await down.aclose()

    assert _run(scenario) == (True, False)


def test_a_cluster_is_read_with_redis_py() -> None:
    assert Settings(redis_cluster=True).redis_reader == "auto"
    with pytest.raises(ValueError, match="multiplexed reads one Redis server"):
        Settings(redis_cluster=True, redis_reader="multiplexed")


# ------------------------------------------------------------------------------------------
# Against a scripted server: replies when the test says so
# ------------------------------------------------------------------------------------------


class _FakeRedis:
    """Answers each command with its second argument as a bulk string ("GET a" -> "a"), but
    only while ``answering`` is set; ``garbage`` is written instead of the next reply (the
    connection is closed instead when it is ``CLOSE``). On a unix socket when given a path."""

    CLOSE = b"<close>"

    def __init__(self, unix_path: str | None = None) -> None:
        self.answering = asyncio.Event()
        self.connections = self.closed = 0
        self.garbage: bytes | None = None
        self.server: asyncio.Server | None = None
        self.unix_path = unix_path

    async def __aenter__(self) -> str:
        if self.unix_path is not None:
            self.server = await asyncio.start_unix_server(self._serve, self.unix_path)
            return f"unix://{self.unix_path}"
        self.server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        return f"redis://{LOOPBACK}:{self.server.sockets[0].getsockname()[1]}/0"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        parser = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (command := parser.gets()) is not False:
                    await self.answering.wait()
                    if self.garbage == self.CLOSE:
                        self.garbage = None
                        return
                    if self.garbage is not None:
                        writer.write(self.garbage)
                        self.garbage = None
                    else:
                        arg = command[1]
                        writer.write(b"$%d\r\n%s\r\n" % (len(arg), arg))
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.closed += 1
            writer.close()


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` on the loop until it holds; TimeoutError past ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def _waiting(mux: MultiplexedRedis) -> int:
    """Reads sent on the mux's connection and not yet answered."""
    return len(mux._conn.waiting) if mux._conn is not None else 0


def _mux(url: str, clock: Callable[[], float] = lambda: 0.0, **kw: object) -> MultiplexedRedis:
    return MultiplexedRedis(url, connect_timeout_s=1.0, stale_s=10.0, clock=clock, **kw)  # type: ignore[arg-type]


def test_a_late_reply_is_dropped_never_read_by_the_next_read() -> None:
    async def scenario() -> tuple[list, int, int]:
        fake = _FakeRedis()
        async with fake as url:
            mux = _mux(url)
            fake.answering.set()
            await mux.execute([("GET", "warm")])  # connected
            fake.answering.clear()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await mux.execute([("GET", "late-1"), ("GET", "late-2")])
            second = asyncio.ensure_future(mux.execute([("GET", "mine")]))
            # sent, queued behind the replies of the read that gave up
            await _until(lambda: _waiting(mux) == 2)
            fake.answering.set()
            got = await second
            await mux.aclose()
            return got, mux.connections_opened, fake.connections

    assert _run(scenario) == ([b"mine"], 1, 1)


def test_a_connection_silent_for_stale_s_is_replaced() -> None:
    now = [100.0]

    async def scenario() -> tuple[list, int]:
        fake = _FakeRedis()
        async with fake as url:
            mux = _mux(url, clock=lambda: now[0])
            waiting = asyncio.ensure_future(mux.execute([("GET", "never")]))  # sent at 100
            await _until(lambda: _waiting(mux) == 1)
            for t in (105.0, 110.0):  # not yet more than stale_s (10 s): the same connection
                now[0] = t
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await mux.execute([("GET", "again")])
                assert mux.connections_opened == 1 and not waiting.done()
            now[0] = 110.5  # the first reply has waited more than stale_s
            fake.answering.set()
            got = await mux.execute([("GET", "fresh")])
            with pytest.raises(ConnectionError, match=r"no reply from redis in 10\.0 s"):
                await waiting
            await _until(lambda: fake.closed == 1)  # the stale connection was closed
            await mux.aclose()
            return got, fake.connections

    assert _run(scenario) == ([b"fresh"], 2)


def test_the_connection_sends_at_once_and_is_kept_alive() -> None:
    async def scenario() -> tuple[int, int]:
        fake = _FakeRedis()
        async with fake as url:
            mux = _mux(url)
            fake.answering.set()
            await mux.execute([("GET", "x")])
            assert mux._conn is not None and mux._conn.transport is not None
            sock = mux._conn.transport.get_extra_info("socket")
            options = (
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            )
            await mux.aclose()
            return options

    assert _run(scenario) == (1, 1)


@pytest.mark.parametrize(
    "garbage, first",
    [
        (b"@bad\r\n", None),  # not RESP: the read fails
        (b"$1\r\nx\r\n+unasked\r\n", [b"x"]),  # its reply, then one nobody asked for
    ],
)
def test_garbage_from_the_server_closes_the_connection(garbage: bytes, first: list | None) -> None:
    async def scenario() -> tuple[list, int]:
        fake = _FakeRedis()
        async with fake as url:
            mux = _mux(url)
            fake.answering.set()
            fake.garbage = garbage  # one write
            if first is None:
                with pytest.raises(ConnectionError, match="redis protocol error: Protocol error"):
                    await mux.execute([("GET", "x")])
            else:
                assert await mux.execute([("GET", "x")]) == first
                conn = mux._conn  # failed by the reply that came after x's
                assert conn is not None
                assert str(conn.error) == "redis protocol error: a reply nobody asked for"
            got = await mux.execute([("GET", "y")])
            await mux.aclose()
            return got, fake.connections

    assert _run(scenario) == ([b"y"], 2)


def test_reads_past_max_waiting_are_refused() -> None:
    async def scenario() -> None:
        fake = _FakeRedis()
        async with fake as url:
            mux = _mux(url, max_waiting=2)
            fake.answering.set()
            await mux.execute([("GET", "warm")])
            fake.answering.clear()
            first = [asyncio.ensure_future(mux.execute([("GET", f"r{i}")])) for i in range(2)]
            await _until(lambda: _waiting(mux) == 2)
            with pytest.raises(ConnectionError, match="2 redis reads already waiting"):
                await mux.execute([("GET", "one-too-many")])
            fake.answering.set()
            assert [await f for f in first] == [[b"r0"], [b"r1"]]
            await mux.aclose()

    _run(scenario)


def test_an_error_reply_is_a_response_error() -> None:
    async def scenario() -> None:
        fake = _FakeRedis()
        async with fake as url:
            mux = _mux(url)
            fake.answering.set()
            fake.garbage = b"-WRONGTYPE Operation against a key\r\n"
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                await mux.execute([("GET", "x")])
            assert await mux.execute([("GET", "y")]) == [b"y"]
            assert fake.connections == 1
            await mux.aclose()

    _run(scenario)


def test_a_connection_the_server_closes_fails_its_reads() -> None:
    async def scenario() -> tuple[list, int]:
        fake = _FakeRedis()
        async with fake as url:
            mux = _mux(url)
            fake.answering.set()
            fake.garbage = _FakeRedis.CLOSE
            with pytest.raises(
                ConnectionError, match=r"^redis connection lost: closed by the server$"
            ):
                await mux.execute([("GET", "x")])
            got = await mux.execute([("GET", "y")])
            await mux.aclose()
            return got, fake.connections

    assert _run(scenario) == ([b"y"], 2)


def test_a_unix_socket(tmp_path) -> None:
    async def scenario() -> list:
        fake = _FakeRedis(str(tmp_path / "redis.sock"))
        async with fake as url:
            mux = _mux(url)
            fake.answering.set()
            got = await mux.execute([("GET", "x"), ("GET", "y")])
            await mux.aclose()
            return got

    assert _run(scenario) == [b"x", b"y"]


@pytest.mark.parametrize(
    "url, host, port, path, setup",
    [
        ("redis://cache.internal/0", "cache.internal", 6379, None, []),  # the default port
        ("redis://:pw@cache:6380/2", "cache", 6380, None, [("AUTH", "pw"), ("SELECT", 2)]),
        ("redis://reader:pw@cache:6380", "cache", 6380, None, [("AUTH", "reader", "pw")]),
        ("unix:///run/redis.sock?db=3", "localhost", 6379, "/run/redis.sock", [("SELECT", 3)]),
    ],
)
def test_the_url_is_read_as_redis_py_reads_it(
    url: str, host: str, port: int, path: str | None, setup: list
) -> None:
    mux = _mux(url)
    assert (mux.host, mux.port, mux.path, mux.setup, mux.ssl) == (host, port, path, setup, None)
    assert (mux.connect_timeout_s, mux.stale_s, mux.max_waiting) == (1.0, 10.0, 10_000)
    secure = _mux(url.replace("redis://", "rediss://"))
    assert (secure.ssl is not None) is url.startswith("redis://")


def test_closing_fails_the_waiting_reads_and_closes_the_connection() -> None:
    async def scenario() -> None:
        fake = _FakeRedis()
        async with fake as url:
            mux = _mux(url)
            fake.answering.set()
            await mux.execute([("GET", "warm")])
            fake.answering.clear()
            waiting = asyncio.ensure_future(mux.execute([("GET", "never")]))
            await _until(lambda: _waiting(mux) == 1)
            await mux.aclose()
            with pytest.raises(ConnectionError, match=r"^the redis reader was closed$"):
                await waiting
            assert mux._conn is None
            fake.answering.set()  # the server's handler goes on to read the end of the stream
            await _until(lambda: fake.closed == 1)

    _run(scenario)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def test_tls_with_the_ca_file_and_not_without(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def scenario() -> tuple[list, bool]:
        fake = _FakeRedis()
        fake.answering.set()
        fake.server = await asyncio.start_server(fake._serve, LOOPBACK, 0, ssl=server_tls)
        url = f"rediss://{LOOPBACK}:{fake.server.sockets[0].getsockname()[1]}/0"
        trusted = MultiplexedRedis(url, connect_timeout_s=5, stale_s=10, tls_ca_file=cert)
        got = await trusted.execute([("GET", "x")])
        await trusted.aclose()
        untrusted = MultiplexedRedis(url, connect_timeout_s=5, stale_s=10)  # system CAs only
        refused = False
        try:
            await untrusted.execute([("GET", "x")])
        except ssl.SSLCertVerificationError:
            refused = True
        await untrusted.aclose()
        fake.server.close()
        return got, refused

    assert _run(scenario) == ([b"x"], True)


def test_a_connection_whose_setup_fails_or_hangs_is_not_used() -> None:
    def with_password(url: str) -> str:
        return url.replace("redis://", "redis://:pw@")

    async def scenario() -> None:
        async with _FakeRedis() as url:  # never answers
            hung = MultiplexedRedis(with_password(url), connect_timeout_s=0.1, stale_s=10)
            with pytest.raises(TimeoutError):  # AUTH never answered: the connect's own bound
                await hung.execute([("GET", "x")])
            assert hung._conn is None
        fake = _FakeRedis()
        async with fake as url:
            fake.answering.set()
            fake.garbage = b"-WRONGPASS invalid username-password pair\r\n"  # AUTH's reply
            refused = MultiplexedRedis(with_password(url), connect_timeout_s=1, stale_s=10)
            with pytest.raises(ConnectionError, match=r"^redis refused the connection: WRONGPASS"):
                await refused.execute([("GET", "x")])
            assert refused._conn is None
            assert await refused.execute([("GET", "y")]) == [b"y"]  # the next connect
            await refused.aclose()

    _run(scenario)
