"""Evaluating with a tolerance policy: FlowModel.forward's tolerance function and agents.evaluate."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from flowkit import DIGITS_ID, TINY, env_kwargs

import infocnf_env  # noqa: F401  (registers the ids)
from agents import evaluate as ev
from agents import fixed, reinforce
from agents.cli import parse_args
from agents.loop import run_cli
from flows import build_model, evaluate, iterate_batches, load_dataset
from infocnf_env.actions import parse_action


def _train(agent_main, run_dir, *extra):
    agent_main(["--iterations", "2", "--eval-every", "0", "--no-progress", "--no-tensorboard", "--out", str(run_dir),
                *extra, *env_kwargs(TINY)])
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {"fixed": _train(fixed.main, root / "fixed", "--tol", "1e-4"),
            "reinforce": _train(reinforce.main, root / "reinforce")}


def test_tolerance_function_sees_each_block_in_order_and_sets_its_tolerance():
    torch.manual_seed(0)
    model = build_model("infocnf", (1, 8, 8), 10, hidden=4).eval()
    x, y = torch.rand(4, *model.data_shape), torch.arange(4)
    seen = []

    def per_block(state):
        block = model.block_index(state)
        seen.append((block, tuple(model.features(state).shape[1:])))
        return (1e-2, 1e-8, 1e-5)[block % 3]

    with torch.no_grad():
        out = model(x, y, tol=per_block, generator=torch.Generator().manual_seed(0))
        # the same pass block by block, each block given its tolerance by hand
        state = model.start(x, y, generator=torch.Generator().manual_seed(0))
        by_hand = []
        for block in range(model.num_blocks):
            state, stats = model.advance(state, (1e-2, 1e-8, 1e-5)[block % 3])
            by_hand.append(stats.nfe)
        tight = model(x, y, tol=1e-8, generator=torch.Generator().manual_seed(0))
    assert [b for b, _ in seen] == list(range(model.num_blocks))
    assert seen[0][1] == tuple(model.data_shape)
    assert [s.nfe for s in out.stats] == by_hand
    assert torch.equal(out.logpx, model.finish(state).logpx)
    assert tight.stats[0].nfe > out.stats[0].nfe  # block 0 solved at 1e-2, not at 1e-8


def test_constant_tolerance_function_equals_the_float():
    model = build_model("ccnf", (1, 8, 8), 10, hidden=4)
    batches = list(iterate_batches(load_dataset("digits", "test"), 25, max_batches=2))
    assert evaluate(model, batches, tol=lambda state: 1e-3, seed=1) == evaluate(model, batches, tol=1e-3, seed=1)


def test_a_policys_tolerance_outside_the_action_bounds_is_clipped_to_them_as_the_env_clips_it():
    """policy_tolerance clips the chosen log10 tolerance to the action bounds at both ends, to
    the tolerance the env itself would solve that action at (infocnf_env.actions.parse_action)."""
    env = gym.make(DIGITS_ID, **TINY).unwrapped
    low, high = float(env.action_space.low[0]), float(env.action_space.high[0])
    chosen = [low - 0.5, high + 1.0, (low + high) / 2]
    trace = ev.ToleranceTrace()
    tolerance = ev.policy_tolerance(env, lambda obs, block: (chosen[block % 3], 0.0), trace)
    x, y = next(iter(iterate_batches(load_dataset("digits", "test"), 4, max_batches=1)))
    with torch.no_grad():
        out = env.model(x.reshape(4, *env.model.data_shape), y, tol=tolerance,
                        generator=torch.Generator().manual_seed(0))
    expected = [parse_action(chosen[b % 3], "tol", (low, high)).tol for b in range(env.num_blocks)]
    assert [s.tol for s in out.stats] == pytest.approx(expected)
    assert trace.log_tols == [pytest.approx([low, high, (low + high) / 2][: env.num_blocks])]


def test_a_policys_reported_tolerance_is_the_mean_of_its_choices_over_blocks_and_batches():
    env = gym.make(DIGITS_ID, **TINY).unwrapped
    chosen = [-2.5, -6.0, -4.0, -3.0][: env.num_blocks]
    batches = list(iterate_batches(load_dataset("digits", "test"), 8, max_batches=2))
    result = ev.evaluate_policy(env, batches, lambda obs, block: (chosen[block], 0.0))
    assert result["log10_tol_blocks"] == pytest.approx(chosen)
    assert result["log10_tol"] == pytest.approx(float(np.mean(chosen)))
    assert float(np.mean(chosen)) != pytest.approx(float(np.median(chosen)))  # a median would differ


def test_fixed_run_policy_reproduces_fixed_evaluation(runs):
    run = ev.load_run(runs["fixed"])
    policy = ev.load_policy(runs["fixed"], run.env)
    batches = list(iterate_batches(run.env.task.data("test"), 30, max_batches=2))
    with_policy = ev.evaluate_policy(run.env, batches, policy)
    assert with_policy.pop("log10_tol_blocks") == pytest.approx([-4.0] * run.env.num_blocks)
    assert with_policy.pop("log10_tol") == pytest.approx(-4.0)
    assert with_policy == ev.evaluate_fixed(run.env, batches, 1e-4)


def test_reinforce_policy_chooses_gate_means_within_bounds(runs):
    run = ev.load_run(runs["reinforce"])
    policy = ev.load_policy(runs["reinforce"], run.env)
    low, high = float(run.env.action_space.low[0]), float(run.env.action_space.high[0])
    trace = ev.ToleranceTrace()
    x, y = next(iterate_batches(run.env.task.data("test"), 16))
    x = x.reshape(16, *run.model.data_shape)
    with torch.no_grad():
        run.model(x, y, tol=ev.policy_tolerance(run.env, policy, trace))
        run.model(x[:8], y[:8], tol=ev.policy_tolerance(run.env, policy, trace))
    assert len(trace.log_tols) == 2 and all(len(t) == run.env.num_blocks for t in trace.log_tols)
    assert all(low <= t <= high for pass_ in trace.log_tols for t in pass_)
    assert all(s > 0 for pass_ in trace.stds for s in pass_)  # REINFORCE gates report their spread
    # the deterministic choice: the same batch gives the same tolerances (up to the solver's warm
    # start, which the pass on x[:8] moved: later blocks' inputs differ in the last digits)
    again = ev.ToleranceTrace()
    with torch.no_grad():
        run.model(x, y, tol=ev.policy_tolerance(run.env, policy, again))
    assert again.log_tols[0][0] == trace.log_tols[0][0]
    assert again.log_tols[0] == pytest.approx(trace.log_tols[0], abs=1e-4)


def test_cli_prints_policy_and_fixed_metrics(runs, capsys):
    result = ev.main([str(runs["reinforce"]), "--batch-size", "150"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(result))
    assert result["agent"] == "reinforce" and result["split"] == "test"
    for part in ("policy", "fixed"):
        assert result[part]["num_samples"] == 300 and result[part]["bits_per_dim"] > 0
    assert result["fixed"]["tol"] == 1e-5


def test_cli_takes_the_run_directory_before_or_after_the_options(runs, capsys):
    run = str(runs["fixed"])
    first = ev.main([run, "--split", "test", "--batch-size", "150"])
    last = ev.main(["--split", "test", "--batch-size", "150", run])
    assert first == last and first["batch_size"] == 150 and first["run_dir"] == run
    assert parse_args(ev.Args, ["--batch-size", "150", run, "--split", "train"]) == \
        ev.Args(run_dir=run, split="train", batch_size=150)


def test_cli_evaluates_the_split_it_is_given(runs):
    run = str(runs["fixed"])
    data = ev.load_run(run).env.task
    result = {split: ev.main([run, "--split", split, "--batch-size", "500"]) for split in ("train", "test")}
    assert len(data.data("train")) != len(data.data("test"))
    for split, res in result.items():
        assert res["split"] == split
        assert res["policy"]["num_samples"] == res["fixed"]["num_samples"] == len(data.data(split))


def _copy_without(run, tmp_path, name: str, replace: str | None = None):
    """A copy of a finished run with ``name`` removed (or its text replaced by ``replace``)."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    if replace is None:
        (copy / name).unlink()
    else:
        (copy / name).write_text(replace)
    return copy


