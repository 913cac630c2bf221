"""Training several betas together (one vmapped step) follows the runs trained one by one."""

import dataclasses

import pytest
import torch

from vaelab.engine import checkpoint
from vaelab.vae.config import VAEModelConfig, VAEConfig, VAETrainConfig
from vaelab.data.images import load
from vaelab.errors import VaelabError
from vaelab.vae.loss import elbo_terms, stacked_elbo_terms
from vaelab.engine.runs import prepare_new, write_config
from vaelab.vae.stacked import (StackedVAEs, check_group, split_optimizer_state, stack_optimizer_states,
                            train_stacked)
from vaelab.vae.networks import build_vae
from vaelab.vae.train import train_vae

BETAS = (0.5, 1.0, 4.0)


def cfg(family="dense", arch="32-64", latent=2, beta=1.0, epochs=2):
    return VAEConfig(model=VAEModelConfig(family, arch, latent),
                     train=VAETrainConfig(epochs=epochs, batch_size=64, beta=beta, device="cpu"))


def prepared(folder, c):
    prepare_new(folder)
    write_config(folder, c)
    return folder


def weights(run_dir):
    return checkpoint.load_weights(run_dir / checkpoint.WEIGHTS)


def test_stacked_loss_equals_each_models_loss():
    torch.manual_seed(0)
    logits, x = torch.randn(3, 5, 1, 28, 28), torch.rand(5, 1, 28, 28)
    mu, logvar = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    betas = torch.tensor(BETAS)
    t = stacked_elbo_terms(logits, x, mu, logvar, betas)
    for k, beta in enumerate(BETAS):
        one = elbo_terms(logits[k], x, mu[k], logvar[k], beta)
        assert torch.allclose(t.loss[k], one.loss) and torch.allclose(t.kl[k], one.kl)


@pytest.mark.parametrize("family,arch,latent", [("dense", "32-64", 2), ("conv", "16-32-64", 3)])
def test_stacked_forward_is_each_models_forward(family, arch, latent):
    models = [build_vae(family, arch, latent) for _ in range(3)]  # three different inits
    stacked = StackedVAEs(models)
    x = torch.rand(4, 1, 28, 28)
    torch.manual_seed(1)
    logits, mu, logvar = stacked(x)  # randomness="same": the noise a lone model would draw
    for k, m in enumerate(models):
        torch.manual_seed(1)
        out = m(x)
        assert torch.allclose(logits[k], out.logits, atol=1e-5) and torch.allclose(mu[k], out.mu, atol=1e-6)
        assert all(torch.equal(a, b) for a, b in zip(stacked.weights(k).values(), m.state_dict().values()))


def test_optimizer_state_split_and_stack_round_trip():
    stacked = StackedVAEs([build_vae("dense", "32-64", 2) for _ in range(2)])
    opt = torch.optim.Adam(stacked.parameters())
    stacked(torch.rand(3, 1, 28, 28))[0].sum().backward()
    opt.step()
    sd = opt.state_dict()
    parts = [split_optimizer_state(sd, k) for k in range(2)]
    single = torch.optim.Adam(build_vae("dense", "32-64", 2).parameters())
    single.load_state_dict(parts[1])  # loads as a lone model's state
    back = stack_optimizer_states(parts)
    for i, s in sd["state"].items():
        assert all(torch.equal(v, back["state"][i][key]) for key, v in s.items())


def test_only_beta_may_differ():
    check_group([cfg(beta=b) for b in BETAS])
    with pytest.raises(VaelabError, match="but train.beta"):
        check_group([cfg(), cfg(latent=3)])


def test_together_matches_one_by_one_and_resumes_alone(tmp_path, tiny_mnist):
    data = load("mnist", tiny_mnist)
    cfgs = [cfg(beta=b) for b in BETAS]
    alone = []
    for i, c in enumerate(cfgs):
        train_vae(prepared(tmp_path / f"alone{i}", c), c, data, log=lambda m: None)
        alone.append(tmp_path / f"alone{i}")
    # together: first 1 epoch, then resume the group to 2 (the resume path of the sweep)
    short = [dataclasses.replace(c, train=dataclasses.replace(c.train, epochs=1)) for c in cfgs]
    dirs = [prepared(tmp_path / f"together{i}", c) for i, c in enumerate(cfgs)]
    train_stacked(dirs, short, data, log=lambda m: None)
    hists = train_stacked(dirs, cfgs, data, resume=True, log=lambda m: None)
    for a, t, h in zip(alone, dirs, hists):
        wa, wt = weights(a), weights(t)
        assert all(torch.allclose(wa[n], wt[n], atol=1e-4) for n in wa)
        ref = checkpoint.load_state(a)["history"]
        assert [r["epoch"] for r in h] == [1, 2]
        assert h[-1]["test_neg_elbo"] == pytest.approx(ref[-1]["test_neg_elbo"], rel=1e-4)
    # any run of the group continues alone, from the group's optimizer state
    longer = dataclasses.replace(cfgs[2], train=dataclasses.replace(cfgs[2].train, epochs=3))
    h = train_vae(dirs[2], longer, data, resume=True, log=lambda m: None)
    assert [r["epoch"] for r in h] == [1, 2, 3]


def test_runs_at_different_epochs_are_refused_together(tmp_path, tiny_mnist):
    data = load("mnist", tiny_mnist)
    cfgs = [cfg(beta=b, epochs=1) for b in BETAS[:2]]
    dirs = [prepared(tmp_path / f"r{i}", c) for i, c in enumerate(cfgs)]
    train_stacked(dirs, cfgs, data, log=lambda m: None)
    more = dataclasses.replace(cfgs[0], train=dataclasses.replace(cfgs[0].train, epochs=2))
    train_vae(dirs[0], more, data, resume=True, log=lambda m: None)
    with pytest.raises(VaelabError, match="different epochs"):
        train_stacked(dirs, [more, dataclasses.replace(more, train=dataclasses.replace(more.train, beta=1.0))],
                      data, resume=True, log=lambda m: None)


def test_cli_train_together_refuses_what_it_cannot_stack(tmp_path, tiny_mnist, capsys):
    from vaelab.cli.main import main

    a, b, c = (prepared(tmp_path / n, cfg(beta=beta)) for n, beta in (("a", 1.0), ("b", 2.0), ("c", 3.0)))
    other = prepared(tmp_path / "other", cfg(latent=3))
    data = ["--data-dir", str(tiny_mnist)]
    assert main(["train-together", str(a), str(other), *data]) == 2
    assert "but train.beta" in capsys.readouterr().err
    assert main(["train-together", str(a), str(tmp_path / "missing"), *data]) == 4
    assert main(["train-together", str(a), str(a), *data]) == 2
    train_vae(a, cfg(beta=1.0), load("mnist", tiny_mnist), log=lambda m: None)  # a has started, b has not
    assert main(["train-together", str(a), str(b), *data]) == 4
    assert "one by one" in capsys.readouterr().err
    assert main(["train-together", str(b), str(c), *data]) == 0
    assert [len(h) for h in (checkpoint.load_state(b)["history"], checkpoint.load_state(c)["history"])] == [2, 2]
