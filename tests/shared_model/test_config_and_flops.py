import ast
from pathlib import Path

import pytest

from shared_model.config import LLaTTEConfig, online_config, tiny_config, upstream_config
from shared_model.flops import sequence_flops


def test_json_round_trip():
    for cfg in (upstream_config(), online_config(), tiny_config("online")):
        assert LLaTTEConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(pyramid=[16, 20, 0]), r"pyramid\[1\]=20 must be in \[0, 16\]"),
        (dict(pyramid=[16, 0]), "pyramid has 2 entries for 3 layers"),
        (dict(dhen_modules=["cross", "gbdt"]), "dhen_modules"),
    ],
)
def test_invalid_configs_name_the_problem(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config("online", **overrides)
    with pytest.raises(ValueError, match="unknown config field"):
        LLaTTEConfig.from_dict({"d_modle": 3})


def test_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="stage must be 'upstream' or 'online'"):
        LLaTTEConfig(stage="middle")


def test_default_pyramid_is_full_attention_then_cross():
    cfg = LLaTTEConfig(max_seq_len=100, n_layers=4)
    assert cfg.pyramid == [100, 100, 100, 0]
    assert cfg.layer_kv_lengths == [100, 100, 100, 100]


def test_flops_hand_count_on_a_tiny_config():
    cfg = tiny_config(
        "online",
        n_layers=2,
        pyramid=[4, 0],
        max_seq_len=8,
        content_dim=0,
        time_enc_dims=0,
        n_query=2,
        d_model=16,
        n_heads=2,
        head_dim=4,
        q_lora_rank=6,
        kv_lora_rank=5,
        d_ffn=12,
        d_embed=3,
        n_candidate_floats=1,
        readout_rank=2,
        readout_hidden=7,
        d_summary=9,
    )
    fl = sequence_flops(cfg)
    # tokenizer: 8 events x (Linear(4*3+1 -> 16) + Linear(16 -> 16))
    assert fl.tokenizer == 2 * 8 * (13 * 16 + 16 * 16)
    # query tokens: 1 context token from context features (3*3+6), 1 candidate token from
    # context + candidate (2*3+1) features
    assert fl.query_tokens == 2 * 15 * 16 + 2 * (15 + 7) * 16

    # layer 1: L = 8+2 keys, S = 4+2 queries; layer 2: L = 4+2, S = 0+2
    def layer(L, S):
        proj = 2 * L * 16 * 5 + 2 * L * 5 * 16 + 2 * S * 16 * 6 + 2 * S * 6 * 8 + 2 * S * 8 * 16
        return proj + 2 * (2 * S * L * 8), 3 * 2 * S * 16 * 12

    (a1, f1), (a2, f2) = layer(10, 6), layer(6, 2)
    assert fl.attention == a1 + a2
    assert fl.ffn == f1 + f2
    assert fl.readout == 2 * (32 * 2 + 2 * 7 + 7 * 2 + 2 * 9)
    assert fl.total == fl.tokenizer + fl.query_tokens + fl.attention + fl.ffn + fl.readout


def test_default_upstream_spends_over_45x_the_online_sequence_flops():
    ratio = sequence_flops(upstream_config()).total / sequence_flops(online_config()).total
    assert ratio > 45


MODEL_ONLY = {"__future__", "torch", "safetensors"}
STDLIB_OK = {
    "array",
    "itertools",
    "collections",
    "gc",
    "importlib",
    "contextlib",
    "dataclasses",
    "enum",
    "functools",
    "hashlib",
    "json",
    "math",
    "pathlib",
    "struct",
    "threading",
    "time",
    "typing",
    "warnings",
}


def test_model_package_depends_on_torch_alone():
    root = Path(__file__).resolve().parents[2] / "shared_model"
    offline = {"data", "training", "experiments"}  # offline tooling may use numpy/tqdm/plots
    for path in root.rglob("*.py"):
        if offline & set(path.relative_to(root).parts[:-1]) or path.name == "bench.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top in MODEL_ONLY | STDLIB_OK | {"shared_model"}, f"{path}: {name}"
