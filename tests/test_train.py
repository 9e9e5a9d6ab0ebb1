"""flows.train.fit, the one training loop outside the environment, and its plateau criterion."""

from __future__ import annotations

import pytest
import torch

from flows import SolverError, build_model
from flows.data import BatchStream, load_dataset
from flows.train import Plateau, _PlateauTracker, fit


def _steps_until_plateau(losses, plateau: Plateau) -> int | None:
    tracker = _PlateauTracker(plateau)
    for step, loss in enumerate(losses, start=1):
        if tracker.add(loss):
            return step
    return None


def test_a_flat_loss_stops_after_patience_windows_without_improvement():
    plateau = Plateau(window=10, patience=3, min_improvement=0.01)
    # the first window sets the best; three more without a 0.01 fall end the run
    assert _steps_until_plateau([1.0] * 1000, plateau) == 40


def test_a_loss_that_keeps_falling_never_plateaus():
    plateau = Plateau(window=10, patience=2, min_improvement=0.01)
    assert _steps_until_plateau([10.0 - 0.002 * i for i in range(2000)], plateau) is None  # 0.02 per window
    # falling by less than min_improvement per window counts as flat
    assert _steps_until_plateau([10.0 - 0.0001 * i for i in range(2000)], plateau) == 30


def test_an_improvement_restarts_the_patience():
    plateau = Plateau(window=1, patience=2, min_improvement=0.1)
    assert _steps_until_plateau([5.0, 5.0, 4.0, 4.0, 4.0, 4.0], plateau) == 5


def test_fit_stops_on_the_plateau_and_reports_its_steps():
    torch.manual_seed(0)
    model = build_model("cnf", (2,), 8, "mlp", hidden=4, num_blocks=1, divergence="exact", logit_alpha=None,
                        num_levels=None)
    stream = BatchStream(load_dataset("8gaussians", "train", seed=0), 16, seed=0)
    calls = []
    # lr 0 leaves the loss where it is: no window can improve on the first by 100 nats
    result = fit(model, stream, 1000, tol=1e-2, lr=0.0, until=Plateau(window=3, patience=2, min_improvement=100.0),
                 log=lambda step, loss, nfe: calls.append(step), log_every=4)
    assert result.plateaued and result.steps == 9 and calls == [4, 8, 9]
    capped = fit(model, stream, 5, tol=1e-2, lr=0.0, until=Plateau(window=3, patience=2, min_improvement=100.0))
    assert not capped.plateaued and capped.steps == 5


@pytest.mark.parametrize("kwargs, message", [
    (dict(window=0), "window must be an integer >= 1"),
    (dict(patience=1.5), "patience must be an integer >= 1"),
    (dict(min_improvement=-1.0), "min_improvement must be a finite number >= 0"),
])
def test_bad_plateau_settings_are_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Plateau(**kwargs)


def test_fit_skips_batches_whose_solve_fails_and_leaves_the_weights_alone():
    torch.manual_seed(0)
    # one step allowed per solve at 1e-8: every solve fails
    model = build_model("cnf", (2,), 8, "mlp", hidden=4, num_blocks=1, divergence="exact", logit_alpha=None,
                        num_levels=None, max_num_steps=1)
    stream = BatchStream(load_dataset("8gaussians", "train", seed=0), 16, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(SolverError):
        fit(model, stream, 3, tol=1e-8)
    seen = []
    result = fit(model, stream, 3, tol=1e-8, skip_failures=True, on_update=seen.append)
    assert result.failures == 3 and result.steps == 3 and seen == []
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
