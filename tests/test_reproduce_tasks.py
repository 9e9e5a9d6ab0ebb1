"""runs.reproduce, the studies that train no digits flow (benchmark tasks, spirals, performance):
each in --quick mode writes a JSON of the documented schema and its figure
(:mod:`reproduce_check`); the digits studies are ``tests/test_reproduce.py``'s, in another
pytest worker.
"""

from __future__ import annotations

import json
import math

import pytest
from reproduce_check import check_quick_study, check_tables, quick_result

from runs import reproduce
from runs.reproduce import STUDIES
from runs.studies import study

#: The studies that train no digits flow, in registry order.
TASK_STUDIES = [name for name in STUDIES if not study(name).uses_digits_regimes]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce-tasks")
    return root / "work", root / "results"


def test_the_two_files_smoke_every_study_once():
    from test_reproduce import DIGITS_STUDIES

    assert sorted(DIGITS_STUDIES + TASK_STUDIES) == sorted(STUDIES) and not set(DIGITS_STUDIES) & set(TASK_STUDIES)


@pytest.mark.parametrize("name", TASK_STUDIES)
def test_quick_study_writes_schema_and_plot(name, dirs):
    check_quick_study(name, dirs)


def test_unknown_study_is_one_clear_error(dirs):
    with pytest.raises(ValueError, match="valid:"):
        reproduce.run_study("table-9", quick=True, workdir=dirs[0], out=dirs[1])


def test_tables_render_every_quick_result(dirs):
    assert check_tables(dirs[1]) >= 3


def test_bench_gpu_command_line_sets_the_studys_config(tmp_path):
    """The GPU command line runs the bench-gpu study on CPU with synthetic CIFAR10 and writes its JSON."""
    from runs import bench_gpu

    path = tmp_path / "bench.json"
    result = bench_gpu.main(["--device", "cpu", "--threads", "1", "--synthetic", "--iterations", "2", "--warmup", "0",
                             "--batch-size", "4", "--env-kwargs", "hidden=4", "flows_per_scale=1", "num_scales=2",
                             "--json", str(path), "--no-progress"])
    saved = json.loads(path.read_text())
    assert saved["study"] == "bench-gpu"
    assert saved["config"]["env_kwargs"] == {"hidden": 4, "flows_per_scale": 1, "num_scales": 2}
    assert saved["iterations_done"] == 2 and saved["timed_iterations"] == 2
    for key in ("seconds_per_iteration_median", "nfe_forward_mean", "nfe_backward_mean"):
        assert math.isfinite(result[key]) and result[key] > 0


def test_bench_gpu_refuses_settings_that_cannot_run(capsys):
    from runs import bench_gpu

    with pytest.raises(SystemExit):
        bench_gpu.main(["--synthetic", "--env", "InfoCNF-MNIST-v0"])
    assert "--synthetic writes CIFAR10-format data" in capsys.readouterr().err


def test_the_throughput_studys_bound_is_n_times_the_native_rows_nfe_share(dirs):
    """Native rows record their NFE share (a share of the loop, in (0, 1]; a batch of one uses
    all of it), other rows none; the ODE bound is N times the share of the ODE native row at N."""
    saved = quick_result("throughput", dirs)
    at = saved["config"]["targets"]["at_envs"]
    for r in saved["rows"]:
        assert ("nfe_share" in r) == (r["mode"] == "native"), r
        if r["mode"] == "native":
            assert 0 < r["nfe_share"] <= 1 and (r["num_envs"] > 1 or r["nfe_share"] == 1.0), r
    (ode,) = [r for r in saved["rows"] if r["task"].startswith("ODE-") and r["mode"] == "native"
              and r["num_envs"] == at]
    assert saved["native_bound_ode"] == pytest.approx(at * ode["nfe_share"])


