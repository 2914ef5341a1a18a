import json

import numpy as np
import pytest
import torch

from shared_model import encode_user, load_checkpoint, score, tiny_config
from shared_model.data.movielens import movielens_dataset
from shared_model.data.synthetic import SyntheticWorld, WorldConfig
from shared_model.data.synthetic_dataset import synthetic_dataset
from shared_model.features import UpstreamFeature
from shared_model.training import pipeline
from shared_model.training.__main__ import main
from shared_model.training.trainer import TrainConfig

WORLD = {"seed": 1, "n_users": 40, "n_items": 300, "n_ads": 30, "n_brands": 10}
CONTENT = WorldConfig().content_dim
TC = TrainConfig(epochs=3, batch_size=64, lr=1e-2, patience=3, progress=False)


def _tiny(stage, content_dim, floats, **kw):
    return tiny_config(
        stage,
        content_dim=content_dim,
        n_candidate_floats=floats,
        max_seq_len=32,
        pyramid=[32, 0] if stage == "upstream" else [8, 0],
        n_layers=2,
        **kw,
    )


@pytest.fixture(scope="module")
def synth():
    return synthetic_dataset(SyntheticWorld(WorldConfig(**WORLD)), days=5, val_days=1, test_days=1)


def test_short_synthetic_run_lowers_validation_ne_below_one(synth):
    torch.manual_seed(0)
    up = pipeline.train_upstream(synth, _tiny("upstream", CONTENT, 4), TC)
    assert up.val.ne_mean < 1.0
    tables = pipeline.upstream_tables(synth, up.model, "stale")
    on = pipeline.train_ranker(synth, _tiny("online", CONTENT, 4, d_upstream=40), TC, tables)
    assert on.val.ne_mean < 1.0, on.val


def test_short_movielens_run_lowers_validation_ne_below_one():
    ds = movielens_dataset(content="genres", negatives=2, max_rows_per_split=3000)
    tc = TrainConfig(
        epochs=3, batch_size=32, lr=3e-3, evals_per_epoch=2, patience=6, progress=False
    )
    cfg = _tiny("online", ds.content_dim, ds.n_candidate_floats, item_buckets=4001, ad_buckets=4001)
    on = pipeline.train_ranker(ds, cfg, tc, pipeline.upstream_tables(ds, None))
    assert on.val.ne_mean < 1.0, on.val


def test_cli_checkpoints_load_in_the_services_code_path(tmp_path):
    up_cfg, on_cfg = _tiny("upstream", CONTENT, 4), _tiny("online", CONTENT, 4, d_upstream=40)
    (tmp_path / "up.json").write_text(up_cfg.to_json())
    (tmp_path / "on.json").write_text(on_cfg.to_json())
    out = tmp_path / "out"
    metrics = main(
        [
            "--out",
            str(out),
            "--world",
            json.dumps(WORLD),
            "--days",
            "3",
            "--upstream-config",
            str(tmp_path / "up.json"),
            "--online-config",
            str(tmp_path / "on.json"),
            "--train",
            json.dumps({"epochs": 1, "batch_size": 64, "progress": False}),
        ]
    )
    up = load_checkpoint(out / "upstream", stage="upstream")
    on = load_checkpoint(out / "online", stage="online")
    assert on.metadata["upstream_model_version"] == up.model_version
    assert metrics["online"]["upstream_model_version"] == up.model_version

    ds = synthetic_dataset(SyntheticWorld(WorldConfig(**WORLD)), days=3, val_days=1, test_days=1)
    row = np.array([len(ds.test) - 1])
    u, t = ds.test.user[row], ds.test.time_ms[row]
    from shared_model.data.samples import context_for

    ctx = context_for(ds.log, u, t, ds.test.surface_hash[row])
    emb = encode_user(up.model, ds.log.gather(u, ds.log.history_end(u, t), 32), ctx)
    assert emb.shape == (1, 40) and torch.isfinite(emb).all()
    cands = ds.candidates.take(np.arange(5))
    events = ds.log.gather(u, ds.log.history_end(u, t), 32)
    probs = score(
        on.model, events, ctx, cands, UpstreamFeature(emb, torch.ones(1, dtype=torch.bool))
    )
    assert probs.shape == (5, 2) and torch.all((probs > 0) & (probs < 1))
