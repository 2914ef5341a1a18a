"""RankingService._check, the request's limits before any Redis read: the exact limits on
candidates and inline events, the ids the contract refuses though the schema lets them through,
and the content ids the read will look up (each once, in request order, only where needed)."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

from ranker_service.ranking import RankingService, RankInputError
from ranker_service.routes.rank import parse_rank_request
from ranker_service.settings import Settings
from shared_model.config import tiny_config
from tests.ranker_service.helpers import NOW_MS, rank_body

CFG = tiny_config("online")
SETTINGS = Settings(max_candidates=4, max_inline_events=3)


def _check(body: dict, cfg=CFG):
    request = parse_rank_request(json.dumps(body).encode())
    service = SimpleNamespace(settings=SETTINGS)
    return RankingService._check(service, request, SimpleNamespace(config=cfg))  # type: ignore[arg-type]


def _event(i: int) -> dict:
    return {"timestamp_ms": NOW_MS - 1000 * (i + 1), "action_type": "click", "item_id": f"i{i}"}


def _by_id(body: dict, ids: list[str | None]) -> dict:
    """Candidate i names its content by ids[i] instead of sending it (None: keeps it inline)."""
    for cand, cid in zip(body["candidates"], ids, strict=True):
        if cid is not None:
            cand["content_id"] = cid
            del cand["content_embedding"]
    return body


def test_the_limits_are_inclusive() -> None:
    assert _check(rank_body(4, CFG)) == (None, [])
    with pytest.raises(RankInputError, match=r"^too many candidates: 5 > max_candidates=4$"):
        _check(rank_body(5, CFG))
    inline, _ = _check(rank_body(1, CFG, events=[_event(i) for i in range(3)]))
    assert [r.timestamp_ms for r in inline] == [NOW_MS - 3000, NOW_MS - 2000, NOW_MS - 1000]
    with pytest.raises(RankInputError, match=r"^too many inline events: 4 > max_inline_events=3$"):
        _check(rank_body(1, CFG, events=[_event(i) for i in range(4)]))


def test_content_ids_are_looked_up_once_each_in_request_order() -> None:
    body = _by_id(rank_body(4, CFG), ["c-2", None, "c-1", "c-2"])
    assert _check(body) == (None, ["c-2", "c-1"])
    # an id sent beside its vector is not looked up: the vector is there
    body = rank_body(2, CFG)
    body["candidates"][0]["content_id"] = "c-0"
    assert _check(body) == (None, [])


def test_a_model_without_content_looks_nothing_up() -> None:
    no_content = dataclasses.replace(CFG, content_dim=0)
    body = _by_id(rank_body(2, no_content), ["c-0", "c-1"])
    assert _check(body, no_content) == (None, [])


@pytest.mark.parametrize("field", ["user_id", "content_id"])
def test_an_id_the_contract_refuses_is_named_though_the_schema_accepts_it(field: str) -> None:
    odd = "ad\u00a0x"  # a no-break space: no brace, no control character, but not printable
    body = _by_id(rank_body(2, CFG), ["c-0", None])
    if field == "user_id":
        body["user_id"] = odd
    else:
        body["candidates"][1]["content_id"] = odd
    with pytest.raises(RankInputError) as refused:
        _check(body)
    assert str(refused.value) == f"{field} must be printable and contain no braces: {odd!r}"
