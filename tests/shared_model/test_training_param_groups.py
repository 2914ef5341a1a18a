import torch

from shared_model import build_model, tiny_config
from shared_model.training.trainer import param_groups


def _names(model, params):
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_decay_only_on_weight_matrices_never_embeddings_norms_or_biases():
    model = build_model(tiny_config("online", content_dim=8, n_candidate_floats=2))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decayed = _names(model, decay["params"])
    kept = _names(model, no_decay["params"])
    assert decayed and kept and not decayed & kept
    assert decayed | kept == {n for n, _ in model.named_parameters()}
    modules = dict(model.named_modules())
    for name in decayed:
        owner = modules[name.rsplit(".", 1)[0]] if "." in name else model
        assert not isinstance(owner, torch.nn.Embedding | torch.nn.EmbeddingBag), name
        assert not isinstance(owner, torch.nn.LayerNorm | torch.nn.RMSNorm), name
        assert not name.endswith("bias"), name
    for name, p in model.named_parameters():
        if name.endswith("bias") or p.dim() < 2:
            assert name in kept, name
    tables = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)]
    assert tables and all(f"{t}.weight" in kept for t in tables)


def test_max_seconds_stops_training_with_the_best_weights_so_far():
    import numpy as np

    from shared_model.training.trainer import TrainConfig, fit

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(64, 3), (torch.rand(64, 2) > 0.5).float()

    def rows(idx: np.ndarray):
        i = torch.from_numpy(idx)
        return (x[i],), y[i]

    tc = TrainConfig(epochs=5, batch_size=8, progress=False, max_seconds=1e-9)
    res = fit(model, rows, 64, rows, 64, tc, [1.0, 1.0], device=torch.device("cpu"))
    # out of time after the first step: one evaluation, then stop
    assert res.steps == 1 and len(res.history) == 1 and res.best is not None
