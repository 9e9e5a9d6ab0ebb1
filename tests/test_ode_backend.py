"""ODE backends behind ``flows.ode.solve``, and the torchdiffeq internals the project relies on.

torchode is a dependency; its tests still skip where it is missing. A backend is
kept only if it gives the same log-density within the tolerance and exact NFE (forward NFE equal
to an independent count of the dynamics network's calls, backward NFE equal to torchdiffeq's).
"""

from __future__ import annotations

import math

import pytest
import torch
from flowkit import DIGITS, count_net_calls, digits_batch, digits_flow
from torch import nn

from flows import SolverError, build_model
from flows.cnf_block import CNFBlock
from flows.nets import mlp_net
from flows.ode import BACKENDS, NFECounter, check_backend, check_backend_options, solve


def test_torchdiffeq_private_names_are_where_flows_ode_imports_them():
    """flows/ode.py imports torchdiffeq's solver registry and adaptive base class (not public API)."""
    hint = "torchdiffeq moved a private name that flows/ode.py imports; update the imports at its top"
    try:
        from torchdiffeq._impl.odeint import SOLVERS
        from torchdiffeq._impl.solvers import AdaptiveStepsizeODESolver
    except ImportError as err:
        pytest.fail(f"{hint}: {err}")
    assert isinstance(SOLVERS, dict) and "dopri5" in SOLVERS, f"{hint}: SOLVERS is no name -> class registry"
    adaptive = [name for name, cls in SOLVERS.items() if issubclass(cls, AdaptiveStepsizeODESolver)]
    assert "dopri5" in adaptive, f"{hint}: dopri5 is no AdaptiveStepsizeODESolver"
    for name in adaptive:
        assert isinstance(getattr(SOLVERS[name], "order", None), int), f"{hint}: {name} has no integer `order`"
    assert not issubclass(SOLVERS["euler"], AdaptiveStepsizeODESolver), f"{hint}: euler counts as adaptive"


class _Linear(torch.nn.Module):
    def __init__(self, counter: NFECounter):
        super().__init__()
        self.counter = counter

    def forward(self, t, states):
        out = (-states[0], states[0].sum(1))
        self.counter.record_call(out[0])
        return out


def test_unknown_backend_lists_the_valid_ones():
    counter = NFECounter()
    with pytest.raises(ValueError, match="valid backends: torchdiffeq, torchode, torchode-pi, scipy"):
        solve(_Linear(counter), (torch.ones(2, 3), torch.zeros(2)), torch.tensor([0.0, 1.0]), counter,
              tol=1e-5, backend="jax")
    with pytest.raises(ValueError, match="unknown ODE backend"):
        check_backend("compile")
    with pytest.raises(ValueError, match="unknown ODE backend"):
        CNFBlock(mlp_net(2, 4), backend="nope")
    with pytest.raises(ValueError, match="unknown ODE backend"):
        build_model("cnf", (1, 8, 8), solver_backend="nope", **DIGITS)
    assert list(BACKENDS) == ["torchdiffeq", "torchode", "torchode-pi", "scipy"]


def test_a_checkpoint_loads_under_another_backend():
    from infocnf_env.checkpoint import spec_differences

    specs = [build_model("cnf", (1, 8, 8), solver_backend=b, **DIGITS).spec for b in ("torchdiffeq", "torchode")]
    assert specs[0]["config"]["solver_backend"] == "torchdiffeq"
    assert spec_differences({"model": specs[1]}, {"model": specs[0]}) == ""


# ---------------------------------------------------------------------------- torchode
@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return digits_batch()


def digits(backend: str, **options) -> tuple[torch.nn.Module, dict[str, int]]:
    model = digits_flow(solver_backend=backend, **options)
    return model, count_net_calls(model)


