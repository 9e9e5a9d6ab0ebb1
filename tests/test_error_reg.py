"""The solver-error regularizer (Pal et al. 2021): a dopri5 probe step per block in training.

The probe's embedded error estimate is checked against an independent Runge-Kutta loop and
against torchdiffeq's own step acceptance; the option costs nothing when off; with it on the
NFE counts hold exactly the probe's evaluations more (against an independent count of the
dynamics network's calls); the gradient reaches the network and a step against it lowers the
penalty.
"""

from __future__ import annotations

import pytest
import torch
from flowkit import DIGITS_ID, TINY, count_net_calls, digits_flow, perturb
from torchdiffeq import odeint

from flows import build_model
from flows.error_reg import DOPRI5_B, dopri5_probe, error_penalty
from infocnf_env.checkpoint import NON_WEIGHT_OPTIONS, spec_differences

# Dormand & Prince (1980), as printed in Hairer, Norsett & Wanner, Solving ODEs I, Table 5.2,
# with Shampine's (1986) 4th-order embedding B4, the one torchdiffeq's dopri5 uses (Dormand and
# Prince's own is B4_DP); written out again here so that the module's copy is checked, not reused.
A = [
    [],
    [1 / 5],
    [3 / 40, 9 / 40],
    [44 / 45, -56 / 15, 32 / 9],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
    [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84],
]
B5 = [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0]
B4 = [1951 / 21600, 0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60]
B4_DP = [5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40]


