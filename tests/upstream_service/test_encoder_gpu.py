"""The encoder's CUDA path (pinned host buffers, copies on a side stream, bf16 autocast)
against the CPU float32 reference. Skipped without CUDA.

Self-contained (torch and the model package only), so it also runs on a GPU host without the
service dependencies::

    python -m pytest --noconftest -m gpu tests/upstream_service/test_encoder_gpu.py
"""

from __future__ import annotations

import copy

import pytest
import torch

from shared_model.config import tiny_config
from shared_model.contract import ActionType, EmbeddingDType, HistoryRecord, stable_hash
from shared_model.upstream import UpstreamModel
from upstream_service.encoder import CUDA_CHUNK_ROWS, UserEncoder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

BASE_MS = 1_750_000_000_000


def _history(u: int, n: int, content_dim: int) -> list[HistoryRecord]:
    return [
        HistoryRecord(
            timestamp_ms=BASE_MS + 60_000 * i,
            action_type=list(ActionType)[(u + i) % 4],
            item_hash=stable_hash(f"item-{u}-{i}"),
            surface_hash=stable_hash("feed" if i % 3 else "reels"),
            event_hash=u * 1000 + i,
            content=tuple(0.1 * ((i + j + u) % 5) for j in range(content_dim)),
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def batch():
    """A CPU float32 encoder, and more users than one CUDA chunk, lengths 0..T+4."""
    torch.manual_seed(0)
    cfg = tiny_config("upstream")
    model = UpstreamModel(cfg).eval()
    n_users = CUDA_CHUNK_ROWS + 7
    lengths = [(5 * u) % (cfg.max_seq_len + 5) for u in range(n_users)]
    users = [f"user-{u}" for u in range(n_users)]
    histories = [_history(u, n, cfg.content_dim) for u, n in enumerate(lengths)]
    cpu = UserEncoder(model, cfg, "v1", dtype=EmbeddingDType.FLOAT32)
    return cpu, users, histories


def _on_cuda(cpu: UserEncoder, autocast: torch.dtype | None) -> UserEncoder:
    model = copy.deepcopy(cpu.model).cuda()
    return UserEncoder(
        model, cpu.config, "v1", dtype=EmbeddingDType.FLOAT32, autocast_dtype=autocast
    )


def test_cuda_float32_equals_the_cpu_reference(batch) -> None:
    cpu, users, histories = batch
    reference = cpu.embed(users, histories, length_aware=False)
    gpu = _on_cuda(cpu, None)
    assert gpu.cuda and len(gpu.plan([len(h) for h in histories])) > 1
    for length_aware in (False, True):
        got = gpu.embed(users, histories, length_aware)
        assert got.device.type == "cpu" and got.dtype == torch.float32
        torch.testing.assert_close(got, reference, atol=1e-4, rtol=1e-4)


def test_cuda_bf16_is_within_bf16_tolerance_of_float32(batch) -> None:
    cpu, users, histories = batch
    reference = cpu.embed(users, histories, length_aware=False)
    got = _on_cuda(cpu, torch.bfloat16).embed(users, histories)
    relative = (got - reference).norm(dim=-1) / reference.norm(dim=-1)  # (B,)
    assert relative.max() < 5e-2, relative.max()
    assert torch.isfinite(got).all()


def test_cuda_records_match_and_keep_order(batch) -> None:
    cpu, users, histories = batch
    gpu = _on_cuda(cpu, torch.bfloat16)
    records = gpu.encode(users, histories, now_ms=BASE_MS)
    assert [r.user_id for r in records] == users
    assert [r.record.history_length for r in records] == [
        min(len(h), cpu.history_length) for h in histories
    ]
    assert gpu.calibrate(seconds=0.05) >= 0