def training_pass(model, batch, tol: float):
    x, y = batch
    torch.manual_seed(1)  # dropout
    out = model(x, y, tol=tol, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    return out


@pytest.mark.parametrize("tol", [1e-5, 1e-3])
def test_torchode_same_density_gradient_and_exact_nfe(batch, tol):
    pytest.importorskip("torchode")
    results = {}
    for backend in ("torchdiffeq", "torchode"):
        model, calls = digits(backend, train_time=True)  # the gradient reaches the end times too
        out = training_pass(model, batch, tol)
        assert out.nfe_forward == calls["n"] == sum(s.nfe for s in out.stats)
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results[backend] = out, grads
    (ref, ref_grad), (out, grad) = results["torchdiffeq"], results["torchode"]
    # the same Dormand-Prince steps with torchdiffeq's error norm and step control, so the same NFE here
    # (not guaranteed in general: the initial-step heuristics differ a little, and torchode cuts the
    # last step at the end time where torchdiffeq steps past it and interpolates)
    assert [s.nfe for s in out.stats] == [s.nfe for s in ref.stats]
    assert out.nfe_backward == ref.nfe_backward > 0
    torch.testing.assert_close(out.logpx, ref.logpx, rtol=10 * tol, atol=0)
    assert abs(float(out.bits_per_dim.detach()) - float(ref.bits_per_dim.detach())) < 10 * tol
    torch.testing.assert_close(grad, ref_grad, rtol=1e-3, atol=1e-3 * float(ref_grad.abs().max()))


def test_torchode_sampling_warm_start_and_options(batch):
    pytest.importorskip("torchode")
    x, y = batch
    ref, _ = digits("torchdiffeq", warm_start=True)
    model, calls = digits("torchode", warm_start=True)
    with torch.no_grad():  # the reverse direction (latent to data)
        z = torch.randn(4, 64, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(model.decode(z, tol=1e-5), ref.decode(z, tol=1e-5), rtol=1e-3, atol=1e-4)
    for m in (ref, model):  # the accepted step is recorded the same way, so warm starts match
        training_pass(m, batch, 1e-5)
    # the same accepted steps up to the initial-step heuristic (torchode's exponent is 1/5, torchdiffeq's 1/4)
    for mine, theirs in zip(model.blocks, ref.blocks, strict=True):
        assert mine.last_step[1] == theirs.last_step[1] == 1e-5
        assert mine.last_step[0] == pytest.approx(theirs.last_step[0], rel=0.1)
    calls["n"] = 0
    warm, warm_ref = training_pass(model, batch, 1e-5), training_pass(ref, batch, 1e-5)
    assert warm.nfe_forward == calls["n"] == warm_ref.nfe_forward
    with pytest.raises(SolverError, match="max steps"):
        digits("torchode", max_num_steps=2)[0](x, y, tol=1e-5)
    with pytest.raises(ValueError, match="adjoint"):  # refused when the flow is built
        digits("torchode", adjoint=True)
    with pytest.raises(ValueError, match="supports methods dopri5"):
        digits("torchode", solver="bosh3")
    counter = NFECounter()
    with pytest.raises(ValueError, match="adjoint"):  # and by solve itself
        solve(_Linear(counter), (torch.ones(2, 3), torch.zeros(2)), torch.tensor([0.0, 1.0]), counter,
              tol=1e-5, adjoint=True, backend="torchode")
    with pytest.raises(ValueError, match="backend 'torchode-pi' supports methods dopri5"):  # names the one asked for
        check_backend_options("torchode-pi", "bosh3", adjoint=False)


def test_torchode_missing_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchode", None)  # import torchode raises ImportError
    counter = NFECounter()
    with pytest.raises(ImportError, match=r"pip install 'torchode"):
        solve(_Linear(counter), (torch.ones(2, 3), torch.zeros(2)), torch.tensor([0.0, 1.0]), counter,
              tol=1e-5, backend="torchode")


class _Relaxation(nn.Module):
    """y' = -lam (y - cos t): for large lam the step is limited by stability, not accuracy, where an
    integral step-size controller oscillates (and rejects steps) and a PI controller does not."""

    def __init__(self, lam: float):
        super().__init__()
        self.lam, self.calls, self.accepted = lam, 0, 0

    def forward(self, t, state):
        (y,) = state
        self.calls += 1
        return (-self.lam * (y - torch.cos(t)),)

    def callback_accept_step(self, t0, y0, dt):
        self.accepted += 1


def test_the_pi_controller_stops_the_rejections_of_a_stability_limited_solve():
    pytest.importorskip("torchode")
    rejected, final = {}, {}
    for backend in ("torchode", "torchode-pi"):
        func = _Relaxation(200.0)
        (ys,) = solve(func, (torch.ones(1, 1, dtype=torch.float64),), torch.tensor([0.0, 3.0], dtype=torch.float64),
                      NFECounter(), tol=1e-3, backend=backend, max_num_steps=100_000)
        # Dormand-Prince: 6 new evaluations per attempted step (FSAL), plus the initial-step heuristic's
        rejected[backend] = (func.calls - 2) // 6 - func.accepted
        final[backend] = float(ys[-1, 0, 0])
    assert rejected["torchode"] > 20 and rejected["torchode-pi"] <= rejected["torchode"] // 10
    # near the slow manifold y = cos t + sin t / lam (up to O(1 / lam^2)) either way
    expected = math.cos(3.0) + math.sin(3.0) / 200.0
    assert final["torchode-pi"] == pytest.approx(expected, abs=1e-3)
    assert final["torchode"] == pytest.approx(expected, abs=1e-3)
    with pytest.raises(ValueError, match="adjoint"):
        solve(_Relaxation(1.0), (torch.ones(1, 1),), torch.tensor([0.0, 1.0]), NFECounter(), tol=1e-3,
              adjoint=True, backend="torchode-pi")