def rk_solutions(matrix: torch.Tensor, z0: torch.Tensor, h: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5th- and 4th-order solutions of one step of dz/dt = z M^T, stage by stage."""
    ks: list[torch.Tensor] = []
    for row in A:
        y = z0 + h * sum((a * k for a, k in zip(row, ks, strict=False)), torch.zeros_like(z0))
        ks.append(y @ matrix.T)
    y5 = z0 + h * sum(b * k for b, k in zip(B5, ks, strict=True))
    y4 = z0 + h * sum(b * k for b, k in zip(B4, ks, strict=True))
    return y5, y4


def linear_problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    matrix = torch.randn(4, 4, generator=g, dtype=torch.float64)
    z0 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    return matrix, z0


def test_the_tableau_is_consistent():
    assert sum(B5) == pytest.approx(1) and sum(B4) == pytest.approx(1) and sum(B4_DP) == pytest.approx(1)
    assert list(DOPRI5_B) == pytest.approx(B5)
    for i, row in enumerate(A[1:], start=1):  # row sums are the nodes of torchdiffeq's dopri5
        assert sum(row) == pytest.approx([1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1][i - 1])


@pytest.mark.parametrize("h", [0.5, 0.1])
def test_probe_error_is_the_difference_of_the_embedded_solutions(h):
    matrix, z0 = linear_problem()
    probe = dopri5_probe(lambda t, z: z @ matrix.T, torch.tensor(0.0, dtype=torch.float64), z0,
                         torch.tensor(h, dtype=torch.float64))
    y5, y4 = rk_solutions(matrix, z0, h)
    assert probe.evaluations == 7
    torch.testing.assert_close(probe.solution, y5, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(probe.error, y5 - y4, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(error_penalty(probe.error), (y5 - y4).pow(2).mean(1))


def test_probe_error_estimates_the_error_of_the_4th_order_solution():
    """Against the exact solution expm(h A) z0: y5 has local error O(h^6), y4 = y5 - err O(h^5), so
    err is the 4th-order solution's error to leading order and shrinks like h^5."""
    matrix, z0 = linear_problem(1)
    f = lambda t, z: z @ matrix.T  # noqa: E731
    t0 = torch.tensor(0.0, dtype=torch.float64)
    errors, errors5 = [], []
    for h in (0.05, 0.025):
        probe = dopri5_probe(f, t0, z0, torch.tensor(h, dtype=torch.float64))
        exact = z0 @ torch.linalg.matrix_exp(h * matrix).T
        y4 = probe.solution - probe.error
        assert float((probe.error - (exact - y4)).norm() / probe.error.norm()) < 0.1
        errors.append(float(probe.error.norm()))
        errors5.append(float((probe.solution - exact).norm()))
    assert errors[0] / errors[1] == pytest.approx(2**5, rel=0.05)
    assert errors5[0] / errors5[1] == pytest.approx(2**6, rel=0.1)


def test_time_dependent_dynamics_are_evaluated_at_the_nodes():
    # dz/dt = cos(t) z: the probe's 5th-order solution is torchdiffeq's one dopri5 step.
    z0 = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    f = lambda t, z: torch.cos(t) * z  # noqa: E731
    t0, h = torch.tensor(0.3, dtype=torch.float64), 0.4
    probe = dopri5_probe(f, t0, z0, torch.tensor(h, dtype=torch.float64))
    one_step = odeint(f, z0, torch.stack([t0, t0 + h]), method="dopri5", rtol=1e3, atol=1e3,
                      options=dict(first_step=h))[-1]
    torch.testing.assert_close(probe.solution, one_step, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("ratio, accepted", [(0.8, True), (1.25, False)])
def test_probe_error_is_the_one_torchdiffeq_accepts_steps_by(ratio, accepted):
    """torchdiffeq accepts a step when the RMS of err / (atol + rtol max(|y0|, |y1|)) is at most 1:
    with atol = rtol = tol set so that the probe's ratio is ``ratio``, a solve whose first step is
    the probe's accepts it (one step: 7 evaluations, no initial-step heuristic) or rejects it."""
    matrix, z0 = linear_problem(2)
    calls = {"n": 0}

    def f(t, z):
        calls["n"] += 1
        return z @ matrix.T

    t0, h = torch.tensor(0.0, dtype=torch.float64), 0.3
    probe = dopri5_probe(f, t0, z0, torch.tensor(h, dtype=torch.float64))
    scale = 1 + torch.maximum(z0.abs(), probe.solution.abs())
    tol = float((probe.error / scale).pow(2).mean().sqrt()) / ratio  # RMS of err / (tol * scale) = ratio
    calls["n"] = 0
    odeint(f, z0, torch.stack([t0, t0 + h]), method="dopri5", rtol=tol, atol=tol, options=dict(first_step=h))
    assert (calls["n"] == 7) == accepted


# ---------------------------------------------------------------------------- in the flows



def counted_model(error_weight: float, **options):
    """A digits flow with perturbed dynamics and a count of its networks' calls, apart from its NFE counters."""
    model = digits_flow(error_weight=error_weight, **options)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for block in model.blocks:
            for p in block.net.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model, count_net_calls(model)


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, 1, 8, 8, generator=g) * 0.9 + 0.05, torch.randint(0, 10, (16,), generator=g)


def forward(model, batch, tol=1e-4):
    x, y = batch
    return model(x, y, tol=tol, generator=torch.Generator().manual_seed(0))


def test_off_by_default_and_free():
    model, calls = counted_model(0.0)
    assert not any(b.error_probe for b in model.blocks)
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    out = forward(model, (x, y))
    assert out.error_regularization is None
    assert out.nfe_forward == calls["n"]
    assert "error_weight" in NON_WEIGHT_OPTIONS
    on, _ = counted_model(0.5)
    assert spec_differences(on.spec, model.spec) == ""  # the weights load either way
    with pytest.raises(ValueError, match="error_weight"):
        build_model("cnf", (2,), arch="mlp", error_weight=-1.0)


def test_nfe_holds_exactly_the_probe_evaluations_and_the_loss_the_penalty(batch):
    off, _ = counted_model(0.0)
    on, calls = counted_model(0.5)
    plain = forward(off, batch)
    calls["n"] = 0
    out = forward(on, batch)
    assert out.nfe_forward == calls["n"]
    probes = 7 * on.num_blocks
    assert out.nfe_forward == plain.nfe_forward + probes  # the same solves, plus the probes
    assert [s.nfe for s in out.stats] == [s.nfe + 7 for s in plain.stats]
    torch.testing.assert_close(out.logpx, plain.logpx)
    penalty = out.error_regularization
    assert penalty is not None and penalty.shape == (batch[0].shape[0],) and (penalty > 0).all()
    torch.testing.assert_close(out.loss, plain.loss + 0.5 * penalty.mean())

    # backward: the probe's evaluations are back-propagated through as well
    plain.loss.backward()
    out.loss.backward()
    assert out.nfe_backward == plain.nfe_backward + probes


def test_penalty_is_the_sum_of_the_blocks_probes(batch):
    model, _ = counted_model(1.0)
    x, y = batch
    state = model.start(x, y, generator=torch.Generator().manual_seed(0))
    expected = torch.zeros(x.shape[0])
    for _ in range(model.num_blocks):
        block = model.ops[state.position]
        with torch.no_grad():
            h = block.end_time
            expected += error_penalty(dopri5_probe(block.net, h.new_zeros(()), state.z, h).error)
        state, _ = model.advance(state, 1e-4)
    out = model.finish(state)
    torch.testing.assert_close(out.error_regularization.detach(), expected)


def test_no_probe_in_evaluation_or_sampling(batch):
    model, calls = counted_model(1.0)
    model.eval()
    with torch.no_grad():
        out = forward(model, batch)
        assert out.error_regularization is None and out.nfe_forward == calls["n"]
        calls["n"] = 0
        model.sample(torch.arange(3), tol=1e-3)
    # in the reverse solves nothing is added either: the count matches the solver's own
    assert calls["n"] > 0


def test_gradient_reaches_every_dynamics_parameter_through_the_penalty(batch):
    model, _ = counted_model(1.0)
    out = forward(model, batch)
    out.error_regularization.mean().backward()
    for block in model.blocks:
        grads = [p.grad for p in block.net.parameters()]
        assert all(g is not None for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0


def test_combines_with_the_rnode_regularizers_and_warm_start(batch):
    model, calls = counted_model(0.5, kinetic_weight=0.1, jacobian_weight=0.1, warm_start=True)
    for _ in range(2):
        calls["n"] = 0
        out = forward(model, batch)
        assert out.nfe_forward == calls["n"]
        assert (out.regularization > 0).all() and out.error_regularization is not None
        reg = out.regularization.mean(0)
        expected = out.bits_per_dim + out.xent + 0.1 * reg[0] + 0.1 * reg[1] + 0.5 * out.error_regularization.mean()
        torch.testing.assert_close(out.loss, expected)


def test_a_small_step_down_the_penalty_gradient_lowers_the_penalty(float64):
    """What training with the penalty does, one step at a time: the gradient the loss gets from
    ``error_weight x penalty`` is the penalty's own, so a step of size eps against it lowers the
    penalty by eps ||g||^2 to first order (here a 1% step; Armijo's condition with c = 1/2),
    and the step along it raises it. What this buys in NFE over a whole training run is a
    measured figure of the ``speed`` study (``runs/studies/speed.py``, the ``error_reg`` arm),
    not asserted here: on a toy problem it depends on the seed."""
    torch.manual_seed(0)
    model = build_model("cnf", (2,), arch="mlp", logit_alpha=None, num_levels=None, hidden=16, num_layers=3,
                        num_blocks=1, error_weight=1.0)
    perturb(model.blocks[0].net, 0.5)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    params = list(model.blocks[0].net.parameters())

    def penalty() -> torch.Tensor:
        out = model(x, tol=1e-4, generator=torch.Generator().manual_seed(0))
        return out.error_regularization.mean()

    value = penalty()
    grads = torch.autograd.grad(value, params)
    value, norm2 = float(value.detach()), sum(float(g.pow(2).sum()) for g in grads)
    assert value > 0 and norm2 > 0
    eps = 0.01 * value / norm2
    moved = {}
    for sign in (-1, 1):
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.add_(sign * eps * g)
            moved[sign] = float(penalty())
            for p, g in zip(params, grads, strict=True):
                p.sub_(sign * eps * g)
    assert moved[-1] <= value - 0.5 * eps * norm2
    assert moved[1] >= value + 0.5 * eps * norm2


def test_env_steps_report_the_probe_evaluations():
    import gymnasium as gym
    import numpy as np

    import infocnf_env  # noqa: F401  (registers the ids)

    def first_episode(error_weight: float) -> list[int]:
        env = gym.make(DIGITS_ID, **TINY, error_weight=error_weight)
        env.reset(seed=0)
        nfe, done = [], False
        while not done:
            _, _, terminated, truncated, info = env.step(np.array([-4.0], dtype=np.float32))
            nfe.append(info["nfe"])
            done = terminated or truncated
        return nfe

    off, on = first_episode(0.0), first_episode(1e6)
    assert on == [n + 7 for n in off]  # the same weights and batch: the same solves, plus the probes
