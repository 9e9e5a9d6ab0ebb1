"""The studies' derived figures against their definitions, on made-up inputs.

A quick study runs one seed on tiny models, so a ratio taken the wrong way round, a sample
std taken as a population one or a "best" taken with ``max`` for ``min`` still writes a JSON of
the right schema. These tests feed each derivation inputs whose right answer is known by hand.
"""

from __future__ import annotations

import json
import runpy

import numpy as np
import pytest

from runs import figures
from runs.studies import curves, digits_table, speed, speed_classical, spirals, threads


def _curve_row(policy: str, batch: str, nfe: list[float]) -> dict:
    n = len(nfe)
    return {"model": "infocnf", "policy": policy, "batch": batch, "iteration": list(range(n)),
            "epoch": list(range(n)), "nfe_mean": nfe, "nfe_std": [1.0] * n, "bits_per_dim_mean": [2.0] * n,
            "test_error_mean": [0.1] * n}


def test_the_curves_page_reads_the_learned_arms_nfe_cut_against_the_fixed_arm():
    rows = [_curve_row("reinforce", "small", [60.0, 30.0]), _curve_row("fixed", "small", [100.0, 100.0]),
            _curve_row("reinforce", "large", [50.0, 50.0]), _curve_row("fixed", "large", [100.0, 100.0])]
    text = curves.section({"curves": {"rows": rows}})
    assert "training NFE stays 40-70% lower" in text  # 1 - learned / fixed: 0.4, 0.7, 0.5, 0.5


def test_the_digits_tables_ratios_put_the_named_arm_over_its_reference():
    def arm(model, policy, error, bpd=1.0, nfe=100.0):
        return {"model": model, "policy": policy, "batch": "small", "test_error_mean": error,
                "bits_per_dim_mean": bpd, "nfe_mean": nfe}

    rows = [arm("infocnf", "fixed", 0.08), arm("ccnf", "fixed", 0.10), arm("infocnf", "reinforce", 0.12, nfe=60.0)]
    cfg = {"regimes": ["small"], "targets": digits_table.CONFIG["targets"]}
    (entry,) = digits_table.target_checks(rows, cfg)
    assert entry["error_ratio"] == pytest.approx(0.8)  # InfoCNF's error over CCNF's
    assert entry["error_target_met"] is (0.8 <= cfg["targets"]["error_ratio"])
    assert entry["error_ratio_learned"] == pytest.approx(1.2)
    assert entry["nfe_ratio"] == pytest.approx(0.6)  # learned over fixed


def test_a_runs_rate_counts_the_iterations_after_the_warmup_over_their_time(tmp_path):
    walls = [0.0, 5.0, 6.0, 8.0, 9.0, 13.0]  # the first two iterations are the warmup
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"wall_time": w}) + "\n" for w in walls))
    # four timed iterations, from the end of the warmup's last (5.0) to the end of the run (13.0)
    assert threads._rate(tmp_path, warmup=2) == pytest.approx(4 / 8.0)


def test_the_regularised_arms_weight_is_the_largest_swept_one_within_the_bits_per_dim_tolerance():
    sweep = [{"reg_weight": w, "bpd_ratio": r} for w, r in ((0.01, 1.001), (0.1, 1.004), (1.0, 1.05))]
    assert speed.choose_weight(sweep, tol=0.005) == 0.1
    assert speed.choose_weight(sweep, tol=0.0001) == 0.01  # none within: the smallest swept weight


def test_the_best_classical_setting_is_the_cheapest_one_within_the_tolerance():
    rows = [{"arm": "baseline", "bpd_ratio": 1.0, "nfe_mean": 300.0},
            {"arm": "cheap-but-off", "bpd_ratio": 1.2, "nfe_mean": 100.0},
            {"arm": "cheap", "bpd_ratio": 1.003, "nfe_mean": 200.0},
            {"arm": "costly", "bpd_ratio": 0.999, "nfe_mean": 400.0}]
    assert speed_classical.best_setting(rows, tol=0.005) == "cheap"
    assert speed_classical.best_setting(rows[1:2] + rows[:1], tol=0.005) == "baseline"  # its first row otherwise


def test_the_spirals_rows_take_the_sample_std_over_seeds():
    per_seed = [{"recon_mse": 1.0, "nfe": 10.0}, {"recon_mse": 2.0, "nfe": 20.0}, {"recon_mse": 6.0, "nfe": 30.0}]
    row = spirals._summarise("infocnf", (0, 1, 2), per_seed)
    assert row["recon_mse_mean"] == pytest.approx(3.0)
    assert row["recon_mse_std"] == pytest.approx(np.std([1.0, 2.0, 6.0], ddof=1))
    assert row["nfe_std"] == pytest.approx(10.0)


