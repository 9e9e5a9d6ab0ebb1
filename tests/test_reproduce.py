"""runs.reproduce, the studies that train digits flows: each in --quick mode writes a JSON of
the documented schema and its figure (:mod:`reproduce_check`).

The studies share one workdir (module-scoped), so ``digits-table`` trains the quick digits
flows once and the studies after it reuse them, as they do in a real reproduction; the tests
after the smoke runs read their quick results (running a study only where its result is absent).
The studies that train no digits flow are ``tests/test_reproduce_tasks.py``'s.
"""

from __future__ import annotations

import json
import math

import pytest
from reproduce_check import check_quick_study, check_tables, quick_result

from runs import reproduce
from runs.reproduce import STUDIES
from runs.run_cache import Arm
from runs.studies import study

#: The studies that train digits flows, digits-table first: the later ones reuse its runs
#: (the quick runs of ``frozen`` and ``tol-integral`` are checked by their own tests below).
DIGITS_STUDIES = [name for name in STUDIES if study(name).uses_digits_regimes]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    return root / "work", root / "results"


@pytest.mark.parametrize("name", [name for name in DIGITS_STUDIES if name not in ("frozen", "tol-integral")])
def test_quick_study_writes_schema_and_plot(name, dirs):
    check_quick_study(name, dirs)


def test_the_frozen_studys_quick_run_scores_on_the_test_split(dirs, monkeypatch):
    from infocnf_env.tasks import FlowTask

    splits: list[str] = []
    data = FlowTask.data

    def recorded(self, split):
        splits.append(split)
        return data(self, split)

    monkeypatch.setattr(FlowTask, "data", recorded)
    check_quick_study("frozen", dirs)
    assert splits and set(splits) == {"test"}


def test_the_tol_integral_studys_learned_tolerance_is_the_mean_of_the_policys_choices(dirs, monkeypatch):
    from runs.studies import tol_integral

    policy_pass = tol_integral.policy_pass

    def three_choices(*args, **kwargs):  # the policy's per-block choices replaced by three known ones
        out, _, rest = policy_pass(*args, **kwargs)
        return out, [-5.0, -4.0, 0.0], rest

    monkeypatch.setattr(tol_integral, "policy_pass", three_choices)
    check_quick_study("tol-integral", dirs)
    (learned,) = [r for r in quick_result("tol-integral", dirs)["rows"] if r["policy"] == "reinforce"]
    assert learned["log10_tol_mean"] == pytest.approx(-3.0) and learned["tol"] == pytest.approx(1e-3)


def test_digits_table_rows_and_targets(dirs):
    result = quick_result("digits-table", dirs)
    arms = {(r["model"], r["policy"], r["batch"]) for r in result["rows"]}
    assert arms == {(m, p, b) for m, p in (("ccnf", "fixed"), ("infocnf", "fixed"), ("infocnf", "reinforce"))
                    for b in ("small", "large")}
    assert {t["batch"] for t in result["targets"]} == {"small", "large"}
    assert all("nfe_ratio" in t and "error_ratio" in t for t in result["targets"])


def test_beta_study_reaches_cifar10_supervision_and_compares_like_for_like(dirs):
    from runs.studies import beta

    # beta x D x ln 2: 0.5 x 3072 x ln 2 in the authors' CIFAR10 runs; the study's largest beta matches it on digits
    assert beta.supervision_ratio(0.5, 3072) == pytest.approx(1064.7, abs=0.1)
    betas = beta.CONFIG["betas"]
    assert set(betas) == {"small", "large"} and len(betas["small"]) >= 4
    for values in betas.values():
        assert min(values) == 0.5 and beta.supervision_ratio(max(values), 64) == pytest.approx(1065, rel=0.01)
    workdir, _ = dirs
    result = quick_result("beta", dirs)
    assert 0 < result["pixel_probe_error"] < 0.5
    rows = {(r["model"], r["batch"], r["beta"]): r for r in result["rows"]}
    for c in result["comparisons"]:
        info, ccnf = rows["infocnf", c["batch"], c["beta"]], rows["ccnf", c["batch"], c["beta"]]
        assert c["error_ratio"] == pytest.approx(info["test_error_mean"] / ccnf["test_error_mean"])
    for (_, _, b), r in rows.items():
        assert r["supervision_ratio"] == pytest.approx(b * 64 * math.log(2))
        env_kwargs = json.loads((workdir / "runs" / r["run_dirs"][0] / "config.json").read_text())["env_kwargs"]
        assert env_kwargs["beta"] == b and env_kwargs["head_init"] == "linear_zeros"


def test_tables_render_every_quick_result(dirs):
    from runs import tables

    out = dirs[1]
    assert check_tables(out) >= 5
    printed = tables.main(["digits-table", "--results", str(out)])
    assert printed.startswith("### digits-table") and "small batch: learned NFE" in printed


def test_runs_are_cached_by_config(dirs, capsys):
    workdir, out = dirs
    reproduce.run_study("curves", quick=True, workdir=workdir, out=out)  # digits-table's runs exist by now
    assert "0 to train" in capsys.readouterr().out


def test_arm_key_changes_with_training_settings():
    arm = Arm("x", "fixed", "InfoCNF-Digits-v0", 0, 10, 0, ("--tol", "1e-5"), (("hidden", 4),))
    same = Arm("other-label", "fixed", "InfoCNF-Digits-v0", 0, 10, 0, ("--tol", "1e-5"), (("hidden", 4),))
    assert arm.key == same.key
    for changed in ({"module": "reinforce"}, {"env": "CCNF-Digits-v0"}, {"seed": 1}, {"iterations": 11},
                    {"eval_every": 5}, {"agent_args": ("--tol", "1e-4")}, {"env_kwargs": (("hidden", 8),)},
                    {"task_key": "other-flows"}):
        assert Arm(**{**arm.__dict__, **changed}).key != arm.key


