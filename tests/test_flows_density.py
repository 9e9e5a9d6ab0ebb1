"""Densities of the flows against brute force: change of variables, Hutchinson, normalisation.

References: paper Eq. 2 (instantaneous change of variables), Eq. 5 (conditional prior),
Fig. 2a (the 1-D model's density).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal

from flows import build_model
from flows.divergence import exact_divergence, hutchinson_divergence, sample_noise
from flows.heads import standard_normal_logprob
from flows.nets import mlp_net

TIGHT = 1e-8




def _perturb_dynamics(model: nn.Module, std: float, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.ops.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def _perturb_prior(model: nn.Module, std: float, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.head.condition.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def _exact_mlp(head: str, dim: int, num_classes: int | None = None, **config: object):
    opts = dict(hidden=16, num_layers=2, num_blocks=1, logit_alpha=None, num_levels=None, divergence="exact")
    opts.update(config)
    return build_model(head, (dim,), num_classes, arch="mlp", **opts)


def _logabsdet_jacobian(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample brute-force log|det dz/dx| and z, one sample at a time."""
    logdets, zs = [], []
    for i in range(x.shape[0]):
        yi = None if y is None else y[i : i + 1]
        xi = x[i : i + 1]
        jac = torch.autograd.functional.jacobian(lambda v, yi=yi: model(v, yi, tol=TIGHT).z[0], xi)
        jac = jac.reshape(x.shape[1], x.shape[1])
        logdets.append(torch.linalg.slogdet(jac).logabsdet)
        zs.append(model(xi, yi, tol=TIGHT).z.detach()[0])
    return torch.stack(logdets), torch.stack(zs)


def _per_sample(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, attr: str = "logpx") -> torch.Tensor:
    # One solve per sample so the adaptive step sizes match those of the brute-force Jacobian.
    with torch.no_grad():
        return torch.cat([getattr(model(x[i : i + 1], None if y is None else y[i : i + 1], tol=TIGHT), attr)
                          for i in range(x.shape[0])])


