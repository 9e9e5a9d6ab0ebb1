"""The authors' recipe on the paper ids, and the digits / toy ids exactly as before it.

The CIFAR10 and MNIST ids take ``flows.AUTHORS_RECIPE`` (the first author's FFJORD fork as
run for Table 1): dynamics c -> h -> h -> h -> c (``--dims 64,64,64``), Glow's LinearZeros
q_phi / q_theta, beta 0.5 (``--weight_y 0.5``) and a learned end time (``--train_T True``).
The digits and toy ids keep the FlowConfig defaults the committed studies ran with.
"""

from __future__ import annotations

import hashlib

import gymnasium as gym
import numpy as np
import pytest
import torch
from fakedata import allow_fake_cifar10, write_fake_cifar10, write_fake_mnist
from flowkit import TINY_IMAGE
from torch import nn

import infocnf_env
from flows import AUTHORS_RECIPE, build_model
from flows.heads import LatentHead, LinearZeros
from flows.nets import ODENet, conv_net, mlp_net
from infocnf_env.checkpoint import spec_differences
from infocnf_env.tasks import FlowTask

PAPER_IDS = sorted(k for k, c in infocnf_env.ENV_IDS.items() if c.data.dataset in ("cifar10", "mnist"))
DIGITS_IDS = sorted(k for k, c in infocnf_env.ENV_IDS.items() if c.data.dataset == "digits")
#: Flow ids that keep the FlowConfig defaults (beta 1, plain zero heads, 3-layer dynamics).
DEFAULT_RECIPE_IDS = DIGITS_IDS + ["InfoCNF-Toy1D-v0"]
SHAPES = {"cifar10": (3, 32, 32), "mnist": (1, 28, 28)}

#: Parameter count and sha256 of the seed-0 initial state dict (names + float32 bytes, keys
#: sorted) of the digits / toy ids, computed from the code before the recipe was added. A
#: change here invalidates the committed digits studies.
BEFORE = {
    "InfoCNF-Digits-v0": (21120, "9a1e2ad00d743721b222e8deab3aa637242983e6f2f6238b867de1b03a11ca00"),
    "CCNF-Digits-v0": (22144, "a100de2d37ed33e1369fb0b2ae35c2c70c16d94f250376a3aced1999521b3a25"),
    "CNF-Digits-v0": (20086, "7ce6f7429346cd0f1e5dbb9a6316b427cca3a0c7a14f539965644f57069abcf7"),
    "InfoCNF-Toy1D-v0": (2710, "7fd394b964b5464f63dbd90fea1534eb324915a7f748e8f3c497e2f751fd5b8b"),
}


def _task(env_id: str, **overrides) -> FlowTask:
    config = infocnf_env.ENV_IDS[env_id].replace(**overrides)
    return FlowTask(config.head, config.arch, config.data, config.model, seed=config.seed)


def _paper_model(env_id: str, **overrides):
    """The flow of a CIFAR10 / MNIST id at its registered size (no data needed)."""
    config = infocnf_env.ENV_IDS[env_id].replace(**overrides)
    return build_model(config.head, SHAPES[config.data.dataset], 10, config.arch, **config.model)


def _state_digest(model: nn.Module) -> str:
    state = model.state_dict()
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        value = state[key].detach().cpu().contiguous()
        digest.update(value.numpy().astype("<f4").tobytes() if value.is_floating_point() else value.numpy().tobytes())
    return digest.hexdigest()


def _nets(model: nn.Module) -> list[ODENet]:
    return [m for m in model.modules() if isinstance(m, ODENet)]


def _conv_chain(net: ODENet) -> list[int]:
    """Channels through a conv dynamics net: ``[c, h, ..., h, c]`` (time channel excluded)."""
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    return [convs[0].in_channels - 1] + [c.out_channels for c in convs]


# --- LinearZeros ------------------------------------------------------------------------


def test_linear_zeros_starts_at_zero_and_learns_its_log_scale():
    torch.manual_seed(0)
    layer = LinearZeros(5, 3)
    assert isinstance(layer.logs, nn.Parameter) and layer.logs.shape == (3,) and layer.logscale_factor == 3
    x = torch.randn(7, 5)
    assert torch.equal(layer(x), torch.zeros(7, 3))
    target = torch.randn(7, 3)
    layer(x).sub(target).pow(2).mean().backward()
    # W x + b is zero at initialisation, so only W and b move on the first update
    assert layer.weight.grad.abs().sum() > 0 and layer.bias.grad.abs().sum() > 0
    assert torch.equal(layer.logs.grad, torch.zeros(3))
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    opt.step()
    opt.zero_grad()
    layer(x).sub(target).pow(2).mean().backward()
    assert (layer.logs.grad.abs() > 0).all()
    opt.step()
    assert (layer.logs.detach() != 0).all()


def test_linear_zeros_is_glows_formula():
    torch.manual_seed(1)
    layer = LinearZeros(4, 6)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x = torch.randn(3, 4)
    expected = (x @ layer.weight.T + layer.bias) * torch.exp(3 * layer.logs)
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("init", ["zeros", "linear_zeros"])
def test_head_starts_as_a_standard_normal_prior_and_a_uniform_classifier(init):
    head = LatentHead(dim=8, sup_dim=4, num_classes=3, dropout=0.0, init=init)
    assert isinstance(head.classifier, LinearZeros) == (init == "linear_zeros")
    assert isinstance(head.condition, LinearZeros) == (init == "linear_zeros")
    z, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])
    mean, log_std = head.prior_params(y)
    assert torch.equal(mean, torch.zeros(5, 4)) and torch.equal(log_std, torch.zeros(5, 4))
    assert torch.equal(head.logits(z), torch.zeros(5, 3))


