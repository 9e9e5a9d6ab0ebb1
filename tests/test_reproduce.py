"""runs.reproduce: every study in --quick mode writes a JSON of the documented schema and a PNG.

The studies share one workdir (module-scoped), so ``digits-table`` trains the quick digits
flows once and the studies after it reuse them, as they do in a real reproduction.
"""

from __future__ import annotations

import json
import math

import pytest

from runs import reproduce
from runs.reproduce import ROW_KEYS, STUDIES
from runs.run_cache import Arm
from runs.studies import study_module


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    return root / "work", root / "results"


def _numbers(obj, path=""):
    """Every leaf of a JSON value with its path."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _numbers(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _numbers(value, f"{path}[{i}]")
    else:
        yield path, obj


def test_every_study_has_a_config_schema_plot_table_and_section():
    assert set(STUDIES) == set(ROW_KEYS) == set(reproduce.RUNNERS)
    for study in STUDIES:
        full, quick = reproduce.load_config(study, False), reproduce.load_config(study, True)
        assert isinstance(full, dict) and isinstance(quick, dict)
        module = study_module(study)
        assert callable(module.plot) and callable(module.section), study
        assert isinstance(module.TITLE, str) and isinstance(module.PAGE_ORDER, int), study
        assert study in module.NEEDS, f"{study}'s section does not need its own result"
        if study != "curves":  # its rows are series: no table
            assert all(len(c) == 3 for c in module.COLUMNS), study


def test_unknown_study_is_one_clear_error(dirs):
    with pytest.raises(ValueError, match="valid:"):
        reproduce.run_study("table-9", quick=True, workdir=dirs[0], out=dirs[1])


@pytest.mark.parametrize("study", STUDIES)  # digits-table first: the later studies reuse its runs
def test_quick_study_writes_schema_and_plot(study, dirs):
    workdir, out = dirs
    reproduce.run_study(study, quick=True, workdir=workdir, out=out)
    result = json.loads((out / f"{study}.json").read_text())
    for key in ("study", "quick", "seeds", "config", "rows", "plots", "wall_s"):
        assert key in result, key
    assert result["study"] == study and result["quick"] is True and result["seeds"] == [0]
    assert result["rows"], "no rows"
    for row in result["rows"]:
        missing = [k for k in ROW_KEYS[study] if k not in row]
        assert not missing, f"row {row.get('policy', row.get('split'))} lacks {missing}"
        assert all(f"{k[:-5]}_std" in row for k in row if k.endswith("_mean"))
    nullable = getattr(study_module(study), "NULLABLE_KEYS", ())  # documented by the study
    for path, value in _numbers({k: v for k, v in result.items() if k != "config"}):
        assert value is not None or path.rsplit(".", 1)[-1] in nullable, f"null at {path}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert math.isfinite(value), f"non-finite {value} at {path}"
    for name in result["plots"]:
        png = out / name
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_digits_table_rows_and_targets(dirs):
    workdir, out = dirs
    path = out / "digits-table.json"
    if not path.exists():
        reproduce.run_study("digits-table", quick=True, workdir=workdir, out=out)
    result = json.loads(path.read_text())
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
    workdir, out = dirs
    path = out / "beta.json"
    if not path.exists():
        reproduce.run_study("beta", quick=True, workdir=workdir, out=out)
    result = json.loads(path.read_text())
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
    for study in STUDIES:  # the ones the quick tests above have written
        if study == "curves" or not (out / f"{study}.json").exists():
            continue
        result = json.loads((out / f"{study}.json").read_text())
        text = tables.table(result, study)
        lines = text.splitlines()
        assert len(lines) == 2 + len(result["rows"]) + len(result.get("front", [])), study
        assert all(line.count("|") == len(study_module(study).COLUMNS) + 1 for line in lines), study
        assert "nan" not in text.lower(), study
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
    for changed in ({"seed": 1}, {"iterations": 11}, {"agent_args": ("--tol", "1e-4")},
                    {"env_kwargs": (("hidden", 8),)}):
        assert Arm(**{**arm.__dict__, **changed}).key != arm.key


def test_bench_gpu_cpu_smoke(tmp_path):
    """The prepared GPU benchmark runs on CPU with synthetic CIFAR10 and writes its JSON."""
    from runs import bench_gpu

    path = tmp_path / "bench.json"
    result = bench_gpu.main(["--device", "cpu", "--threads", "1", "--synthetic", "--iterations", "2", "--warmup", "0",
                             "--batch-size", "4", "--env-kwargs", "hidden=8", "--json", str(path), "--no-progress"])
    saved = json.loads(path.read_text())
    assert saved["iterations_done"] == 2 and saved["timed_iterations"] == 2
    for key in ("seconds_per_iteration_median", "nfe_forward_mean", "nfe_backward_mean"):
        assert math.isfinite(result[key]) and result[key] > 0


def test_bench_flow_quick_writes_the_sweep_with_warm_starts(tmp_path):
    """NFE against the tolerance, with the heuristic start and warm-started, and the per-NFE cost."""
    from runs import bench_flow

    path = tmp_path / "bench_flow.json"
    bench_flow.main(["--quick", "--threads", "1", "--json", str(path)])
    saved = json.loads(path.read_text())
    assert saved["block_cost"] and all(c["nfe_ours"] == c["nfe_minimal"] for c in saved["block_cost"])
    for point in saved["tolerance_sweep"]:
        assert 0 < point["nfe_forward_warm"] <= point["nfe_forward"]
        if point["tol"] <= 1e-4:  # both solves are accurate: the same density
            assert abs(point["bits_per_dim_warm"] - point["bits_per_dim"]) < 1e-3


def test_the_threads_studys_busy_neighbour_runs_until_the_block_ends():
    """The load of the ``threads`` study (its quick run leaves it out, to stay quick)."""
    from runs.studies import threads

    with threads.load("busy", 16) as proc:
        assert proc is not None and proc.poll() is None  # running, busy
    assert proc.poll() is not None  # stopped with the block
    with threads.load("idle", 16) as none:
        assert none is None


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


def test_the_threads_study_times_the_iterations_after_the_warmup(tmp_path, monkeypatch):
    from runs.studies import threads

    walls = [10.0, 11.0, 13.0, 16.0, 20.0]  # cumulative wall time after each iteration
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i + 1, "wall_time": w}) + "\n"
                                                    for i, w in enumerate(walls)))
    assert threads._rate(tmp_path, warmup=2) == pytest.approx(3 / (20.0 - 11.0))  # iterations 3..5
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # only --threads decides a child's threads
    assert not set(threads.THREAD_VARIABLES) & set(threads._child_env())
