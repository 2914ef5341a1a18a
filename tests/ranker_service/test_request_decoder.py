"""The msgspec request decoder against the reference (pydantic's RankRequest).

Whatever body the fast decoder accepts, the reference accepts with the same values; a body
the reference refuses, the fast decoder refuses too (the route then answers the reference's
422). Bodies are generated near the schema: valid ones, and ones with a field of the wrong
type, an id with a forbidden character, a value out of range, an unknown or a missing field.
"""

from __future__ import annotations

import copy
import json
import sys

import msgspec
import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from ranker_service.request_decoder import FastRankRequest, decode_fast
from ranker_service.routes.rank import parse_rank_request, validate_rank_request
from ranker_service.schemas import RankRequest
from shared_model.contract import MAX_ID_LENGTH, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS
from tests.mutation import examples

# printable, no braces; no lone surrogates (no JSON text holds one: both refuse it)
good_ids = st.text(
    st.characters(min_codepoint=0x20, exclude_characters="{}\x7f", exclude_categories=["Cs"]),
    min_size=1,
    max_size=12,
)
finite = st.floats(allow_nan=False, allow_infinity=False)
timestamps = st.integers(MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS - 1)

valid_bodies = st.fixed_dictionaries(
    {
        "user_id": good_ids,
        "context": st.fixed_dictionaries({"surface": good_ids, "device": good_ids}),
        "candidates": st.lists(
            st.fixed_dictionaries(
                {"ad_id": good_ids, "advertiser_id": good_ids},
                optional={
                    "content_id": good_ids,
                    "floats": st.lists(finite, max_size=4),
                    "content_embedding": st.lists(finite, max_size=4),
                    "bid": st.floats(0, 10),
                },
            ),
            min_size=1,
            max_size=4,
        ),
    },
    optional={
        "events": st.lists(
            st.fixed_dictionaries(
                {
                    "timestamp_ms": timestamps,
                    "action_type": st.sampled_from(["click", 2]),
                    "item_id": good_ids,
                },
                optional={"value": finite, "event_id": good_ids},
            ),
            max_size=3,
        )
    },
)


# Values put in place of any field: wrong types, ids and numbers at and past their limits.
ODD_VALUES = [
    None, True, False, 0, -1, 7, 1.5, -1e-300, 1e300, 2**70, "", "1", "1.5", "click", "x",
    "a" * MAX_ID_LENGTH, "a" * (MAX_ID_LENGTH + 1), "{tag}", "a}", "new\nline", "nul\x00",
    "del\x7f", "tab\t", "caf\u00e9", [], [1.0], [True], [None], ["1"], {}, {"ad_id": "a"},
    MIN_TIMESTAMP_MS - 1, MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS - 1, MAX_TIMESTAMP_MS,
]  # fmt: skip


def objects(tree) -> list[dict]:
    """Every JSON object in the body, the body first."""
    if isinstance(tree, dict):
        return [tree, *(o for v in tree.values() for o in objects(v))]
    if isinstance(tree, list):
        return [o for v in tree for o in objects(v)]
    return []


@st.composite
def perturbed_bodies(draw) -> dict:
    """A valid body with one or two changes: a field set to an odd value, a field left out,
    or an unknown field added, in any of its objects."""
    body = copy.deepcopy(draw(valid_bodies))  # drawn values are not to be changed
    for _ in range(draw(st.integers(1, 2))):
        target = draw(st.sampled_from(objects(body)))
        field = draw(st.sampled_from([*target, "unknown"]))
        action = draw(st.sampled_from(["odd", "odd", "drop"]))
        if action == "drop":
            target.pop(field, None)
        else:
            target[field] = copy.deepcopy(draw(st.sampled_from(ODD_VALUES)))
    return body


def reference(body: bytes) -> RankRequest | None:
    try:
        return validate_rank_request(body)
    except RequestValidationError:
        return None


def same_values(fast: FastRankRequest, ref: RankRequest) -> None:
    assert msgspec.to_builtins(fast) == ref.model_dump(mode="json")


@settings(max_examples=examples(800), deadline=None)
@given(perturbed_bodies())
def test_the_fast_decoder_accepts_what_the_reference_accepts_with_the_same_values(data):
    body = json.dumps(data).encode()
    fast, ref = decode_fast(body), reference(body)
    assert (fast is None) == (ref is None), body
    if fast is not None:
        same_values(fast, ref)


@settings(max_examples=examples(300), deadline=None)
@given(valid_bodies)
def test_every_body_the_schema_allows_is_decoded_fast_with_the_references_values(data):
    body = json.dumps(data).encode()
    fast = decode_fast(body)
    assert fast is not None, body
    same_values(fast, validate_rank_request(body))
    assert parse_rank_request(body) == fast  # the serving path takes the fast decode


