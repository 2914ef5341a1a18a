"""The contract between the producer, the upstream worker and the ranker.

Everything that crosses a process boundary is defined here, once, with its encoding:

* ``UserEvent``       - what producers publish to Kafka (JSON, key = user id).
* ``HistoryRecord``   - one event as stored in the user's history in Redis (compact binary).
* ``EmbeddingRecord`` - the upstream user embedding as stored in Redis (binary, one value).
* ``RefreshRequest``  - a request to re-encode one user with one upstream model version, as the
  backfill publishes it to Kafka (JSON, key = user id).
* the Redis key layout, with a per-user hash tag so that a user's history and embedding keys
  live in one Redis Cluster slot and the ranker reaches both in one pipelined round trip.

Stdlib only (``struct``, ``json``, ``hashlib``): the services, the producer and the training
pipeline all import this module, and none of them should need torch or pydantic to read a
record. Every decoder checks the version and the length and raises ``ContractError`` with a
message that says what is wrong.

Bump ``CONTRACT_VERSION`` (and keep decoding the old version) for any change of layout. Each
binary record also carries its own layout version (``HISTORY_RECORD_VERSION``,
``EMBEDDING_RECORD_VERSION``), bumped only when that record's bytes change.

Version 2 keeps every record's bytes and changes the embedding key layout: one key per
(user, upstream model version), so that during an upstream rollout the old and the new model both
have embeddings, each under its own write-if-newer rule and its own expiry. Version 1 stored one
embedding per user (``embedding_key``, field ``record``); readers still fall back to it.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import math
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

CONTRACT_VERSION = 2
# Layout versions of the records themselves: unchanged since contract version 1.
EVENT_SCHEMA_VERSION = 1
HISTORY_RECORD_VERSION = 1
EMBEDDING_RECORD_VERSION = 1
REFRESH_REQUEST_VERSION = 1
KEY_PREFIX = "llatte"

MAX_ID_LENGTH = 128
MAX_METADATA_ITEMS = 32
MAX_METADATA_CHARS = 256
MAX_CONTENT_DIM = 1024
# A valid event (1024 content values, 32 metadata entries) is well under this; anything larger
# is refused before it is parsed.
MAX_EVENT_BYTES = 256 * 1024
# Stored widths: content values are float16 and ``value`` is float32 in a HistoryRecord.
MAX_CONTENT_VALUE = 65504.0
MAX_EVENT_VALUE = 3.4028234663852886e38
# Timestamps are epoch milliseconds; anything outside [2000-01-01, 2100-01-01) is a bug upstream.
MIN_TIMESTAMP_MS = 946_684_800_000
MAX_TIMESTAMP_MS = 4_102_444_800_000


class ContractError(ValueError):
    """A record or event does not follow the contract (bad field, version or length)."""


class ActionType(enum.IntEnum):
    """User action types. Values are stored in binary records: never renumber."""

    IMPRESSION = 1  # an ad or item was shown (high frequency, low signal)
    VIEW = 2  # the user looked at an item (high frequency, low signal)
    CLICK = 3
    CONVERSION = 4  # high value: triggers an upstream refresh by default
    TAG = 5  # free-text tagging (MovieLens)

    @classmethod
    def parse(cls, value: str | int) -> ActionType:
        if isinstance(value, bool):
            raise ContractError(f"action_type must be a name or an int, got {value!r}")
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                raise ContractError(f"unknown action_type {value}") from None
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                names = ", ".join(m.name.lower() for m in cls)
                raise ContractError(f"unknown action_type {value!r} (known: {names})") from None
        raise ContractError(f"action_type must be a name or an int, got {type(value).__name__}")


NUM_ACTION_TYPES = max(ActionType) + 1

# History sources, each capped separately (the paper mixes views and conversions per source).
SOURCE_ENGAGEMENT = "eng"
SOURCE_IMPRESSION = "imp"
HISTORY_SOURCES = (SOURCE_ENGAGEMENT, SOURCE_IMPRESSION)


def source_of(action: ActionType) -> str:
    """High-frequency low-signal actions go to their own, separately capped history."""
    if action in (ActionType.IMPRESSION, ActionType.VIEW):
        return SOURCE_IMPRESSION
    return SOURCE_ENGAGEMENT


def stable_hash(value: str) -> int:
    """A 63-bit hash of a string id, identical across processes and machines.

    Python's ``hash`` is salted per process, so ids are hashed with blake2b instead. The model's
    hashed embedding tables take these values modulo their bucket count.
    """
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def _check_id(name: str, value: Any, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise ContractError(f"{name} must be a string, got {type(value).__name__}")
    if not 0 < len(value) <= MAX_ID_LENGTH:
        raise ContractError(f"{name} must have 1..{MAX_ID_LENGTH} characters, got {len(value)}")
    # Braces would break the Redis Cluster hash tag; control characters break logs.
    if not value.isprintable() or "{" in value or "}" in value:
        raise ContractError(f"{name} must be printable and contain no braces: {value!r}")


def _check_timestamp(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(f"{name} must be an integer (epoch milliseconds)")
    if not MIN_TIMESTAMP_MS <= value < MAX_TIMESTAMP_MS:
        raise ContractError(
            f"{name}={value} is outside [{MIN_TIMESTAMP_MS}, {MAX_TIMESTAMP_MS}) epoch ms"
        )


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _is_number_within(x: Any, bound: float) -> bool:
    # A comparison, not math.isfinite: a 400-digit JSON integer overflows float conversion.
    # NaN fails both comparisons.
    return not isinstance(x, bool) and isinstance(x, int | float) and -bound <= x <= bound


def _check_vector(name: str, value: Any) -> None:
    if not isinstance(value, list | tuple):
        raise ContractError(f"{name} must be a list of floats")
    if not 0 < len(value) <= MAX_CONTENT_DIM:
        raise ContractError(f"{name} must have 1..{MAX_CONTENT_DIM} values, got {len(value)}")
    for x in value:
        if not _is_number_within(x, MAX_CONTENT_VALUE):
            raise ContractError(
                f"{name} must contain finite numbers only, within +-{MAX_CONTENT_VALUE:g} "
                f"(float16), got {_short(x)}"
            )


# ----------------------------------------------------------------------------------------------
# Kafka: the user event
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserEvent:
    """One user action, as published to the user-events topic (JSON, Kafka key = user_id)."""

    event_id: str  # unique per event; a replayed event keeps its id (dedup key)
    user_id: str
    timestamp_ms: int  # when the action happened, epoch ms
    action_type: ActionType
    item_id: str  # item or ad id
    surface: str = "feed"  # where it happened (feed, reels, search, ...)
    content_embedding: tuple[float, ...] | None = None  # optional dense content vector
    value: float | None = None  # optional scalar (rating, price, dwell seconds)
    metadata: dict[str, str] = field(default_factory=dict)  # free-form, kept in Kafka only
    schema_version: int = EVENT_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.schema_version != EVENT_SCHEMA_VERSION:
            raise ContractError(
                f"unsupported event schema_version {self.schema_version!r} "
                f"(this build reads {EVENT_SCHEMA_VERSION})"
            )
        _check_id("event_id", self.event_id)
        _check_id("user_id", self.user_id)
        _check_id("item_id", self.item_id)
        _check_id("surface", self.surface)
        _check_timestamp("timestamp_ms", self.timestamp_ms)
        object.__setattr__(self, "action_type", ActionType.parse(self.action_type))
        if self.content_embedding is not None:
            _check_vector("content_embedding", self.content_embedding)
            object.__setattr__(
                self, "content_embedding", tuple(float(x) for x in self.content_embedding)
            )
        if self.value is not None:
            if isinstance(self.value, bool) or not isinstance(self.value, int | float):
                raise ContractError("value must be a number")
            if not _is_number_within(self.value, MAX_EVENT_VALUE):
                raise ContractError("value must be finite and within float32 range")
        if not isinstance(self.metadata, dict) or len(self.metadata) > MAX_METADATA_ITEMS:
            raise ContractError(f"metadata must be an object of at most {MAX_METADATA_ITEMS} items")
        for k, v in self.metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ContractError("metadata keys and values must be strings")
            if len(k) > MAX_METADATA_CHARS or len(v) > MAX_METADATA_CHARS:
                raise ContractError(f"metadata entries must be at most {MAX_METADATA_CHARS} chars")

    def to_json_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["action_type"] = self.action_type.name.lower()
        if self.content_embedding is not None:
            d["content_embedding"] = list(self.content_embedding)
        return d

    def encode(self) -> bytes:
        """Kafka value: compact UTF-8 JSON."""
        return json.dumps(self.to_json_dict(), separators=(",", ":")).encode("utf-8")

    def kafka_key(self) -> bytes:
        """Kafka key: the user id, so one user's events stay ordered in one partition."""
        return self.user_id.encode("utf-8")

    @classmethod
    def from_json_dict(cls, d: Any) -> UserEvent:
        if not isinstance(d, dict):
            raise ContractError(f"event must be a JSON object, got {type(d).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ContractError(f"unknown event field(s): {', '.join(unknown)}")
        missing = sorted(
            f
            for f in ("event_id", "user_id", "timestamp_ms", "action_type", "item_id")
            if f not in d
        )
        if missing:
            raise ContractError(f"missing event field(s): {', '.join(missing)}")
        try:
            return cls(**d)
        except TypeError as e:  # e.g. a field of the wrong shape reaching a constructor
            raise ContractError(str(e)) from None

    @classmethod
    def decode(cls, raw: bytes) -> UserEvent:
        """Parse a Kafka value; raises ContractError naming the problem."""
        if len(raw) > MAX_EVENT_BYTES:
            raise ContractError(f"event too large: {len(raw)} bytes > {MAX_EVENT_BYTES}")
        try:
            d = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ContractError(f"event is not valid UTF-8 JSON: {e}") from None
        except (ValueError, RecursionError) as e:  # a 5000-digit number, 100k-deep nesting
            raise ContractError(f"event JSON is not decodable: {_short(str(e))}") from None
        return cls.from_json_dict(d)

    def to_history_record(self) -> HistoryRecord:
        return HistoryRecord(
            timestamp_ms=self.timestamp_ms,
            action_type=self.action_type,
            item_hash=stable_hash(self.item_id),
            surface_hash=stable_hash(self.surface),
            event_hash=stable_hash(self.event_id),
            value=float(self.value) if self.value is not None else 0.0,
            content=self.content_embedding,
        )


# ----------------------------------------------------------------------------------------------
# Redis: one history record per event
# ----------------------------------------------------------------------------------------------

# version u8, action u8, content_dim u16, timestamp_ms i64, item_hash i64, surface_hash i64,
# event_hash i64, value f32; then content_dim float16 values.
_HISTORY_HEADER = struct.Struct("<BBHqqqqf")


@dataclass(frozen=True)
class HistoryRecord:
    """One event in a user's history, as stored in Redis (a sorted-set member).

    The encoding is deterministic, so a replayed event yields the same bytes and the sorted
    set stores it once. ``event_hash`` keeps two distinct events with equal fields apart.
    """

    timestamp_ms: int
    action_type: ActionType
    item_hash: int
    surface_hash: int
    event_hash: int
    value: float = 0.0
    content: tuple[float, ...] | None = None  # stored as float16

    def encode(self) -> bytes:
        dim = 0 if self.content is None else len(self.content)
        head = _HISTORY_HEADER.pack(
            HISTORY_RECORD_VERSION,
            int(self.action_type),
            dim,
            self.timestamp_ms,
            self.item_hash,
            self.surface_hash,
            self.event_hash,
            self.value,
        )
        if not dim:
            return head
        return head + struct.pack(f"<{dim}e", *self.content)

    @classmethod
    def decode(cls, raw: bytes) -> HistoryRecord:
        if len(raw) < _HISTORY_HEADER.size:
            raise ContractError(
                f"history record too short: {len(raw)} bytes < header {_HISTORY_HEADER.size}"
            )
        version, action, dim, ts, item, surface, event, value = _HISTORY_HEADER.unpack_from(raw)
        if version != HISTORY_RECORD_VERSION:
            raise ContractError(f"history record has unknown contract version {version}")
        expected = _HISTORY_HEADER.size + 2 * dim
        if len(raw) != expected:
            raise ContractError(
                f"history record length {len(raw)} != {expected} for content_dim {dim}"
            )
        content = _content_struct(dim).unpack_from(raw, _HISTORY_HEADER.size) if dim else None
        action_type = _ACTION_BY_VALUE.get(action) or ActionType.parse(action)  # raises if unknown
        return cls(ts, action_type, item, surface, event, value, content)


_ACTION_BY_VALUE = {int(a): a for a in ActionType}


@functools.lru_cache(maxsize=64)
def _content_struct(dim: int) -> struct.Struct:
    """The compiled layout of ``dim`` float16 content values (decoded per record)."""
    return struct.Struct(f"<{dim}e")


def merge_histories(*sources: list[HistoryRecord], limit: int) -> list[HistoryRecord]:
    """Merge per-source histories (each oldest first) into the most recent ``limit`` events."""
    merged = sorted(
        (r for src in sources for r in src), key=lambda r: (r.timestamp_ms, r.event_hash)
    )
    return merged[-limit:] if limit > 0 else []


# ----------------------------------------------------------------------------------------------
# Redis: the upstream user embedding
# ----------------------------------------------------------------------------------------------


class EmbeddingDType(enum.IntEnum):
    FLOAT16 = 1
    FLOAT32 = 2

    @property
    def struct_code(self) -> str:
        return "e" if self is EmbeddingDType.FLOAT16 else "f"

    @property
    def itemsize(self) -> int:
        return 2 if self is EmbeddingDType.FLOAT16 else 4


_EMB_MAGIC = b"LLEM"
# magic 4s, version u8, dtype u8, model_version length u16, dim u32, computed_at_ms i64,
# newest_event_ms i64, history_length u32; then model_version (utf-8), then dim values.
_EMB_HEADER = struct.Struct("<4sBBHIqqI")


@dataclass(frozen=True)
class EmbeddingHeader:
    """An embedding record's checked header: where its ``dim`` values start, and its fields."""

    dtype: EmbeddingDType
    model_version: str
    dim: int
    values_offset: int  # byte offset of the first vector value
    computed_at_ms: int
    newest_event_ms: int
    history_length: int


def parse_embedding_header(raw: bytes, expected_dim: int | None = None) -> EmbeddingHeader:
    """Every check of an embedding record but the values' finiteness; ContractError if bad.
    Shared by ``EmbeddingRecord.decode`` and the ranker's vectorised decoder."""
    if len(raw) < _EMB_HEADER.size:
        raise ContractError(f"embedding record too short: {len(raw)} bytes")
    magic, version, dtype, vlen, dim, computed, newest, hist = _EMB_HEADER.unpack_from(raw)
    if magic != _EMB_MAGIC:
        raise ContractError(f"embedding record has bad magic {magic!r}")
    if version != EMBEDDING_RECORD_VERSION:
        raise ContractError(f"embedding record has unknown contract version {version}")
    try:
        dt = EmbeddingDType(dtype)
    except ValueError:
        raise ContractError(f"embedding record has unknown dtype code {dtype}") from None
    if expected_dim is not None and dim != expected_dim:
        raise ContractError(f"embedding dim {dim} != expected {expected_dim}")
    expected_len = _EMB_HEADER.size + vlen + dim * dt.itemsize
    if len(raw) != expected_len:
        raise ContractError(f"embedding record length {len(raw)} != {expected_len}")
    start = _EMB_HEADER.size
    model_version = bytes(raw[start : start + vlen]).decode("utf-8", errors="strict")
    return EmbeddingHeader(dt, model_version, dim, start + vlen, computed, newest, hist)


@dataclass(frozen=True)
class EmbeddingRecord:
    """The upstream user embedding with the metadata the ranker needs to trust it."""

    vector: tuple[float, ...]
    model_version: str
    computed_at_ms: int  # when the upstream worker wrote it
    newest_event_ms: int  # timestamp of the newest history event the encoder saw
    history_length: int  # how many events the encoder read
    dtype: EmbeddingDType = EmbeddingDType.FLOAT16

    def encode(self) -> bytes:
        version = self.model_version.encode("utf-8")
        dim = len(self.vector)
        head = _EMB_HEADER.pack(
            _EMB_MAGIC,
            EMBEDDING_RECORD_VERSION,
            int(self.dtype),
            len(version),
            dim,
            self.computed_at_ms,
            self.newest_event_ms,
            self.history_length,
        )
        return head + version + struct.pack(f"<{dim}{self.dtype.struct_code}", *self.vector)

    @classmethod
    def decode(cls, raw: bytes, expected_dim: int | None = None) -> EmbeddingRecord:
        h = parse_embedding_header(raw, expected_dim)
        vector = struct.unpack_from(f"<{h.dim}{h.dtype.struct_code}", raw, h.values_offset)
        if not all(math.isfinite(x) for x in vector):
            raise ContractError("embedding record contains non-finite values")
        return cls(
            vector, h.model_version, h.computed_at_ms, h.newest_event_ms, h.history_length, h.dtype
        )


# ----------------------------------------------------------------------------------------------
# Redis key layout
# ----------------------------------------------------------------------------------------------


def _tag(user_id: str) -> str:
    _check_id("user_id", user_id)
    return "{" + user_id + "}"  # Redis Cluster hashes only this part: one slot per user


def history_key(user_id: str, source: str) -> str:
    """Sorted set of encoded HistoryRecords, score = timestamp_ms."""
    if source not in HISTORY_SOURCES:
        raise ContractError(f"unknown history source {source!r}")
    return f"{KEY_PREFIX}:u:{_tag(user_id)}:hist:{source}"


def embedding_key(user_id: str) -> str:
    """Contract version 1: one hash per user with fields ``record`` (EmbeddingRecord bytes) and
    ``newest_event_ms``. Nothing writes it any more; readers fall back to it."""
    return f"{KEY_PREFIX}:u:{_tag(user_id)}:emb"


def _check_model_version(model_version: Any) -> None:
    _check_id("model_version", model_version)
    # SCAN patterns match versioned keys by their suffix: no glob characters in a version.
    if any(c in "*?[]\\:" for c in model_version):
        raise ContractError(
            f"model_version must not contain glob characters or ':' : {model_version!r}"
        )


def versioned_embedding_key(user_id: str, model_version: str) -> str:
    """Hash with the same fields as ``embedding_key`` (plus ``computed_at_ms``), one per
    (user, upstream model version); same hash tag, so it shares the user's cluster slot."""
    _check_model_version(model_version)
    return f"{KEY_PREFIX}:u:{_tag(user_id)}:emb:{model_version}"


def versioned_embedding_pattern(model_version: str) -> str:
    """SCAN ``MATCH`` pattern of every user's embedding key of one model version."""
    _check_model_version(model_version)
    return f"{KEY_PREFIX}:u:*:emb:{model_version}"


def user_of_key(key: str | bytes) -> str:
    """The user id of a per-user key (``llatte:u:{user}:...``)."""
    text = key.decode("utf-8") if isinstance(key, bytes) else key
    start, end = text.find("{"), text.find("}")
    if not text.startswith(f"{KEY_PREFIX}:u:{{") or end < start:
        raise ContractError(f"not a per-user key: {text!r}")
    return text[start + 1 : end]


def history_pattern() -> str:
    """SCAN ``MATCH`` pattern of every user's history keys (both sources)."""
    return f"{KEY_PREFIX}:u:*:hist:*"


def events_seen_key(user_id: str) -> str:
    """Counter of history appends since the last embedding (for count-based refresh)."""
    return f"{KEY_PREFIX}:u:{_tag(user_id)}:since_emb"


EMBEDDING_FIELD_RECORD = "record"
EMBEDDING_FIELD_NEWEST = "newest_event_ms"
EMBEDDING_FIELD_COMPUTED = "computed_at_ms"  # versioned keys only: read by the age trigger

# Atomic "write only if not older": KEYS[1] = embedding key; ARGV = newest_event_ms, record,
# ttl_ms (0 = no expiry), optionally computed_at_ms. Returns 1 when written, 0 when a newer
# embedding is already stored. On a versioned key the rule holds per model version.
# Equal timestamps overwrite, so a recomputation by a new model version replaces the old one.
# A stored timestamp that is not a number (a corrupt record) counts as absent: overwritten.
WRITE_EMBEDDING_LUA = """
local current = tonumber(redis.call('HGET', KEYS[1], 'newest_event_ms'))
if current and current > tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'newest_event_ms', ARGV[1], 'record', ARGV[2])
if ARGV[4] then
  redis.call('HSET', KEYS[1], 'computed_at_ms', ARGV[4])
end
if tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"""


# ----------------------------------------------------------------------------------------------
# Redis: content embeddings by content id (appended; read by the ranker)
# ----------------------------------------------------------------------------------------------


def content_embedding_key(content_id: str) -> str:
    """String value: an ``EmbeddingRecord`` holding an ad's or item's content vector.

    ``model_version`` names the content model that produced it. Content keys are shared by all
    users, so unlike the per-user keys they carry no hash tag: on Redis Cluster the ranker's
    pipeline spans slots.
    """
    _check_id("content_id", content_id)
    return f"{KEY_PREFIX}:content:{content_id}"


# ----------------------------------------------------------------------------------------------
# Kafka: refresh requests (the backfill)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshRequest:
    """Re-encode one user with one upstream model version (JSON, Kafka key = user_id).

    The backfill publishes these to the refresh topic so that the worker group encodes every
    user in parallel across partitions; a worker serving another model version skips them.
    """

    user_id: str
    model_version: str  # the upstream model version that should encode the user
    requested_at_ms: int  # when the backfill published it (backfill lag starts here)
    schema_version: int = REFRESH_REQUEST_VERSION

    def __post_init__(self) -> None:
        if self.schema_version != REFRESH_REQUEST_VERSION:
            raise ContractError(
                f"unsupported refresh request schema_version {self.schema_version!r} "
                f"(this build reads {REFRESH_REQUEST_VERSION})"
            )
        _check_id("user_id", self.user_id)
        _check_model_version(self.model_version)
        _check_timestamp("requested_at_ms", self.requested_at_ms)

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode("utf-8")

    def kafka_key(self) -> bytes:
        return self.user_id.encode("utf-8")

    @classmethod
    def decode(cls, raw: bytes) -> RefreshRequest:
        if len(raw) > MAX_EVENT_BYTES:
            raise ContractError(f"refresh request too large: {len(raw)} bytes")
        try:
            d = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise ContractError(f"refresh request is not valid JSON: {_short(str(e))}") from None
        if not isinstance(d, dict):
            raise ContractError("refresh request must be a JSON object")
        known = set(cls.__dataclass_fields__)
        if unknown := sorted(set(d) - known):
            raise ContractError(f"unknown refresh request field(s): {', '.join(unknown)}")
        if missing := sorted({"user_id", "model_version", "requested_at_ms"} - set(d)):
            raise ContractError(f"missing refresh request field(s): {', '.join(missing)}")
        return cls(**d)
