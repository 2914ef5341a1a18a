import json

import pytest
import torch

from shared_model import (
    CheckpointError,
    RankerModel,
    build_model,
    load_checkpoint,
    save_checkpoint,
    tiny_config,
)


def test_round_trip_preserves_weights_version_and_metadata(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config("online")
    model = build_model(cfg)
    version = save_checkpoint(tmp_path, model, cfg, {"upstream_model_version": "upstream-x"})
    assert version.startswith("online-") and len(version) == len("online-") + 12
    ck = load_checkpoint(tmp_path, expected=cfg, stage="online")
    assert ck.model_version == version
    assert ck.metadata == {"upstream_model_version": "upstream-x"}
    assert isinstance(ck.model, RankerModel) and not ck.model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, ck.model.state_dict()[k])
    # Same weights and config -> same version; different weights -> different version.
    assert save_checkpoint(tmp_path / "again", model, cfg) == version
    torch.manual_seed(1)
    assert save_checkpoint(tmp_path / "other", build_model(cfg), cfg) != version


def test_config_mismatch_is_a_clear_error(tmp_path):
    cfg = tiny_config("online")
    save_checkpoint(tmp_path, build_model(cfg), cfg)
    with pytest.raises(CheckpointError, match=r"does not match the expected one in \['d_model'\]"):
        load_checkpoint(tmp_path, expected=tiny_config("online", d_model=48))
    with pytest.raises(CheckpointError, match="holds a 'online' model, expected 'upstream'"):
        load_checkpoint(tmp_path, stage="upstream")


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    cfg = tiny_config("online")
    save_checkpoint(tmp_path, build_model(cfg), cfg)
    doc = json.loads((tmp_path / "config.json").read_text())
    doc["config"]["d_ffn"] = 64
    (tmp_path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_checkpoint(tmp_path)


def test_tampered_weights_fail_the_version_check(tmp_path):
    from safetensors.torch import load_file, save_file

    cfg = tiny_config("online")
    save_checkpoint(tmp_path, build_model(cfg), cfg)
    state = load_file(str(tmp_path / "model.safetensors"))
    state["heads.heads.0.2.bias"] += 1.0
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="does not match the weights"):
        load_checkpoint(tmp_path)


def test_a_pickle_is_refused_and_never_unpickled(tmp_path):
    cfg = tiny_config("online")
    save_checkpoint(tmp_path, build_model(cfg), cfg)

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle code ran')",))

    torch.save({"x": Boom()}, tmp_path / "model.safetensors")  # a crafted pickle
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint file missing"):
        load_checkpoint(tmp_path)
    cfg = tiny_config("upstream")
    save_checkpoint(tmp_path, build_model(cfg), cfg)
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": 1, "config": {"bogus": 1}}))
    with pytest.raises(CheckpointError, match="unknown config field"):
        load_checkpoint(tmp_path)
