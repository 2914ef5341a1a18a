"""RANKER_FASTAPI_TELEMETRY: FastAPI's native OpenTelemetry, off unless asked for.

A tracer provider configured in the process (as an OpenTelemetry SDK or opentelemetry-instrument
would set one) gets a span per request when the setting is on, and none when it is off (the
default): off, FastAPI does not look for a provider at all.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace

from ranker_service.main import create_app
from ranker_service.settings import Settings


class _Tracer(trace.NoOpTracer):
    def __init__(self, spans: list[str]) -> None:
        self.spans = spans

    def start_span(self, name: str, *args: object, **kwargs: object) -> trace.Span:
        self.spans.append(name)
        return super().start_span(name, *args, **kwargs)


class _Provider(trace.TracerProvider):
    """A configured provider (not the API's deferred proxy) that records every span started."""

    def __init__(self) -> None:
        self.spans: list[str] = []
        self.asked = 0

    def get_tracer(self, *args: object, **kwargs: object) -> trace.Tracer:
        return _Tracer(self.spans)


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Provider]:
    recording = _Provider()

    def get_tracer_provider() -> trace.TracerProvider:
        recording.asked += 1
        return recording

    monkeypatch.setattr(trace, "get_tracer_provider", get_tracer_provider)
    yield recording


def _get_healthz(settings: Settings) -> None:
    client = TestClient(create_app(settings))  # not entered: no lifespan, no model to load
    assert client.get("/healthz").status_code == 200


def test_off_by_default_no_span_and_no_provider_lookup(provider: _Provider) -> None:
    assert Settings.model_fields["fastapi_telemetry"].default is False
    _get_healthz(Settings(checkpoint_path="/nonexistent"))
    assert provider.spans == [] and provider.asked == 0


def test_on_a_configured_provider_gets_the_request_span(provider: _Provider) -> None:
    _get_healthz(Settings(checkpoint_path="/nonexistent", fastapi_telemetry=True))
    assert provider.asked > 0
    assert provider.spans[:1] == ["GET"]  # the server span, named once the route is known
