"""The classical problems' right-hand sides (flows.ivp) against what does not depend on them:
quantities an exact solution conserves, Jacobians written out by hand, and known properties of
the solutions (the Van der Pol limit cycle, the Lorenz equilibria). A typo that keeps a solution
bounded (a wrong sign, a wrong power, a swapped coordinate) breaks one of these."""

from __future__ import annotations

import math

import pytest
import torch

from flows.ivp import (
    ARENSTORF_MU,
    FAMILIES,
    LORENZ_BETA,
    LORENZ_BOX,
    LORENZ_RHO,
    LORENZ_SIGMA,
    Instance,
    IVPDynamics,
    draw_instance,
)
from flows.ode import solve


def _solve(family: str, param: float, y0: torch.Tensor, t_end: float, points: int = 2) -> torch.Tensor:
    """The states at ``points`` equally spaced times of an accurate solve (dopri8 at 1e-12); the step
    cap, far above what these problems need, stops a solve that a wrong field sends astray."""
    instance = Instance(family, param, y0)
    func = IVPDynamics(instance)
    t = torch.linspace(0.0, t_end, points, dtype=torch.float64)
    with torch.no_grad():
        (ys,) = solve(func, (y0,), t, func.counter, tol=1e-12, method="dopri8", max_num_steps=5000)
    return ys


def _params(family: str, count: int = 3) -> list[Instance]:
    generator = torch.Generator().manual_seed(11)
    return [draw_instance(family, generator) for _ in range(count)]


def _jacobian(family: str, y: torch.Tensor, param: float) -> torch.Tensor:
    rhs = FAMILIES[family].rhs
    return torch.autograd.functional.jacobian(
        lambda v: rhs(torch.tensor(0.0), v, torch.tensor(param, dtype=torch.float64)), y)


def _random_states(dim: int, scale: float = 2.0, count: int = 5) -> torch.Tensor:
    return (torch.rand(count, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(dim)) - 0.5) * scale


# ---------------------------------------------------------------------------- Kepler
def kepler_energy(y: torch.Tensor) -> torch.Tensor:
    x, yy, vx, vy = y.unbind(-1)
    return 0.5 * (vx ** 2 + vy ** 2) - 1.0 / torch.sqrt(x ** 2 + yy ** 2)


def kepler_momentum(y: torch.Tensor) -> torch.Tensor:
    x, yy, vx, vy = y.unbind(-1)
    return x * vy - yy * vx


def test_kepler_orbits_conserve_energy_and_angular_momentum() -> None:
    for instance in _params("kepler"):
        ys = _solve("kepler", instance.param, instance.y0, instance.t_end, points=9)
        energy, momentum = kepler_energy(ys), kepler_momentum(ys)
        assert float((energy - energy[0]).abs().max()) < 1e-6, instance.param
        assert float((momentum - momentum[0]).abs().max()) < 1e-6, instance.param
        # semi-major axis 1: energy -1/2; angular momentum sqrt(1 - e^2)
        assert float(energy[0]) == pytest.approx(-0.5, rel=1e-12)
        assert float(momentum[0]) == pytest.approx(math.sqrt(1 - instance.param ** 2), rel=1e-12)


def test_a_kepler_orbit_closes_after_one_period() -> None:
    for instance in _params("kepler", 2):
        ys = _solve("kepler", instance.param, instance.y0, 2 * math.pi)
        assert float((ys[-1] - instance.y0).abs().max()) < 1e-6


# ---------------------------------------------------------------------------- Arenstorf
def jacobi_constant(y: torch.Tensor) -> torch.Tensor:
    """The restricted three-body problem's integral in the rotating frame: Earth (mass 1 - mu)
    at (-mu, 0), Moon (mass mu) at (1 - mu, 0)."""
    x, yy, vx, vy = y.unbind(-1)
    mu = ARENSTORF_MU
    r1 = torch.sqrt((x + mu) ** 2 + yy ** 2)
    r2 = torch.sqrt((x - 1 + mu) ** 2 + yy ** 2)
    return 0.5 * (vx ** 2 + vy ** 2) - 0.5 * (x ** 2 + yy ** 2) - (1 - mu) / r1 - mu / r2


def test_arenstorf_orbits_conserve_the_jacobi_constant() -> None:
    for instance in _params("arenstorf"):
        ys = _solve("arenstorf", instance.param, instance.y0, instance.t_end, points=9)
        jacobi = jacobi_constant(ys)
        assert float((jacobi - jacobi[0]).abs().max()) < 1e-7, instance.param


