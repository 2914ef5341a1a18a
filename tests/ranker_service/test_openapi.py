"""The OpenAPI document tells the truth: real error bodies match the declared error model,
examples validate against their models, operation ids are clean, fixed values are enums."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from ranker_service.errors import ErrorResponse
from ranker_service.examples import RANK_REQUEST_EXAMPLE, RANK_RESPONSE_EXAMPLE
from ranker_service.schemas import RankRequest, RankResponse


def _resolve(doc: dict, schema: dict) -> dict:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    return doc["components"]["schemas"][ref.rsplit("/", 1)[-1]]


def _declared(doc: dict, path: str, method: str, status: int) -> dict:
    responses = doc["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method} {path} does not declare {status}"
    return _resolve(doc, responses[str(status)]["content"]["application/json"]["schema"])


@pytest.fixture(scope="module")
def openapi(app_client: TestClient) -> dict:
    return app_client.get("/openapi.json").json()


def test_every_declared_4xx_uses_the_one_error_model(openapi: dict) -> None:
    error_schema = openapi["components"]["schemas"]["ErrorResponse"]
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if code.startswith("4"):
                    schema = response["content"]["application/json"]["schema"]
                    assert _resolve(openapi, schema) == error_schema, (method, path, code)


def test_operation_ids_are_the_handler_names(openapi: dict) -> None:
    ids = {op["operationId"] for ops in openapi["paths"].values() for op in ops.values()}
    assert {"rank", "healthz", "readyz", "reload"} <= ids


def test_fixed_values_are_enums(openapi: dict) -> None:
    schemas = openapi["components"]["schemas"]
    assert schemas["HistorySource"]["enum"] == ["redis", "inline", "none"]
    for name in ("UpstreamStatus", "EmbeddingOutcome"):
        assert "enum" in schemas[name]


def test_examples_validate_against_their_models(openapi: dict) -> None:
    RankRequest.model_validate(RANK_REQUEST_EXAMPLE)
    RankResponse.model_validate(RANK_RESPONSE_EXAMPLE)
    for example in ErrorResponse.model_json_schema()["examples"]:
        ErrorResponse.model_validate(example)
    schemas = openapi["components"]["schemas"]
    assert schemas["RankRequest"]["examples"] == [RANK_REQUEST_EXAMPLE]
    assert schemas["RankResponse"]["examples"] == [RANK_RESPONSE_EXAMPLE]


def test_the_request_example_is_accepted_by_the_server(client: TestClient) -> None:
    response = client.post("/v1/rank", json=RANK_REQUEST_EXAMPLE)
    assert response.status_code == 200, response.text
    RankResponse.model_validate(response.json())


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("post", "/v1/rank", {"json": {"user_id": "u"}}, 422),  # validation
        ("post", "/v1/rank", {"content": "{not json", "headers": {
            "content-type": "application/json"}}, 422),  # malformed JSON
        ("post", "/v1/rank", {"json": {**RANK_REQUEST_EXAMPLE, "candidates": [
            RANK_REQUEST_EXAMPLE["candidates"][0]] * 51}}, 422),  # a limit (max_candidates=50)
        ("post", "/v1/rank", {"content": "x" * 70_000, "headers": {
            "content-type": "application/json"}}, 413),  # body too large
        ("post", "/admin/reload", {"headers": {"authorization": "Bearer wrong"}}, 401),
    ],
    ids=["validation", "malformed", "limit", "too-large", "unauthorized"],
)  # fmt: skip
def test_real_error_responses_match_the_declared_schema(
    client: TestClient, openapi: dict, method: str, path: str, kwargs: dict, status: int
) -> None:
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    declared = _declared(openapi, path, method, status)
    assert set(body) <= set(declared["properties"]) and set(declared["required"]) <= set(body)
    parsed = TypeAdapter(ErrorResponse).validate_python(body)
    assert parsed.detail
    if status == 422 and parsed.errors is not None:
        assert all(e.loc and e.msg for e in parsed.errors)


def test_unknown_paths_get_the_error_model_too(client: TestClient) -> None:
    response = client.get("/no/such/path")
    assert response.status_code == 404
    assert ErrorResponse.model_validate(response.json()).detail