def test_a_bar_figures_error_bars_are_each_rows_std():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{"model": "infocnf", "policy": "fixed", "batch": b, "nfe_mean": m, "nfe_std": s}
            for b, m, s in (("small", 100.0, 4.0), ("large", 80.0, 7.0))]
    fig, ax = plt.subplots()
    try:
        figures.bars(ax, rows, "nfe", ["small", "large"], "NFE")
        from matplotlib.container import ErrorbarContainer

        (container,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        segments = container.lines[2][0].get_segments()
        assert [(float(s[0][1]), float(s[1][1])) for s in segments] == [(96.0, 104.0), (73.0, 87.0)]
    finally:
        plt.close(fig)


def test_python_m_runs_studies_prints_the_study_table(capsys):
    from runs.studies import names, registry

    runpy.run_module("runs.studies", run_name="__main__")
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(names()) + 2  # a rule above and below
    for name, line in zip(names(), printed[1:-1], strict=True):
        assert line.startswith(f"``{name}``") and line.endswith(registry()[name].summary)


def _jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_a_runs_series_averages_the_training_nfe_since_the_previous_evaluation(tmp_path):
    from runs.aggregate import run_series
    from runs.matrix import DIGITS_TRAIN_SIZE

    metrics = [{"iteration": i, "nfe_forward": 10 * i, "nfe_backward": i} for i in range(1, 7)]
    _jsonl(tmp_path / "metrics.jsonl", metrics)
    evals = [{"iteration": 2, "bits_per_dim": 9.0}, {"iteration": 2, "bits_per_dim": 3.0, "error": 0.5},  # resumed
             {"iteration": 6, "bits_per_dim": 2.0, "error": 0.25}]
    _jsonl(tmp_path / "eval.jsonl", evals)
    series = run_series(tmp_path, batch_size=100)
    assert series["iteration"] == [2, 6] and series["bits_per_dim"] == [3.0, 2.0]  # the last record of an evaluation
    assert series["test_error"] == [0.5, 0.25]
    assert series["nfe"] == pytest.approx([np.mean([11, 22]), np.mean([33, 44, 55, 66])])
    assert series["epoch"] == pytest.approx([200 / DIGITS_TRAIN_SIZE, 600 / DIGITS_TRAIN_SIZE])


def test_series_over_seeds_are_cut_to_the_shortest_and_summarised_point_by_point():
    from runs.aggregate import aggregate_series

    nan = float("nan")
    a = {"iteration": [1, 2, 3], "epoch": [0.1, 0.2, 0.3], "nfe": [10.0, 20.0, 30.0], "bits_per_dim": [4.0, 3.0, 2.0],
         "test_error": [nan, nan, nan]}
    b = {"iteration": [1, 2], "epoch": [0.1, 0.2], "nfe": [14.0, 30.0], "bits_per_dim": [5.0, 3.0],
         "test_error": [nan, nan]}
    out = aggregate_series([a, b])
    assert out["iteration"] == [1, 2] and "test_error_mean" not in out  # no seed evaluated the error
    assert out["nfe_mean"] == pytest.approx([12.0, 25.0])
    assert out["nfe_std"] == pytest.approx([np.std([10, 14], ddof=1), np.std([20, 30], ddof=1)])
    assert out["bits_per_dim_std"] == pytest.approx([np.std([4, 5], ddof=1), 0.0])


def test_a_runs_training_tail_is_its_last_quarter_of_the_records_with_the_keys(tmp_path):
    from runs.studies.common import LAST_FRACTION, training_tail

    records = [{"iteration": i, "nfe_forward": i} for i in range(1, 21)] + [{"iteration": 21}]  # the last lacks it
    _jsonl(tmp_path / "metrics.jsonl", records)
    tail = training_tail(tmp_path, "nfe_forward")
    assert [r["iteration"] for r in tail] == list(range(21 - int(20 * LAST_FRACTION), 21))
    _jsonl(tmp_path / "metrics.jsonl", records[:2])
    assert [r["iteration"] for r in training_tail(tmp_path, "nfe_forward")] == [2]  # at least one


def test_a_scale_curve_is_the_moving_average_of_the_rewards_against_env_steps(tmp_path):
    from runs.studies import scale

    _jsonl(tmp_path / "metrics.jsonl", [{"reward": float(r)} for r in (0, 2, 4, 10, 20)])
    steps, rewards = scale._curve(tmp_path, window=2, blocks=4)
    # the average of episodes 1-2 is reached after 2 episodes of 4 steps each
    assert steps == [8, 12, 16, 20] and rewards == pytest.approx([1.0, 3.0, 7.0, 15.0])
    assert scale._curve(tmp_path, window=6, blocks=4) == ([], [])  # fewer episodes than the window


def test_the_speed_studys_targets_are_met_at_their_thresholds_and_not_beyond():
    t = {"combined_nfe_ratio": 0.5, "combined_wall_ratio": 0.6, "combined_bpd_tol": 0.01,
         "regularised_test_nfe_ratio": 0.8, "warm_nfe_forward_ratio": 0.9, "warm_bpd_tol": 0.02}
    rows = [{"arm": "combined", "nfe_ratio": 0.5, "wall_ratio": 0.6, "bpd_ratio": 1.009},
            {"arm": "regularised", "test_nfe_ratio": 0.81},
            {"arm": "warm", "nfe_forward_ratio": 0.9, "test_nfe_ratio": 0.5, "bpd_ratio": 0.97}]
    out = speed._targets(rows, t)
    assert out["combined"]["met"] is True and out["regularised"]["met"] is False
    assert out["warm"]["met"] is False  # bits/dim 3% off against a 2% tolerance
    assert out["thresholds"] == t and out["combined"]["nfe_ratio"] == 0.5
    rows[0]["wall_ratio"] = 0.61
    assert speed._targets(rows, t)["combined"]["met"] is False


def test_the_cifar_benchmarks_ratios_are_of_the_minimum_and_of_the_median_times():
    from runs.studies import bench_cifar

    ratios = bench_cifar._ratios([1.0, 2.0, 9.0], [2.0, 4.0, 5.0])
    assert ratios == {"min": pytest.approx(0.5), "median": pytest.approx(0.5)}  # the means' would be 12 / 11


def test_a_digits_arm_runs_its_regimes_settings_unless_a_study_overrides_them(tmp_path) -> None:
    """runs.run_cache.digits_arm: iterations, evaluation cadence and env kwargs come from the
    regime; a study's ``iterations``, ``eval_every`` and ``extra_env`` replace them."""
    from runs.run_cache import Context, digits_arm

    regime = {"batch_size": 16, "lr": 1e-3, "lr_decay_at": 0.0, "lr_decay": 0.1, "iterations": 40,
              "eval_every": 10, "env_kwargs": {"hidden": 4}}
    ctx = Context("made-up", False, (0,), 1, 1, tmp_path, tmp_path / "out", {}, {"r": regime})
    plain = digits_arm(ctx, "infocnf", "fixed", "r", 0)
    assert (plain.iterations, plain.eval_every) == (40, 10)
    assert dict(plain.env_kwargs) == {"batch_size": 16, "lr": 1e-3, "hidden": 4}
    told = digits_arm(ctx, "infocnf", "fixed", "r", 0, iterations=7, eval_every=0, extra_env={"hidden": 8})
    assert (told.iterations, told.eval_every) == (7, 0) and dict(told.env_kwargs)["hidden"] == 8


@pytest.mark.parametrize("quick", [True, False])
def test_run_study_hands_the_study_its_quick_or_full_config_and_seeds(tmp_path, monkeypatch, quick) -> None:
    """runs.reproduce.run_study: a ``--quick`` run gets the study's quick config (its quick
    settings merged in) and one seed, a full run its full config and all its seeds, with
    ``--set`` overrides on top of either; the result records what the study got."""
    import dataclasses

    from runs import reproduce
    from runs.studies import study

    real = study("leaderboard-scale")
    seen = []
    made_up = dataclasses.replace(real, run=lambda ctx: seen.append(ctx) or {}, plot=None)
    monkeypatch.setattr(reproduce, "study", lambda name: made_up)
    result = reproduce.run_study("leaderboard-scale", quick=quick, workdir=tmp_path / "w", out=tmp_path / "out",
                                 overrides={"trials": 3})
    (ctx,) = seen
    assert real.load_config(True) != real.load_config(False)
    assert ctx.config == {**real.load_config(quick), "trials": 3}
    assert result["config"] == json.loads(json.dumps(ctx.config))
    assert real.seeds > 1 and ctx.seeds == tuple(range(1 if quick else real.seeds)) and result["quick"] is quick