def test_arenstorf_jacobian_is_the_hand_derived_one() -> None:
    mu, nu = ARENSTORF_MU, 1 - ARENSTORF_MU
    for state in _random_states(4, 1.5) + torch.tensor([0.3, 0.4, 0.0, 0.0], dtype=torch.float64):
        x, yy, _, _ = state.tolist()
        r1, r2 = math.hypot(x + mu, yy), math.hypot(x - nu, yy)
        # the potential's second derivatives, term by term
        uxx = 1 - nu * (1 / r1 ** 3 - 3 * (x + mu) ** 2 / r1 ** 5) - mu * (1 / r2 ** 3 - 3 * (x - nu) ** 2 / r2 ** 5)
        uyy = 1 - nu * (1 / r1 ** 3 - 3 * yy ** 2 / r1 ** 5) - mu * (1 / r2 ** 3 - 3 * yy ** 2 / r2 ** 5)
        uxy = 3 * nu * (x + mu) * yy / r1 ** 5 + 3 * mu * (x - nu) * yy / r2 ** 5
        expected = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 1], [uxx, uxy, 0, 2], [uxy, uyy, -2, 0]], dtype=torch.float64)
        torch.testing.assert_close(_jacobian("arenstorf", state, 0.0), expected, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------- Van der Pol
def test_van_der_pol_field_is_the_hand_written_one() -> None:
    """x'' = mu (1 - x^2) x' - x, written as a first-order system and its Jacobian."""
    for mu in (0.5, 3.0, 10.0):
        for state in _random_states(2, 6.0):
            x, v = state.tolist()
            dy = FAMILIES["vdp"].rhs(torch.tensor(0.0), state, torch.tensor(mu, dtype=torch.float64))
            assert dy.tolist() == pytest.approx([v, mu * v - mu * x * x * v - x], rel=1e-12)
            expected = torch.tensor([[0.0, 1.0], [-2 * mu * x * v - 1, mu * (1 - x * x)]], dtype=torch.float64)
            torch.testing.assert_close(_jacobian("vdp", state, mu), expected, rtol=1e-12, atol=1e-12)


def test_van_der_pol_at_mu_one_runs_on_its_known_limit_cycle() -> None:
    """From (2, 0) the mu = 1 oscillator stays near its limit cycle: amplitude 2.0086, period
    6.6633 (the literature's values), read off an accurate solve of 12 time units."""
    mu = 1.0
    y0 = FAMILIES["vdp"].start(torch.tensor(mu, dtype=torch.float64), None)
    ys = _solve("vdp", mu, y0, 12.0, points=12001)
    x = ys[:, 0]
    assert float(x.abs().max()) == pytest.approx(2.0086, abs=2e-3)
    down = [i for i in range(1, len(x)) if x[i - 1] > 0 >= x[i]]  # downward zero crossings
    period = (down[1] - down[0]) * 12.0 / 12000
    assert period == pytest.approx(6.6633, abs=2e-3)


# ---------------------------------------------------------------------------- Lorenz
def test_lorenz_field_and_jacobian_are_the_hand_written_ones() -> None:
    s, r, b = LORENZ_SIGMA, LORENZ_RHO, LORENZ_BETA
    assert (s, r, b) == (10.0, 28.0, 8.0 / 3.0)
    for state in _random_states(3, 40.0):
        x, y, z = state.tolist()
        dy = FAMILIES["lorenz"].rhs(torch.tensor(0.0), state, torch.tensor(x, dtype=torch.float64))
        assert dy.tolist() == pytest.approx([s * y - s * x, r * x - x * z - y, x * y - b * z], rel=1e-12, abs=1e-12)
        expected = torch.tensor([[-s, s, 0.0], [r - z, -1.0, -x], [y, x, -b]], dtype=torch.float64)
        torch.testing.assert_close(_jacobian("lorenz", state, x), expected, rtol=1e-12, atol=1e-12)


def test_lorenz_equilibria_are_fixed_points() -> None:
    c = math.sqrt(LORENZ_BETA * (LORENZ_RHO - 1))
    for point in ([0.0, 0.0, 0.0], [c, c, LORENZ_RHO - 1], [-c, -c, LORENZ_RHO - 1]):
        state = torch.tensor(point, dtype=torch.float64)
        dy = FAMILIES["lorenz"].rhs(torch.tensor(0.0), state, state[0])
        assert float(dy.abs().max()) < 1e-12


def test_lorenz_initial_states_are_the_parameter_and_a_draw_in_the_box() -> None:
    for instance in _params("lorenz", 20):
        assert float(instance.y0[0]) == instance.param
        for value, (low, high) in zip(instance.y0.tolist(), LORENZ_BOX, strict=True):
            assert low <= value <= high


# ---------------------------------------------------------------------------- every family
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_parameters_are_drawn_uniformly_from_the_familys_range(family: str) -> None:
    fam = FAMILIES[family]
    params = [i.param for i in _params(family, 200)]
    low, high = fam.param_range
    assert all(low <= p <= high for p in params)
    # uniform: each quarter of the range holds about a quarter of the draws
    quarters = [sum(low + q * (high - low) / 4 <= p < low + (q + 1) * (high - low) / 4 for p in params)
                for q in range(4)]
    assert min(quarters) > 30, quarters
    assert all(i.y0.shape == (fam.dim,) and i.y0.dtype == torch.float64 for i in _params(family))