@pytest.mark.parametrize(
    "raw",
    [
        b'{"user_id": "u", "context": {"surface": "feed", "device": "ios"},'
        b' "candidates": [{"ad_id": "a", "advertiser_id": "b", "floats": [1e400]}]}',
        b'{"user_id": "u", "context": {"surface": "feed", "device": "ios"},'
        b' "candidates": [{"ad_id": "a", "advertiser_id": "b", "bid": -1e400}]}',
        b'{"user_id": "u", "context": {"surface": "feed", "device": "ios"},'
        b' "candidates": [{"ad_id": "a", "advertiser_id": "b", "floats": [NaN]}]}',
        b'{"user_id": "\\ud800", "context": {"surface": "feed", "device": "ios"},'
        b' "candidates": [{"ad_id": "a", "advertiser_id": "b"}]}',
        b'{"user_id": "u", "context": {"surface": "feed", "device": "ios"},'
        b' "candidates": [{"ad_id": "a", "advertiser_id": "b"}]} trailing',
        b'\xef\xbb\xbf{"user_id": "u", "context": {"surface": "feed", "device": "ios"},'
        b' "candidates": [{"ad_id": "a", "advertiser_id": "b"}]}',
    ],
    ids=["overflow-to-inf", "negative-inf-bid", "nan", "lone-surrogate", "trailing", "bom"],
)
def test_bodies_json_cannot_hold_are_refused_by_both(raw):
    assert decode_fast(raw) is None
    with pytest.raises(RequestValidationError):
        parse_rank_request(raw)


def test_the_largest_finite_float_is_accepted_by_both():
    raw = (
        b'{"user_id": "u", "context": {"surface": "feed", "device": "ios"}, "candidates": '
        b'[{"ad_id": "a", "advertiser_id": "b", "floats": [%r], "bid": %r}]}'
        % (sys.float_info.max, sys.float_info.max)
    )
    fast = decode_fast(raw)
    assert fast is not None and fast.candidates[0].floats == [sys.float_info.max]
    same_values(fast, validate_rank_request(raw))


# One change to a body that holds every field: (object path, field, value). Each rule of the
# schema, at and past its limit.
FULL_BODY = {
    "user_id": "u-1",
    "context": {"surface": "feed", "device": "ios", "time_ms": 1_700_000_000_000},
    "candidates": [
        {
            "ad_id": "a",
            "advertiser_id": "b",
            "content_embedding": [0.5, -1.0],
            "content_id": "c",
            "floats": [0.25],
            "bid": 1.5,
        },
    ],
    "events": [
        {
            "timestamp_ms": 1_700_000_000_000,
            "action_type": "click",
            "item_id": "i",
            "surface": "feed",
            "event_id": "e",
            "content_embedding": [1.0],
            "value": 2.0,
        },
    ],
}
EDGES = [
    ((), "candidates", []),
    (("candidates", 0), "bid", -1e-300),
    (("candidates", 0), "bid", 0),
    (("candidates", 0), "floats", [1e308, -1e308]),
    (("candidates", 0), "content_embedding", [1]),
    (("candidates", 0), "content_id", None),
    (("context",), "time_ms", MAX_TIMESTAMP_MS),
    (("context",), "time_ms", MAX_TIMESTAMP_MS - 1),
    (("context",), "time_ms", MIN_TIMESTAMP_MS - 1),
    (("context",), "time_ms", MIN_TIMESTAMP_MS),
    (("context",), "time_ms", 1.7e12),
    (("events", 0), "timestamp_ms", MAX_TIMESTAMP_MS),
    (("events", 0), "timestamp_ms", MIN_TIMESTAMP_MS - 1),
    (("events", 0), "surface", "{feed}"),
    (("events", 0), "event_id", "e\x00"),
    (("events", 0), "item_id", ""),
    (("events", 0), "item_id", "i" * (MAX_ID_LENGTH + 1)),
    (("events", 0), "action_type", True),
    (("events", 0), "action_type", 2),
    (("events", 0), "value", "2.0"),
    (("events", 0), "surface", None),
    ((), "events", None),
    ((), "user_id", "u\x7f"),
    (("candidates", 0), "advertiser_id", "b}"),
    (("context",), "device", "i" * MAX_ID_LENGTH),
]


def edge_id(path: tuple, field: str, value) -> str:
    return f"{'.'.join(map(str, (*path, field)))}={value!r}"[:60]


@pytest.mark.parametrize("path,field,value", EDGES, ids=[edge_id(*e) for e in EDGES])
def test_each_rule_at_and_past_its_limit_is_the_references(path, field, value):
    body = json.loads(json.dumps(FULL_BODY))
    target = body
    for key in path:
        target = target[key]
    target[field] = value
    raw = json.dumps(body).encode()
    fast, ref = decode_fast(raw), reference(raw)
    assert (fast is None) == (ref is None)
    if fast is not None:
        same_values(fast, ref)


def test_a_body_with_every_field_is_decoded_fast():
    raw = json.dumps(FULL_BODY).encode()
    fast = decode_fast(raw)
    assert fast is not None
    same_values(fast, validate_rank_request(raw))
