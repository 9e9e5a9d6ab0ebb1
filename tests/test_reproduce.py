"""runs.reproduce: every study in --quick mode writes a JSON of the documented schema and its figure.

The studies share one workdir (module-scoped), so ``digits-table`` trains the quick digits
flows once and the studies after it reuse them, as they do in a real reproduction; the tests
after the smoke runs read their quick results (running a study only where its result is absent).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from runs import reproduce
from runs.reproduce import STUDIES
from runs.run_cache import Arm
from runs.studies import study


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


def quick_result(name: str, dirs) -> dict:
    """Study ``name``'s quick result in the module's folder (run here if the smoke test has not)."""
    workdir, out = dirs
    path = out / f"{study(name).stem}.json"
    if not path.exists():
        reproduce.run_study(name, quick=True, workdir=workdir, out=out)
    return json.loads(path.read_text())


def test_unknown_study_is_one_clear_error(dirs):
    with pytest.raises(ValueError, match="valid:"):
        reproduce.run_study("table-9", quick=True, workdir=dirs[0], out=dirs[1])


@pytest.mark.parametrize("name", STUDIES)  # digits-table first: the later studies reuse its runs
def test_quick_study_writes_schema_and_plot(name, dirs):
    workdir, out = dirs
    s = study(name)
    reproduce.run_study(name, quick=True, workdir=workdir, out=out)
    result = json.loads((out / f"{s.stem}.json").read_text())
    for key in ("study", "quick", "seeds", "config", "regimes", "workdir", "rows", "plots", "wall_s"):
        assert key in result, key
    assert result["study"] == name and result["quick"] is True and result["seeds"] == [0]
    assert bool(result["regimes"]) == s.uses_digits_regimes
    if s.row_keys:
        assert result["rows"], "no rows"
        for row in result["rows"]:
            missing = [k for k in s.row_keys if k not in row]
            assert not missing, f"row {row.get('policy', row.get('split'))} lacks {missing}"
            assert all(f"{k[:-5]}_std" in row for k in row if k.endswith("_mean"))
    for path, value in _numbers({k: v for k, v in result.items() if k != "config"}):
        assert value is not None or path.rsplit(".", 1)[-1] in s.nullable_keys, f"null at {path}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert math.isfinite(value), f"non-finite {value} at {path}"
    assert bool(result["plots"]) == (s.plot is not None or name == "spirals")  # spirals draws from its models
    for png_name in result["plots"]:
        png = out / png_name
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert s.page.render({**_committed(s.page.needs), s.stem: result})  # its section reads what its run writes


def _committed(stems: tuple[str, ...]) -> dict:
    """The committed results a section reads beside its own."""
    root = Path(__file__).resolve().parents[1] / "runs" / "results"
    return {stem: json.loads((root / f"{stem}.json").read_text()) for stem in stems if (root / f"{stem}.json").exists()}


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
    for name in tables.tabled():  # the ones the quick tests above have written
        s = study(name)
        if not (out / f"{s.stem}.json").exists():
            continue
        result = json.loads((out / f"{s.stem}.json").read_text())
        text = tables.table(result, name)
        lines = text.splitlines()
        assert len(lines) == 2 + len(result["rows"]) + sum(len(result.get(k, [])) for k in s.table_extra), name
        assert all(line.count("|") == len(s.columns) + 1 for line in lines), name
        assert "nan" not in text.lower(), name
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


def test_bench_gpu_command_line_sets_the_studys_config(tmp_path):
    """The GPU command line runs the bench-gpu study on CPU with synthetic CIFAR10 and writes its JSON."""
    from runs import bench_gpu

    path = tmp_path / "bench.json"
    result = bench_gpu.main(["--device", "cpu", "--threads", "1", "--synthetic", "--iterations", "2", "--warmup", "0",
                             "--batch-size", "4", "--env-kwargs", "hidden=8", "--json", str(path), "--no-progress"])
    saved = json.loads(path.read_text())
    assert saved["study"] == "bench-gpu" and saved["config"]["env_kwargs"] == {"hidden": 8}
    assert saved["iterations_done"] == 2 and saved["timed_iterations"] == 2
    for key in ("seconds_per_iteration_median", "nfe_forward_mean", "nfe_backward_mean"):
        assert math.isfinite(result[key]) and result[key] > 0


def test_bench_gpu_refuses_settings_that_cannot_run(capsys):
    from runs import bench_gpu

    with pytest.raises(SystemExit):
        bench_gpu.main(["--synthetic", "--env", "InfoCNF-MNIST-v0"])
    assert "--synthetic writes CIFAR10-format data" in capsys.readouterr().err


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
