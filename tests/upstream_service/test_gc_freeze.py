"""The worker keeps the cyclic GC off its model: once running, the encoder's model is frozen
(a full collection over the process's startup objects would stall a batch for 0.1-0.2 s)."""

from __future__ import annotations

import gc

from tests.upstream_service.conftest import wait_for


def test_a_running_worker_has_frozen_its_model(start_worker) -> None:
    worker = start_worker()
    wait_for(worker.worker.ready, 60, "the worker joined its group")
    model = worker.worker.encoder.model
    # gc.get_objects() lists generations 0-2, never the permanent (frozen) one.
    assert not any(o is model for o in gc.get_objects())
