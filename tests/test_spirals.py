"""Spiral data (App. E.1), the (partitioned) LatentODE (Sec. 4.6, App. E.2) and the spirals study."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from flows.latent_ode import LatentODE, evaluate_latent_ode
from flows.ode import BlockStats, SolverError
from flows.spirals import T_SPAN, T_START, make_spirals


@pytest.fixture(scope="module")
def data():
    return make_spirals(40, window=50, extrap=20, seed=3)


def _model(data, partitioned: bool, seed: int = 0, **kwargs) -> LatentODE:
    torch.manual_seed(seed)
    return LatentODE(data.times, partitioned=partitioned, **kwargs)


# ---------------------------------------------------------------------- data
def test_clean_curve_matches_equations(data):
    grid = np.linspace(T_START, T_START + T_SPAN, 1000)
    for i in range(len(data)):
        a, b, direction = data.params[i].double().tolist()
        s = grid[int(data.starts[i]) + np.arange(70)]
        if direction == 1:  # Eq. 9, angle t = s
            t = s
            radius, centre = a + b * t, 5.0
        else:  # Eq. 8, angle running backwards so that the spiral turns clockwise
            t = 2 * T_START + T_SPAN - s
            radius, centre = a + b * 50.0 / t, -5.0
        expected = np.stack([radius * np.cos(t) + centre, radius * np.sin(t)], axis=1)
        got = torch.cat([data.clean[i], data.extrap[i]]).double().numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-5)


def test_radius_direction_and_centres():
    data = make_spirals(20, seed=1)
    for i in range(len(data)):
        direction = int(data.params[i, 2])
        rel = data.clean[i].double() - torch.tensor([5.0 if direction == 1 else -5.0, 0.0], dtype=torch.float64)
        radius = rel.norm(dim=1)
        angle = torch.from_numpy(np.unwrap(torch.atan2(rel[:, 1], rel[:, 0]).numpy()))
        turn = rel[:-1, 0] * rel[1:, 1] - rel[:-1, 1] * rel[1:, 0]
        # about the centre (+5, 0) or (-5, 0) the curve turns monotonically, so the centre is right
        if direction == 1:  # counter-clockwise: the angle grows in time and the radius with it
            assert (turn > 0).all() and (angle.diff() > 0).all() and (radius.diff() > 0).all()
        else:  # clockwise: the angle shrinks in time while the radius grows, so R falls with the angle
            assert (turn < 0).all() and (angle.diff() < 0).all() and (radius.diff() > 0).all()


def test_noise_params_balance_and_grids():
    data = make_spirals(2001, seed=5)
    noise = data.obs - data.clean
    assert abs(float(noise.std()) - 0.3) < 0.005 and abs(float(noise.mean())) < 0.005
    a, b, direction = data.params.T
    assert int(direction.sum()) == 1001 and set(direction.unique().tolist()) == {0.0, 1.0}
    # 0.08 and 0.03 are standard deviations
    assert abs(float(a.mean()) - 1.0) < 0.01 and abs(float(a.std()) - 0.08) < 0.006
    assert abs(float(b.mean()) - 0.25) < 0.003 and abs(float(b.std()) - 0.03) < 0.0025
    assert data.obs.shape == (2001, 200, 2) and data.extrap.shape == (2001, 100, 2)
    assert int(data.starts.min()) >= 0 and int(data.starts.max()) <= 1000 - 300
    dt = T_SPAN / 999
    torch.testing.assert_close(data.times.diff(), torch.full((199,), dt), atol=1e-5, rtol=0)
    assert float(data.times[0]) == 0.0 and math.isclose(float(data.extrap_times[0]), 200 * dt, rel_tol=1e-6)


def test_seeded_determinism():
    first, again = make_spirals(30, seed=7), make_spirals(30, seed=7)
    for name in ("obs", "clean", "extrap", "params", "starts"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert not torch.equal(first.obs, make_spirals(30, seed=8).obs)
    assert not torch.equal(first.params, make_spirals(30, seed=7, split="test").params)
    with pytest.raises(ValueError):
        make_spirals(10, split="valid")


# ---------------------------------------------------------------------- models
@pytest.mark.parametrize("partitioned", [False, True])
def test_training_decreases_loss(data, partitioned):
    model = _model(data, partitioned)
    x, y = data.obs[:8], data.params[:8]
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    generator = torch.Generator().manual_seed(0)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            value = float(model(x, y, tol=1e-3).loss)
        model.train()
        return value

    before = eval_loss()
    for _ in range(8):
        out = model(x, y, tol=1e-2, generator=generator)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert eval_loss() < 0.8 * before


def test_block_protocol(data):
    model = _model(data, partitioned=True)
    x, y = data.obs[:8], data.params[:8]
    assert model.num_blocks == 1
    state = model.start(x, y, generator=torch.Generator().manual_seed(0))
    assert model.features(state).shape == (8, 5)
    with pytest.raises(RuntimeError):
        model.finish(state)
    state, stats = model.advance(state, tol=1e-4)
    assert isinstance(stats, BlockStats) and stats.nfe == stats.counter.forward > 0 and stats.tol == 1e-4
    with pytest.raises(RuntimeError):
        model.features(state)
    out = model.finish(state)
    assert out.loss.dim() == 0 and out.x_hat.shape == x.shape
    assert {"recon_mse", "kl", "xent", "direction_error"} <= set(out.metrics())
    out.loss.backward()
    assert out.nfe_backward > 0 and out.nfe_forward == stats.nfe
    baseline = _model(data, partitioned=False)
    metrics = baseline(x, None, tol=1e-3).metrics()
    assert {"recon_mse", "kl"} <= set(metrics) and "direction_error" not in metrics
    with pytest.raises(ValueError):
        model.start(x, None)


def test_supervised_head_sees_only_z_y(data):
    model = _model(data, partitioned=True)
    x, y = data.obs[:8], data.params[:8]
    state = model.start(x, y, generator=torch.Generator().manual_seed(0))
    z0 = state.z0.detach().requires_grad_(True)
    state, _ = model.advance(replace(state, z0=z0), tol=1e-3)
    out = model.finish(state)
    (grad,) = torch.autograd.grad(out.xent + out.ab_mse, z0)
    assert torch.all(grad[:, 3:] == 0) and grad[:, :3].abs().sum() > 0
    perturbed = z0.detach().clone()
    perturbed[:, 3:] += torch.randn(8, 2)
    assert torch.equal(model.predict(z0.detach()), model.predict(perturbed))
    mean, log_std = model.prior(y, 8)  # z_u ~ N(0, I); q_phi starts at zero
    assert torch.all(mean == 0) and torch.all(log_std == 0)


def test_nfe_grows_as_tolerance_tightens(data):
    model = _model(data, partitioned=False).eval()
    state = model.start(data.obs[:8], times=torch.linspace(0, 10, 50))  # a longer horizon
    nfe = [model.advance(state, tol)[1].nfe for tol in (1e-3, 1e-5, 1e-7)]
    assert nfe[0] < nfe[1] < nfe[2]


@pytest.mark.parametrize("tol", [0.0, -1e-3, float("nan"), float("inf"), "tight"])
def test_bad_tolerance_raises(data, tol):
    model = _model(data, partitioned=False)
    state = model.start(data.obs[:4])
    with pytest.raises(ValueError):
        model.advance(state, tol)


def test_solver_failure_raises_solver_error(data):
    model = _model(data, partitioned=False, max_num_steps=3)
    x = data.obs[:4, :2]  # torchdiffeq caps the steps between consecutive output times: use two
    with pytest.raises(SolverError):
        model.advance(model.start(x, times=torch.tensor([0.0, 10.0])), 1e-7)


def test_sample_extrapolate_and_evaluate(data):
    model = _model(data, partitioned=True).eval()
    times = torch.cat([data.times, data.extrap_times])
    samples = model.sample(data.params[:6], times, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (6, 70, 2) and torch.isfinite(samples).all()
    future = model.extrapolate(data.obs[:6], data.times, data.extrap_times)
    assert future.shape == (6, 20, 2)
    full = model.reconstruct(data.obs[:6], times)
    torch.testing.assert_close(future, full[:, 50:])
    metrics = evaluate_latent_ode(model, data, tol=1e-5, batch_size=16)
    assert {"recon_mse", "extrap_mse", "direction_error", "ab_mae", "nfe"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    baseline = evaluate_latent_ode(_model(data, partitioned=False), data, batch_size=64)
    assert "direction_error" not in baseline and math.isfinite(baseline["extrap_mse"])


# ---------------------------------------------------------------------- driver
def test_the_spirals_study_quick_with_runs_in_subprocesses(tmp_path):
    from runs.reproduce import run_study

    run_study("spirals", quick=True, seeds=1, jobs=2, workdir=tmp_path / "work", out=tmp_path)
    result = json.loads((tmp_path / "spirals.json").read_text())
    assert result["config"]["epochs"] == 2 and result["config"]["eval_tol"] == 1e-5
    rows = {row["model"]: row for row in result["rows"]}
    assert set(rows) == {"latent_ode", "latent_ode_partitioned"}
    for name, row in rows.items():
        assert row["seeds"] == [0]
        keys = ["recon_mse", "extrap_mse", "nfe"] + (["direction_error", "ab_mae"] if "partitioned" in name else [])
        for key in keys:
            for stat in ("mean", "std"):
                assert math.isfinite(row[f"{key}_{stat}"])
    assert "direction_error_mean" not in rows["latent_ode"] and "ab_error" not in rows["latent_ode"]
    # the (a, b) head against always predicting the prior means (App. E.1: a ~ N(1, 0.08), b ~ N(0.25, 0.03))
    part = rows["latent_ode_partitioned"]
    params = make_spirals(result["config"]["num_test"], seed=result["config"]["data_seed"], split="test").params
    a_err, b_err = (params[:, 0] - 1.0).abs().mean().item(), (params[:, 1] - 0.25).abs().mean().item()
    assert part["ab_prior_mean_error"] == pytest.approx((a_err + b_err) / 2, rel=1e-5)
    assert part["ab_error"] == part["ab_mae_mean"] > 0
    assert (tmp_path / "spirals.png").stat().st_size > 10_000


def test_ab_probe_tells_an_encoder_that_holds_a_b_from_one_that_does_not():
    from runs.studies.spirals import ab_probe_errors, prior_mean_errors

    class Encoder(torch.nn.Module):
        """``encode`` reads z_t0 from the first observation: here, a linear image of (a, b) or noise."""

        def encode(self, obs):
            return obs[:, 0, :] @ torch.tensor([[2.0, -1.0, 0.5], [0.3, 4.0, 1.0]]) + 1.0, None

    def windows(data, informative: bool):
        noise = torch.randn(len(data), 2, generator=torch.Generator().manual_seed(0))
        source = data.params[:, :2] if informative else noise
        return replace(data, obs=source[:, None, :].expand(-1, data.obs.shape[1], -1).contiguous())

    train, test = make_spirals(300, window=20, extrap=5, seed=1), make_spirals(200, window=20, extrap=5, seed=1,
                                                                              split="test")
    exact = ab_probe_errors(Encoder(), windows(train, True), windows(test, True))
    assert exact["a_probe_error"] < 1e-5 and exact["b_probe_error"] < 1e-5
    blind = ab_probe_errors(Encoder(), windows(train, False), windows(test, False))
    prior = prior_mean_errors(test)
    assert blind["a_probe_error"] == pytest.approx(prior["a_prior_mean_error"], rel=0.15)
    assert blind["b_probe_error"] == pytest.approx(prior["b_prior_mean_error"], rel=0.15)
