"""The worker end to end on CUDA: a real broker and redis-server, the encoder on the GPU in
bf16; its embeddings match the CPU float32 encoder within bf16 tolerance. Skipped without CUDA,
and without the service dependencies (a GPU host with torch alone runs the encoder's tests with
``--noconftest``; this module is then skipped)."""

from __future__ import annotations

import pytest
import torch

for _dependency in ("kafka", "redis", "pydantic_settings"):
    pytest.importorskip(_dependency, reason="the worker's end-to-end test needs the service deps")

from shared_model.contract import EmbeddingRecord, embedding_key  # noqa: E402
from tests.upstream_service.conftest import BASE_MS, make_event, wait_for  # noqa: E402
from upstream_service.encoder import UserEncoder  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _embedding(client, user_id: str) -> EmbeddingRecord | None:
    keys = list(client.scan_iter(match=embedding_key(user_id) + ":*"))
    raw = client.hget(keys[0], "record") if keys else None
    return None if raw is None else EmbeddingRecord.decode(raw)


def test_worker_on_cuda_writes_bf16_embeddings(start_worker, send, redis_client, settings):
    worker = start_worker(device="cuda", autocast="bf16")
    encoder = worker.worker.encoder
    assert encoder.device.type == "cuda" and encoder.autocast_dtype is torch.bfloat16
    users = [f"gpu-{i}" for i in range(5)]
    events = {
        u: [make_event(u, "view", BASE_MS + 100 * i + j) for j in range(3 * i)]
        for i, u in enumerate(users)
    }
    for i, u in enumerate(users):
        events[u].append(make_event(u, "conversion", BASE_MS + 100 * i + 99))
        send(*events[u])
    records = {
        u: wait_for(lambda u=u: _embedding(redis_client, u), 60, f"{u}'s embedding") for u in users
    }
    assert {r.model_version for r in records.values()} == {encoder.model_version}

    cpu = UserEncoder.from_checkpoint(settings.checkpoint_path, device="cpu", autocast="none")
    histories = [[e.to_history_record() for e in events[u]] for u in users]
    reference = cpu.embed(users, histories)
    got = torch.tensor([records[u].vector for u in users])
    relative = (got - reference).norm(dim=-1) / reference.norm(dim=-1)
    assert relative.max() < 5e-2, relative
