"""Config dataclasses: JSON round trip, strict keys and types, overrides, validation."""

import json

import pytest

from vaelab.config import from_dict, load_json, to_dict, with_overrides
from vaelab.vae.config import ModelConfig, RunConfig, TrainConfig
from vaelab.errors import VaelabError


def test_roundtrip():
    cfg = RunConfig(model=ModelConfig("dense", "256-512", 5), train=TrainConfig(beta=0.5, epochs=3))
    assert from_dict(RunConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg


@pytest.mark.parametrize("data, msg", [
    ({"model": {"latent": 3}}, "unknown config key.*model.latent"),
    ({"train": {"epochs": "ten"}}, "train.epochs.*integer"),
    ({"train": {"epochs": True}}, "train.epochs.*integer"),
    ({"train": {"binarize": 1}}, "true or false"),
    ({"model": {"family": "mlp"}}, "one of dense, conv"),
    ({"kind": "ddpm"}, "one of vae"),
    ({"model": 5}, "must be an object"),
])
def test_strict_from_dict(data, msg):
    with pytest.raises(VaelabError, match=msg):
        from_dict(RunConfig, data)


@pytest.mark.parametrize("train, msg", [
    ({"beta": -1.0}, "beta"), ({"epochs": 0}, "epochs"), ({"lr": 0.0}, "lr"),
    ({"batch_size": 0}, "batch_size"), ({"device": "tpu"}, "device"), ({"beta": float("nan")}, "beta"),
])
def test_validation(train, msg):
    with pytest.raises(VaelabError, match=msg):
        from_dict(RunConfig, {"train": train}).validate()


def test_overrides():
    cfg = with_overrides(RunConfig(), {"train.beta": 2, "model.latent_dim": 20})
    assert cfg.train.beta == 2.0 and isinstance(cfg.train.beta, float) and cfg.model.latent_dim == 20
    with pytest.raises(VaelabError, match="unknown config key: train.betta"):
        with_overrides(RunConfig(), {"train.betta": 2})


def test_load_json_errors(tmp_path):
    p = tmp_path / "config.json"
    p.write_text("{not json")
    with pytest.raises(VaelabError, match="not valid JSON"):
        load_json(p, RunConfig)
    p.write_text(json.dumps({**to_dict(RunConfig()), "extra": 1}))
    with pytest.raises(VaelabError, match="unknown config key"):
        load_json(p, RunConfig)
    p.write_text(json.dumps({**to_dict(RunConfig()), "meta": {"torch": "x"}}))
    assert load_json(p, RunConfig) == RunConfig()
