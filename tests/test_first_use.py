"""An env's first use, as a new user meets it: progress with the time left, a frozen flow's
training that survives Ctrl-C, the run directory shown before the work, and the CPU threads
of every CLI (infocnf_env.progress, infocnf_env.frozen, agents.runner, infocnf_env.threads)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from flowkit import QUIET, cli

from agents import evaluate, fixed, reinforce
from agents.loop import run_cli
from flows import build_model
from flows.data import BatchStream, load_dataset
from flows.train import Plateau, fit
from infocnf_env import default_threads, frozen, threads
from infocnf_env.frozen import FrozenConfig, trained_toy_flow
from infocnf_env.progress import Progress, duration


# ---------------------------------------------------------------------- progress with the time left
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_prints_a_line_every_interval_with_the_time_left_at_the_rate_so_far():
    clock, lines = Clock(), []
    progress = Progress("flow", 100, "iterations", start="training the flow", log=lines.append, every=10.0,
                        clock=clock)
    assert lines == ["training the flow"]
    for step in range(1, 41):  # 0.5 s per iteration: a line at 10 s and at 20 s
        clock.now += 0.5
        progress.update(step)
    assert len(lines) == 3
    # at 20 s, 40 of 100 done at 0.5 s each: 60 x 0.5 = 30 s left
    assert lines[-1] == "flow: 40/100 iterations, 20 s spent, about 30 s left"
    progress.finish("done")
    assert lines[-1] == "flow: 40 iterations done in 20 s; done"


def test_a_resumed_progress_estimates_from_its_own_units_only():
    clock, lines = Clock(), []
    progress = Progress("flow", 1000, "iterations", done=900, log=lines.append, every=1.0, clock=clock)
    clock.now += 10.0
    progress.update(950)  # 50 in 10 s: 50 left take 10 s, whatever the 900 before took
    assert lines == ["flow: 950/1000 iterations, 10 s spent, about 10 s left"]


def test_durations_read_as_minutes_and_hours():
    assert [duration(s) for s in (4.4, 200, 3 * 3600 + 125)] == ["4 s", "3 min 20 s", "3 h 02 min"]


# ---------------------------------------------------------------------- resumable frozen flows
def _interrupt_at(monkeypatch, step: int) -> None:
    """Ctrl-C (KeyboardInterrupt) as the frozen flow's training logs ``step``."""
    original = frozen.Progress.update

    def update(self, done=None, note=""):
        if done == step:
            raise KeyboardInterrupt
        original(self, done, note)

    monkeypatch.setattr(frozen.Progress, "update", update)


@pytest.mark.parametrize("plateau", [None, Plateau(window=3, patience=3, min_improvement=0.5)])
def test_an_interrupted_frozen_training_goes_on_to_the_uninterrupted_weights(tmp_path, monkeypatch, plateau):
    config = FrozenConfig(densities=("8gaussians",), hidden=4, num_blocks=2, train_iterations=14, train_batch_size=32,
                          plateau=plateau, cache=str(tmp_path / "straight"))
    monkeypatch.setattr(frozen, "PARTIAL_EVERY", 10**9)  # no partial checkpoint at all
    straight, straight_steps = trained_toy_flow(config, log=None)
    interrupted = FrozenConfig(**{**config.__dict__, "cache": str(tmp_path / "cut")})
    monkeypatch.setattr(frozen, "PARTIAL_EVERY", 4)
    _interrupt_at(monkeypatch, 10)
    with pytest.raises(KeyboardInterrupt):
        trained_toy_flow(interrupted, log=None)
    partial = list((tmp_path / "cut").glob("*" + frozen.PARTIAL_SUFFIX))
    assert len(partial) == 1 and torch.load(partial[0], weights_only=True)["step"] == 8
    monkeypatch.undo()
    monkeypatch.setattr(frozen, "PARTIAL_EVERY", 4)
    lines: list[str] = []
    resumed, steps = trained_toy_flow(interrupted, log=lines.append)
    assert "going on from iteration 8 of an interrupted training" in lines[0]
    assert steps == straight_steps
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name
    assert not list((tmp_path / "cut").glob("*" + frozen.PARTIAL_SUFFIX))  # removed once the flow is cached


def test_an_unreadable_partial_training_starts_over(tmp_path):
    config = FrozenConfig(densities=("8gaussians",), hidden=4, train_iterations=3, train_batch_size=32,
                          cache=str(tmp_path))
    partial = tmp_path / (config.flow_key("8gaussians") + frozen.PARTIAL_SUFFIX)
    partial.write_bytes(b"\x00 not a checkpoint")
    lines: list[str] = []
    _, steps = trained_toy_flow(config, log=lines.append)
    assert steps == 3 and any("is unreadable" in line for line in lines) and not partial.exists()


def test_fit_resumed_from_a_checkpoint_matches_the_uninterrupted_run_with_noise_and_adam():
    """Hutchinson noise (the generator), Adam's moments and the data stream all carry over."""
    def model_and_stream():
        torch.manual_seed(0)
        model = build_model("infocnf", (1, 8, 8), 10, hidden=4, num_scales=2, flows_per_scale=1, num_levels=17)
        return model, BatchStream(load_dataset("digits", "train"), 8, seed=3)

    model, stream = model_and_stream()
    fit(model, stream, 5, tol=1e-3, generator=torch.Generator().manual_seed(1))
    states: list[dict] = []
    cut, cut_stream = model_and_stream()
    fit(cut, cut_stream, 3, tol=1e-3, generator=torch.Generator().manual_seed(1),
        checkpoint=lambda state: states.append(copied(state)), checkpoint_every=2)
    assert [s["step"] for s in states] == [2]
    again, again_stream = model_and_stream()  # a new process: fresh model, stream and generator
    fit(again, again_stream, 5, tol=1e-3, generator=torch.Generator().manual_seed(99), resume=states[0])
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name