def test_unknown_head_init_is_rejected():
    with pytest.raises(ValueError, match="head_init"):
        LatentHead(8, 4, 3, init="glow")
    with pytest.raises(ValueError, match="head_init"):
        build_model("infocnf", (4,), 2, "mlp", hidden=4, num_blocks=1, head_init="glow")


# --- depth of the dynamics ----------------------------------------------------------------


@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
def test_num_layers_counts_every_layer(num_layers):
    assert len(conv_net(3, 8, num_layers).layers) == num_layers
    assert len(mlp_net(5, 8, num_layers).layers) == num_layers
    chain = _conv_chain(conv_net(3, 8, num_layers))
    assert chain == [3] + [8] * (num_layers - 1) + [3]


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_num_layers_below_one_is_an_error(bad):
    with pytest.raises(ValueError, match="num_layers"):
        conv_net(3, 8, bad)


@pytest.mark.parametrize("env_id", PAPER_IDS)
def test_paper_ids_have_three_hidden_conv_layers(env_id):
    model = _paper_model(env_id)
    nets = _nets(model)
    assert nets and all(len(net.layers) == 4 for net in nets)
    for net in nets:
        c, *hidden, out = _conv_chain(net)
        assert hidden == [64, 64, 64] and out == c  # c -> 64 -> 64 -> 64 -> c, the authors' --dims 64,64,64


@pytest.mark.parametrize("env_id", DIGITS_IDS)
def test_digits_ids_keep_two_hidden_conv_layers(env_id):
    nets = _nets(_task(env_id).model)
    assert len(nets) == 3
    for net in nets:
        c, *hidden, out = _conv_chain(net)
        assert hidden == [24, 24] and out == c


# --- beta, end time and heads per id ------------------------------------------------------


@pytest.mark.parametrize("env_id", PAPER_IDS + DEFAULT_RECIPE_IDS)
def test_beta_follows_the_ids_recipe(env_id):
    config = infocnf_env.ENV_IDS[env_id]
    expected = 0.5 if env_id in PAPER_IDS else 1.0
    assert config.model.get("beta", 1.0) == expected
    model = _paper_model(env_id) if env_id in PAPER_IDS else _task(env_id).model
    assert model.beta == expected


@pytest.mark.parametrize("env_id", PAPER_IDS)
def test_paper_ids_learn_the_end_time_and_use_linear_zeros(env_id):
    model = _paper_model(env_id)
    end_times = [n for n, p in model.named_parameters() if n.endswith("sqrt_end_time")]
    assert len(end_times) == model.num_blocks
    if model.head.conditional:
        assert isinstance(model.head.classifier, LinearZeros) and isinstance(model.head.condition, LinearZeros)
    assert model.spec["config"]["head_init"] == "linear_zeros"


@pytest.mark.parametrize("env_id", DEFAULT_RECIPE_IDS)
def test_digits_and_toy_ids_are_unchanged(env_id):
    model = _task(env_id).model
    count, digest = BEFORE[env_id]
    assert sum(p.numel() for p in model.parameters()) == count
    assert _state_digest(model) == digest
    assert not any(n.endswith("sqrt_end_time") for n, _ in model.named_parameters())
    if model.head.conditional:
        assert not isinstance(model.head.classifier, LinearZeros)


def test_the_recipe_is_an_option_on_digits():
    model = _task("InfoCNF-Digits-v0", **AUTHORS_RECIPE).model
    assert all(len(net.layers) == 4 for net in _nets(model))
    assert model.beta == 0.5 and isinstance(model.head.classifier, LinearZeros)
    assert sum(n.endswith("sqrt_end_time") for n, _ in model.named_parameters()) == model.num_blocks


def test_checkpoints_without_head_init_load_as_plain_zero_heads():
    model = _task("InfoCNF-Digits-v0").model
    old = {**model.spec, "config": {k: v for k, v in model.spec["config"].items() if k != "head_init"}}
    assert spec_differences({"model": old}, {"model": model.spec}) == ""
    recipe = build_model("infocnf", (1, 8, 8), 10, hidden=24, num_scales=2, flows_per_scale=1, num_levels=17,
                         head_init="linear_zeros")
    assert "head_init" in spec_differences({"model": old}, {"model": recipe.spec})


# --- the registered environments ------------------------------------------------------------


@pytest.mark.parametrize("env_id", ["InfoCNF-CIFAR10-v0", "CCNF-CIFAR10-LargeBatch-v0", "CNF-MNIST-v0"])
def test_paper_ids_make_with_the_recipe(env_id, tmp_path, monkeypatch):
    write_fake_cifar10(tmp_path)
    write_fake_mnist(tmp_path)
    allow_fake_cifar10(monkeypatch)
    env = gym.make(env_id, data_root=str(tmp_path), **TINY_IMAGE)
    model = env.unwrapped.model
    assert all(_conv_chain(net)[1:-1] == [4, 4, 4] for net in _nets(model))
    assert model.beta == 0.5 and model.spec["config"]["train_time"] is True
    env.reset(seed=0)
    for _ in range(env.unwrapped.num_blocks):
        _, reward, terminated, _, info = env.step(np.full(env.action_space.shape, -3.0, dtype=np.float32))
    assert terminated and torch.isfinite(torch.tensor(reward))
    env.close()