def test_bench_flow_quick_writes_the_sweep_with_warm_starts(dirs):
    """NFE against the tolerance, with the heuristic start and warm-started, and the per-NFE cost."""
    saved = quick_result("bench-flow", dirs)
    assert saved["block_cost"] and all(c["nfe_ours"] == c["nfe_minimal"] for c in saved["block_cost"])
    for point in saved["tolerance_sweep"]:
        assert 0 < point["nfe_forward_warm"] <= point["nfe_forward"]
        if point["tol"] <= 1e-4:  # both solves are accurate: the same density
            assert abs(point["bits_per_dim_warm"] - point["bits_per_dim"]) < 1e-3


def test_bench_cifar_quick_compares_the_same_ode(dirs):
    """The FFJORD-style baseline integrates the model's own dynamics with the same noise: every
    arm that starts its solves from the initial-step heuristic takes the same forward evaluations."""
    from runs.studies import bench_cifar

    result = quick_result("bench-cifar", dirs)
    assert set(result["ratios_to_ffjord"]) == set(bench_cifar.ARMS) - {"ffjord"}
    forward = {name: arm["nfe_forward"][0] for name, arm in result["arms"].items() if name != "seminorm_warm"}
    assert len(set(forward.values())) == 1 and forward["ffjord"] > 0, forward
    assert all(arm["nfe_backward"][0] > 0 for arm in result["arms"].values())


def test_bench_backend_quick(dirs):
    import torch

    threads = torch.get_num_threads()
    result = quick_result("bench-backend", dirs)
    assert torch.get_num_threads() == threads
    assert result["machine"]["threads"] == 1 and result["machine"]["torch"] == torch.__version__
    points = {(p["backend"], p["tol"]): p for p in result["points"]}
    ref = points[("torchdiffeq", 1e-5)]
    assert ref["bpd_gap"] == 0.0 and ref["error"] is None
    assert ref["nfe_forward"] > 0 and ref["nfe_backward"] > 0 and ref["train_s"] > 0 and ref["s_per_nfe"] > 0
    assert {tol for _, tol in points} == {1e-5, 1e-3}
    if ("torchode", 1e-5) in points:
        assert points[("torchode", 1e-5)]["nfe_forward"] == ref["nfe_forward"]


def test_learned_vs_fixed_quick_compares_the_two_arms_of_each_seed(dirs):
    result = quick_result("learned-vs-fixed", dirs)
    rows = result["rows"]
    assert set(rows) == {"fixed", "reinforce"} and rows["fixed"]["seeds"] == rows["reinforce"]["seeds"] == [0]
    assert result["nfe_ratio"] == pytest.approx(rows["reinforce"]["nfe_mean"] / rows["fixed"]["nfe_mean"])
    assert rows["fixed"]["mean_log10_tol_last"] == pytest.approx(-5.0)  # fixed 1e-5 on every block
    runs = {json.loads((dirs[0] / "runs" / d / "config.json").read_text())["agent"]
            for d in [p.name for p in (dirs[0] / "runs").iterdir() if p.name.startswith("learned-vs-fixed")]}
    assert runs == {"fixed", "reinforce"}


def test_the_threads_studys_busy_neighbour_runs_until_the_block_ends():
    """The load of the ``threads`` study (its quick run leaves it out, to stay quick)."""
    from runs.studies import threads

    with threads.load("busy", 16) as proc:
        assert proc is not None and proc.poll() is None  # running, busy
    assert proc.poll() is not None  # stopped with the block
    with threads.load("idle", 16) as none:
        assert none is None


def test_the_threads_study_times_the_iterations_after_the_warmup(tmp_path, monkeypatch):
    from runs.studies import threads

    walls = [10.0, 11.0, 13.0, 16.0, 20.0]  # cumulative wall time after each iteration
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i + 1, "wall_time": w}) + "\n"
                                                    for i, w in enumerate(walls)))
    assert threads._rate(tmp_path, warmup=2) == pytest.approx(3 / (20.0 - 11.0))  # iterations 3..5
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # only --threads decides a child's threads
    assert not set(threads.THREAD_VARIABLES) & set(threads._child_env())