def copied(state: dict) -> dict:
    """A deep copy of a training state, as a checkpoint file holds it (no live references)."""
    return copy.deepcopy(state)


# ---------------------------------------------------------------------- the run directory before first use
FROZEN = ["hidden=4", "train_iterations=6", "train_pool_size=2", "test_pool_size=1", "batch_size=8"]


def _frozen_argv(out, cache, *extra):
    return ["--env", "CNF-Frozen-8Gaussians-v0", "--iterations", "1", "--out", str(out), *QUIET, *extra,
            "--env-kwargs", *FROZEN, f"cache={str(cache)!r}"]


def test_a_first_use_shows_and_creates_the_run_directory_before_the_work(tmp_path, monkeypatch, capsys):
    seen = {}
    original = frozen.fit

    def fit_and_look(*args, **kwargs):
        seen["config"] = (tmp_path / "run" / "config.json").exists()
        return original(*args, **kwargs)

    monkeypatch.setattr(frozen, "fit", fit_and_look)
    fixed.main(_frozen_argv(tmp_path / "run", tmp_path / "cache"))
    err = capsys.readouterr().err.splitlines()
    assert seen["config"]  # the run directory held its config.json when the training began
    assert err[0].startswith(f"run directory: {tmp_path / 'run'} (CNF-Frozen-8Gaussians-v0, fixed, device cpu, ")
    assert any(line.startswith("training the frozen 8gaussians flow once") for line in err[1:])
    assert sum(line.startswith("run directory:") for line in err) == 1
    # the next run has nothing to build: its directory is announced once, as before
    fixed.main(_frozen_argv(tmp_path / "again", tmp_path / "cache"))
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("run directory:") and not any("first use" in line for line in err)


def test_ctrl_c_during_a_first_use_keeps_no_run_directory_but_the_partial_flow(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(frozen, "PARTIAL_EVERY", 2)
    _interrupt_at(monkeypatch, 5)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: fixed.main(_frozen_argv(tmp_path / "new" / "run", tmp_path / "cache")))
    assert exit_info.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted before the run started: no run directory was kept" in err
    assert not (tmp_path / "new").exists()  # nor the folder it made for it
    assert len(list((tmp_path / "cache").glob("*" + frozen.PARTIAL_SUFFIX))) == 1


def test_a_bad_agent_flag_after_a_first_use_removes_the_run_directory(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # the squashed gates start inside the bounds (-8, 0)
        run_cli(lambda: reinforce.main(_frozen_argv(tmp_path / "run", tmp_path / "cache", "--init-mean", "1")))
    assert exit_info.value.code == 2
    assert "initial mean 1 is not in (-8, 0)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert list((tmp_path / "cache").glob("*.pt"))  # the first-use work is kept


# ---------------------------------------------------------------------- threads
def test_set_threads_sets_torch_and_the_blas_pools():
    from threadpoolctl import threadpool_info

    try:
        threads.set_threads(2)
        assert torch.get_num_threads() == 2 and {p["num_threads"] for p in threadpool_info()} <= {2}
    finally:
        threads.set_threads(1)
    assert torch.get_num_threads() == 1 and {p["num_threads"] for p in threadpool_info()} <= {1}


class Stop(Exception):
    """Ends a CLI where a test has seen what it looks for."""


def test_threads_are_set_before_the_env_is_built_and_recorded(tmp_path, monkeypatch, capsys):
    """The count reaches set_threads before the env exists; config, start-up line and summary say
    it. (Set for real only in the test above: two threads on busy cores would slow the suite.)"""
    from agents import runner

    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(runner, "set_threads", lambda n: calls.append(("threads", n)))
    original = runner.make_env
    monkeypatch.setattr(runner, "make_env", lambda *a, **k: (calls.append(("env", 0)), original(*a, **k))[1])
    summary = fixed.main(cli(tmp_path / "run", "--threads", "2"))
    assert calls == [("threads", 2), ("env", 0)] and summary["threads"] == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["args"]["threads"] == 2
    assert "device cpu, 2 threads)" in capsys.readouterr().err.splitlines()[0]
    # the default follows the rule (one thread for the bundled ids); a resumed run may change it
    calls.clear()
    assert fixed.main(cli(tmp_path / "default"))["threads"] == 1 and calls[0] == ("threads", 1)
    resumed = fixed.main(["--resume", str(tmp_path / "default"), "--iterations", "3", "--threads", "2",
                          "--no-progress"])
    assert resumed["threads"] == 2 and ("threads", 2) in calls


def test_the_thread_rule_keeps_torchs_count_for_the_papers_ids():
    assert default_threads("InfoCNF-CIFAR10-v0") == threads.torch_default_threads()
    assert default_threads("CCNF-MNIST-v0") == threads.torch_default_threads()
    for env_id in ("InfoCNF-Digits-v0", "ODE-Mixed-v0", "CNF-Frozen-Mixed-v0", "LatentODE-Spirals-v0"):
        assert default_threads(env_id) == 1


def test_evaluate_sets_the_thread_rule_of_the_runs_env(tmp_path, monkeypatch):
    fixed.main(cli(tmp_path / "run", "--tol", "1e-3", "--eval-every", "0", "--threads", "1"))
    asked: list[int] = []

    def set_threads(n):
        asked.append(n)
        raise Stop

    monkeypatch.setattr(threads, "set_threads", set_threads)
    for argv in ([], ["--threads", "2"]):
        with pytest.raises(Stop):
            evaluate.main([str(tmp_path / "run"), *argv])
    assert asked == [1, 2]  # the rule for digits, then the flag