def test_cnf_logpx_matches_brute_force_jacobian(float64):
    torch.manual_seed(0)
    model = _exact_mlp("cnf", 2)
    _perturb_dynamics(model, 0.5)
    x = torch.randn(4, 2)
    logdet, z = _logabsdet_jacobian(model, x, None)
    assert logdet.abs().min() > 1e-2, "the map must not be volume preserving for this test to mean anything"
    expected = standard_normal_logprob(z) + logdet
    logpx = _per_sample(model, x, None)
    torch.testing.assert_close(logpx, expected, atol=1e-6, rtol=1e-6)
    # Batched solves agree with per-sample ones up to the solver tolerance.
    with torch.no_grad():
        torch.testing.assert_close(model(x, tol=TIGHT).logpx, logpx, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("head,dim", [("ccnf", 2), ("infocnf", 3)])
def test_conditional_logpx_is_class_prior_plus_logdet(float64, head, dim):
    torch.manual_seed(1)
    model = _exact_mlp(head, dim, num_classes=3)
    _perturb_dynamics(model, 0.5)
    _perturb_prior(model, 0.7)
    x = torch.randn(3, dim)
    y = torch.tensor([0, 1, 2])
    logdet, z = _logabsdet_jacobian(model, x, y)
    # Independent class prior: z_y ~ N(mu(y), sigma(y)^2) from q_phi, z_u ~ N(0, I) (Eq. 5).
    sup = model.head.sup_dim
    assert sup == (dim if head == "ccnf" else round(dim / 2))
    enc = torch.nn.functional.one_hot(y, 3).to(z) @ model.head.condition.weight.T + model.head.condition.bias
    mean, log_std = enc[:, :sup], enc[:, sup:]
    assert log_std.abs().max() > 0.1, "the class prior must be non-trivial"
    log_prior = Normal(mean, log_std.exp()).log_prob(z[:, :sup]).sum(1) + Normal(0.0, 1.0).log_prob(z[:, sup:]).sum(1)
    torch.testing.assert_close(model.head.log_prior(z, y), log_prior.detach())
    expected = log_prior.detach() + logdet
    torch.testing.assert_close(_per_sample(model, x, y), expected, atol=1e-6, rtol=1e-6)


def test_logit_transform_logpx_matches_whole_map_jacobian(float64):
    torch.manual_seed(2)
    model = _exact_mlp("cnf", 2, logit_alpha=0.05)
    _perturb_dynamics(model, 0.5)
    x = torch.rand(4, 2) * 0.9 + 0.05
    logdet, z = _logabsdet_jacobian(model, x, None)
    expected = standard_normal_logprob(z) + logdet
    torch.testing.assert_close(_per_sample(model, x, None), expected, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------- Hutchinson


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_for_the_exact_divergence(float64, kind):
    torch.manual_seed(3)
    dim, draws = 4, 20000
    net = mlp_net(dim, hidden=16, num_layers=3)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.0)
    t = torch.tensor(0.3)
    point = torch.randn(1, dim)

    z = point.clone().requires_grad_(True)
    exact = exact_divergence(net(t, z), z, create_graph=False)
    jac = torch.autograd.functional.jacobian(lambda v: net(t, v), point).reshape(dim, dim)
    torch.testing.assert_close(exact, torch.trace(jac).reshape(1))

    zs = point.expand(draws, dim).clone().requires_grad_(True)
    noise = sample_noise(zs, kind, torch.Generator().manual_seed(4))
    if kind == "rademacher":
        assert set(noise.unique().tolist()) == {-1.0, 1.0}
    # E[e e^T] = I is what makes the estimator unbiased.
    torch.testing.assert_close(noise.T @ noise / draws, torch.eye(dim), atol=0.05, rtol=0)
    div, e_dfdz = hutchinson_divergence(net(t, zs), zs, noise, create_graph=False)
    assert div.shape == (draws,) and e_dfdz.shape == (draws, dim)
    torch.testing.assert_close(e_dfdz, noise @ jac)
    std = div.std()
    assert std > 1e-3, "the estimator must be noisy here, otherwise the test proves nothing"
    assert abs(div.mean() - exact[0]) < 5 * std / math.sqrt(draws)


def test_hutchinson_flow_logpx_is_unbiased(float64):
    """With the noise drawn per sample, the mean over copies of x of log p(x) is the exact one."""
    torch.manual_seed(5)
    copies = 2000
    exact = _exact_mlp("cnf", 2)
    _perturb_dynamics(exact, 0.5)
    hutch = _exact_mlp("cnf", 2, divergence="hutchinson")
    hutch.load_state_dict(exact.state_dict())
    x = torch.randn(1, 2)
    with torch.no_grad():
        target = exact(x, tol=1e-6).logpx[0]
        est = hutch(x.expand(copies, 2), tol=1e-6, generator=torch.Generator().manual_seed(6)).logpx
    std = est.std()
    assert std > 1e-3
    assert abs(est.mean() - target) < 5 * std / math.sqrt(copies) + 1e-5


# ---------------------------------------------------------------------------- normalisation (Fig. 2a)


def _grid_integral(logp: torch.Tensor, dx: float) -> float:
    return float(logp.exp().sum() * dx)


@pytest.fixture
def grid(float64):
    lo, hi, n = -20.0, 20.0, 4001
    x = torch.linspace(lo, hi, n).reshape(n, 1)
    return x, (hi - lo) / (n - 1)


def test_1d_cnf_density_integrates_to_one(grid):
    x, dx = grid
    torch.manual_seed(7)
    model = _exact_mlp("cnf", 1)
    _perturb_dynamics(model, 0.8)
    with torch.no_grad():
        logp = model(x, tol=1e-5).logpx
    density = logp.exp()
    # The density must be far from the standard normal for the check to test the log-det.
    assert (density - standard_normal_logprob(x).exp()).abs().max() > 0.02
    assert abs(_grid_integral(logp, dx) - 1.0) < 1e-3


def test_1d_infocnf_marginal_and_conditionals_integrate_to_one(grid):
    x, dx = grid
    torch.manual_seed(8)
    model = _exact_mlp("infocnf", 1, num_classes=3)
    _perturb_dynamics(model, 0.8)
    _perturb_prior(model, 1.0)
    model.eval()
    with torch.no_grad():
        outs = [model(x, torch.full((x.shape[0],), k), tol=1e-5) for k in range(3)]
    conditionals = [o.logpx for o in outs]
    for logp in conditionals:
        assert abs(_grid_integral(logp, dx) - 1.0) < 1e-3
    assert (conditionals[0] - conditionals[1]).abs().max() > 0.1, "class densities must differ"
    assert abs(_grid_integral(outs[0].marginal_logpx, dx) - 1.0) < 1e-3