@pytest.mark.parametrize("argv, match", [
    ([], "name a run directory"),
    (["{tmp}/nowhere"], "is not a finished run directory: config.json is missing"),
    (["{fixed}", "--batch-size", "0"], "--batch-size must be positive"),
    (["{fixed}", "--pool", "test"], "--pool applies to runs of a benchmark task (ODE-*, CNF-Frozen-*) only; "),
    (["{fixed}", "--grid-step", "1"], "--grid-step applies to runs of a benchmark task"),
    (["{fixed}", "--threads", "0"], "--threads must be a positive integer, got 0"),
    (["{no_summary}"], "is not a finished run: it has no summary.json (stopped before its end?); finish it with "
                       "python -m agents.fixed --resume "),
    (["{bad_summary}"], "summary.json is unreadable (JSONDecodeError): the run's record is damaged"),
    (["{bad_config}"], "config.json is not a run's config (ValueError): the run's record is damaged"),
])
def test_cli_bad_input_is_one_line(argv, match, runs, tmp_path, capsys):
    if "{no_summary}" in argv:
        argv = [str(_copy_without(runs["fixed"], tmp_path, "summary.json"))]
    elif "{bad_summary}" in argv:
        argv = [str(_copy_without(runs["fixed"], tmp_path, "summary.json", replace='{"env": "InfoCNF-Dig'))]
    elif "{bad_config}" in argv:
        argv = [str(_copy_without(runs["fixed"], tmp_path, "config.json", replace="[1, 2]"))]
    argv = [a.format(tmp=tmp_path, fixed=runs["fixed"]) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: ev.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and match in err and "\n" not in err
