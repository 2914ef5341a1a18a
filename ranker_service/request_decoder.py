"""``POST /v1/rank`` bodies decoded by msgspec; the pydantic models stay the reference.

pydantic-core builds one model instance per candidate and matches the id pattern once per
id (~300 per 100-candidate body). msgspec decodes the same bytes into slotted structs with
the same fields, limits and strictness, and the id rule (printable, no braces) is checked
once, by one search over all ids of the body: 0.11 against 0.30 ms of thread CPU back to
back, 0.16 against 0.34 ms after a 5 ms idle gap, on a 2-vCPU Xeon in one interleaved run
(``python -m loadtests.bench.features``, docs/benchmarks/features-xeon-amx.md).

A body this decoder does not accept, for whatever reason, goes to the reference
(``RankRequest.model_validate_json``): it raises the 422 the schema gives (or, for a body only
msgspec refuses, returns the reference's request). So the status, error body and accepted
values are the schema's; tests/ranker_service/test_request_decoder.py holds every body the
fast decoder accepts to the reference's values, on generated valid and invalid bodies.

What the structs mirror (schemas.py): unknown fields refused at every level, no type
coercion (``"1.5"`` is not a float, ``true`` not a number), no infinite floats (msgspec
refuses a JSON number too large for a double, where pydantic reads inf and refuses it), ids
of 1..MAX_ID_LENGTH characters without braces or control characters, timestamps in the
contract's range, ``bid`` >= 0, at least one candidate.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from ranker_service.schemas import Candidate, InlineEvent, RankRequest
from shared_model.contract import MAX_ID_LENGTH, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS

# Lengths here; the characters by one search over the body's ids (_BAD_ID_CHAR).
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
TimestampMs = Annotated[int, msgspec.Meta(ge=MIN_TIMESTAMP_MS, lt=MAX_TIMESTAMP_MS)]
# schemas.Id's pattern, negated: what no id may contain
_BAD_ID_CHAR = re.compile(r"[{}\x00-\x1f\x7f]")


class _Struct(msgspec.Struct, forbid_unknown_fields=True):
    pass


class FastContext(_Struct):
    surface: Id
    device: Id
    time_ms: TimestampMs | None = None


class FastCandidate(_Struct):
    ad_id: Id
    advertiser_id: Id
    content_embedding: list[float] | None = None
    content_id: Id | None = None
    floats: list[float] | None = None
    bid: Annotated[float, msgspec.Meta(ge=0)] | None = None


class FastEvent(_Struct):
    timestamp_ms: TimestampMs
    action_type: str | int
    item_id: Id
    surface: Id = "feed"
    event_id: Id | None = None
    content_embedding: list[float] | None = None
    value: float | None = None


class FastRankRequest(_Struct):
    user_id: Id
    context: FastContext
    candidates: Annotated[list[FastCandidate], msgspec.Meta(min_length=1)]
    events: list[FastEvent] | None = None


# What the serving path reads, from either decoder: the same fields.
RankInput = RankRequest | FastRankRequest
CandidateInput = Candidate | FastCandidate
EventInput = InlineEvent | FastEvent

_decoder = msgspec.json.Decoder(FastRankRequest)


def _ids(request: FastRankRequest) -> list[str]:
    ctx = request.context
    ids = [request.user_id, ctx.surface, ctx.device]
    for c in request.candidates:
        ids.append(c.ad_id)
        ids.append(c.advertiser_id)
        if c.content_id is not None:
            ids.append(c.content_id)
    for e in request.events or ():
        ids.append(e.item_id)
        ids.append(e.surface)
        if e.event_id is not None:
            ids.append(e.event_id)
    return ids


def decode_fast(body: bytes) -> FastRankRequest | None:
    """The body as a FastRankRequest, or None when this decoder does not accept it."""
    try:
        request = _decoder.decode(body)
    except msgspec.MsgspecError:
        return None
    if _BAD_ID_CHAR.search("".join(_ids(request))):
        return None
    return request