def test_a_throughput_row_is_its_median_round():
    from runs.studies import throughput

    rounds = [{"steps_per_s": v, "round": k} for k, v in enumerate([5.0, 1.0, 3.0])]
    assert throughput.median_round(rounds)["round"] == 2
    assert throughput.median_round(rounds[:1])["round"] == 0


def test_the_throughput_study_counts_every_sub_envs_step():
    """A vector step of N sub-envs is N environment steps; the warm-up step is not timed."""
    import gymnasium as gym
    import numpy as np

    from runs.studies import throughput

    class Counting:  # a vector env of 4 sub-envs whose steps cost nothing
        num_envs = 4
        single_action_space = gym.spaces.Box(-6.0, -2.0, (1,), np.float32)

        def __init__(self) -> None:
            self.calls, self.closed = 0, False

        def reset(self, seed=None):
            return np.zeros((4, 1), np.float32), {}

        def step(self, actions):
            assert actions.shape == (4, 1) and np.all(actions == -4.0)  # the middle of the bounds
            self.calls += 1
            nfe = [10, 20, 30, 40] if self.calls % 2 else [40, 40, 40, 40]
            return None, None, None, None, {"nfe": np.array(nfe), "_nfe": np.ones(4, bool)}

        def close(self) -> None:
            self.closed = True

    envs = Counting()
    steps, elapsed, share = throughput._time_vector(envs, 0.02)  # type: ignore[arg-type]
    assert envs.calls > 1 and steps == 4 * (envs.calls - 1) and elapsed >= 0.02 and envs.closed
    timed = range(2, envs.calls + 1)  # the calls after the warm-up: odd ones use 25/40 of the loop, even ones all
    assert share == pytest.approx(np.mean([0.625 if k % 2 else 1.0 for k in timed]))


def test_a_steps_nfe_share_is_the_sub_envs_mean_nfe_over_their_largest():
    import numpy as np

    from runs.studies import throughput

    assert throughput.nfe_share({"nfe": np.array([10, 30, 20]), "_nfe": np.ones(3, bool)}) == pytest.approx(20 / 30)
    assert throughput.nfe_share({"nfe": np.array([10, 0, 40]), "_nfe": np.array([True, False, True])}) == 25 / 40
    assert throughput.nfe_share({"tol": np.ones(3)}) is None


def test_the_invariance_check_compares_each_episode_alone_with_its_densitys_batch(tmp_path, monkeypatch):
    """With a solve whose NFE grows with its batch, every episode that shares its density with
    another counts as changed; with the real solve in float64 none does."""
    import dataclasses

    from flowkit import TINY_FROZEN

    from flows import FlowModel
    from runs.studies import throughput

    kwargs = {**TINY_FROZEN, "densities": ["checkerboard"], "train_iterations": 3, "train_pool_size": 2,
              "test_pool_size": 3, "backend": "torchode", "cache": str(tmp_path)}
    honest = throughput.invariance("CNF-Frozen-Mixed-v0", kwargs, -3.0)
    assert [r["dtype"] for r in honest] == ["float32", "float64"] and all(r["episodes"] == 3 for r in honest)
    assert honest[1]["nfe_differs"] == 0 and honest[1]["max_error_gap"] < 1e-9
    batched = FlowModel.advance_batch

    def by_batch_size(self, states, tols, first_steps):
        return [(out[0], dataclasses.replace(out[1], nfe=out[1].nfe + len(states)))
                for out in batched(self, states, tols, first_steps)]

    monkeypatch.setattr(FlowModel, "advance_batch", by_batch_size)
    assert [r["nfe_differs"] for r in throughput.invariance("CNF-Frozen-Mixed-v0", kwargs, -3.0)] == [3, 3]
