"""Config dataclasses: JSON round trip, strict keys and types, overrides, validation."""

import json

import pytest

from vaelab.config import from_dict, load_json, to_dict, with_overrides
from vaelab.vae.config import VAEModelConfig, VAEConfig, VAETrainConfig
from vaelab.errors import VaelabError


def test_roundtrip():
    cfg = VAEConfig(model=VAEModelConfig("dense", "256-512", 5), train=VAETrainConfig(beta=0.5, epochs=3))
    assert from_dict(VAEConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg


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
        from_dict(VAEConfig, data)


@pytest.mark.parametrize("train, msg", [
    ({"beta": -1.0}, "beta"), ({"epochs": 0}, "epochs"), ({"lr": 0.0}, "lr"),
    ({"batch_size": 0}, "batch_size"), ({"device": "tpu"}, "device"), ({"beta": float("nan")}, "beta"),
])
def test_validation(train, msg):
    with pytest.raises(VaelabError, match=msg):
        from_dict(VAEConfig, {"train": train}).validate()


def test_overrides():
    cfg = with_overrides(VAEConfig(), {"train.beta": 2, "model.latent_dim": 20})
    assert cfg.train.beta == 2.0 and isinstance(cfg.train.beta, float) and cfg.model.latent_dim == 20
    with pytest.raises(VaelabError, match="unknown config key: train.betta"):
        with_overrides(VAEConfig(), {"train.betta": 2})


def test_load_json_errors(tmp_path):
    p = tmp_path / "config.json"
    p.write_text("{not json")
    with pytest.raises(VaelabError, match="not valid JSON"):
        load_json(p, VAEConfig)
    p.write_text(json.dumps({**to_dict(VAEConfig()), "extra": 1}))
    with pytest.raises(VaelabError, match="unknown config key"):
        load_json(p, VAEConfig)
    p.write_text(json.dumps({**to_dict(VAEConfig()), "meta": {"torch": "x"}}))
    assert load_json(p, VAEConfig) == VAEConfig()
