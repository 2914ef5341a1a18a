"""The contract, the event producer and the Locust load test import without torch."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

PROBE = """
import sys, time
{imports}
{then}
loaded = sorted(m for m in ("torch", "safetensors") if m in sys.modules)
print(",".join(loaded) or "none")
"""


def _loaded_after(imports: str, then: str = "") -> str:
    code = PROBE.format(imports=imports, then=then)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_contract_imports_without_torch() -> None:
    assert _loaded_after("import shared_model.contract") == "none"


def test_producer_imports_and_generates_without_torch() -> None:
    # Drawing events from the synthetic world (numpy) must not pull the model in either.
    then = (
        "events = upstream_service.produce.synthetic_events(5, 0, int(time.time() * 1000))\n"
        "next(iter(events))\n"
        "next(upstream_service.produce.simple_events(5, 0))"
    )
    assert _loaded_after("import upstream_service.produce", then) == "none"


def test_locust_traffic_imports_without_torch() -> None:
    if importlib.util.find_spec("locust") is None:  # never import it here: gevent patches
        pytest.skip("locust is not installed")
    assert _loaded_after("import loadtests.locust.traffic") == "none"


def test_model_names_still_resolve_from_the_package() -> None:
    import shared_model

    assert set(shared_model.__all__) <= set(dir(shared_model))
    for name in shared_model.__all__:
        assert getattr(shared_model, name) is not None
    with pytest.raises(AttributeError):
        _ = shared_model.no_such_name