def test_a_regimes_learning_rate_drops_once_at_the_epoch_nearest_its_decay_point():
    """lr_decay_at x iterations is where the drop is asked for; the flows decay at epoch
    boundaries, so the drop comes at the nearest one (never an epoch early or late)."""
    from runs.matrix import DIGITS_TRAIN_SIZE, QUICK_REGIMES, REGIMES
    from runs.run_cache import _lr_milestones

    for name, regime in {**REGIMES, **{f"quick {k}": v for k, v in QUICK_REGIMES.items()}}.items():
        per_epoch = DIGITS_TRAIN_SIZE // regime["batch_size"]
        asked = regime["lr_decay_at"] * regime["iterations"]
        milestones = _lr_milestones(regime)
        if round(asked / per_epoch) < 1 or round(asked / per_epoch) * per_epoch >= regime["iterations"]:
            assert milestones == (), name  # no drop before the first epoch ends or after the run
            continue
        ((epoch, lr),) = milestones
        assert abs(epoch * per_epoch - asked) <= per_epoch / 2, name
        assert lr == pytest.approx(regime["lr"] * regime["lr_decay"]), name
    assert _lr_milestones(REGIMES["large"])[0][0] == 8  # 23.1 iterations of 3 per epoch: 7.7 epochs


def test_reinforce_arms_run_the_papers_gaussian_gates_without_changing_their_cache_key(tmp_path):
    """The committed studies ran the paper's Gaussian gates: every REINFORCE run of runs/ passes
    them (agents.reinforce's default is now the squashed gate), unless a run chooses its own."""
    plain = Arm("x", "reinforce", "InfoCNF-Digits-v0", 0, 10, 0, ("--gate-lr", "0.03"), (("hidden", 4),))
    argv = plain.argv(tmp_path / "run")
    assert argv[argv.index("--gate-dist") + 1] == "gaussian" and argv.count("--gate-dist") == 1
    assert "--gate-dist" not in plain.agent_args  # the cache key of the committed runs is what it was
    own = Arm("x", "reinforce", "InfoCNF-Digits-v0", 0, 10, 0, ("--gate-dist", "squashed"), ())
    argv = own.argv(tmp_path / "run")
    assert argv[argv.index("--gate-dist") + 1] == "squashed" and argv.count("--gate-dist") == 1
    assert "--gate-dist" not in Arm("x", "fixed", "InfoCNF-Digits-v0", 0, 10, 0, ("--tol", "1e-5"), ()).argv(tmp_path)
    resumed = plain.argv(tmp_path / "run", resume=True, threads=2)
    assert resumed[resumed.index("--threads") + 1] == "2" and "gaussian" in resumed


def test_a_cached_run_counts_as_finished_only_at_its_arms_iterations(tmp_path, monkeypatch):
    """run_arms trains every arm not yet finished: a run directory whose summary.json records
    fewer iterations than the arm asks for (a shorter run) is trained on, not reused."""
    from runs import run_cache
    from runs.run_cache import Context, run_arms

    ctx = Context("cache", False, (0,), 1, 1, tmp_path, tmp_path / "out", {}, {})
    arms = [Arm(label, "fixed", "InfoCNF-Digits-v0", 0, 5, 0, ("--tol", tol), ()) for label, tol in
            (("done", "1e-5"), ("short", "1e-4"), ("new", "1e-3"))]

    def write_summary(arm, iterations):
        run_dir = arm.run_dir(ctx.runs_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.json").write_text(json.dumps({"iterations": iterations}))

    write_summary(arms[0], 5)
    write_summary(arms[1], 3)
    trained = []
    monkeypatch.setattr(run_cache, "_train", lambda arm, ctx, in_subprocess: (trained.append(arm.label),
                                                                               write_summary(arm, arm.iterations)))
    summaries = run_arms(ctx, arms)
    assert trained == ["short", "new"]
    assert all(summaries[a]["iterations"] == 5 for a in arms)


def test_a_probes_error_is_its_error_on_the_held_out_set():
    import numpy as np

    from runs.studies.common import probe_error

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3.0, 0.3, (20, 2)), rng.normal(3.0, 0.3, (20, 2))])
    y = np.repeat([0, 1], 20)
    assert probe_error((x, y), (x, y)) == 0.0
    assert probe_error((x, y), (x, 1 - y)) == 1.0  # the held-out labels flipped: every point misread


def test_a_rows_figures_against_the_fixed_row_are_relative_to_the_fixed_row():
    """vs_fixed: the training NFE as a ratio to the fixed-tolerance row's and the test bits/dim
    as a relative difference from it (positive: worse than fixed)."""
    from runs.studies.common import vs_fixed

    fixed = {"nfe_mean": 200.0, "bits_per_dim_mean": 2.0}
    learned = {"nfe_mean": 150.0, "bits_per_dim_mean": 2.2}
    out = vs_fixed(learned, fixed)
    assert out["nfe_ratio_vs_fixed"] == pytest.approx(0.75)
    assert out["bits_per_dim_rel_diff_vs_fixed"] == pytest.approx(0.1)  # 10% more bits than fixed
    assert vs_fixed(fixed, fixed) == {"nfe_ratio_vs_fixed": 1.0, "bits_per_dim_rel_diff_vs_fixed": 0.0}
