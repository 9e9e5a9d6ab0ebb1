"""Runs that survive: SIGKILL and resume, solvers failing at random, NaN losses and gradients."""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from flowkit import DIGITS_ID, REPO, TINY, env_kwargs, read_jsonl, subprocess_env, without_wall_time

import flows.cnf_block as cnf_block
from agents import fixed, reinforce, sb3
from agents.runner import Run
from flows import SolverError
from infocnf_env.checkpoint import load_checkpoint

DIGITS = ["--env", DIGITS_ID, *env_kwargs({**TINY, "eval_batch_size": 300})]
TOY = ["--env", "InfoCNF-Toy1D-v0", "--env-kwargs", "batch_size=16", "hidden=8", "eval_batch_size=500"]


def _all_finite(obj) -> bool:
    if isinstance(obj, torch.Tensor):
        return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_all_finite(v) for v in obj)
    return not isinstance(obj, float) or math.isfinite(obj)


# ---------------------------------------------------------------------- SIGKILL, then --resume
#: Per agent family: its CLI, its own flags, whether resume is bit-exact (agents.sb3's docstring).
#: SAC's replay buffer is saved with every checkpoint: a small one keeps the test short.
FAMILIES = {"reinforce": (reinforce, ["--gate-lr", "0.05"], True), "fixed": (fixed, ["--tol", "1e-4"], True),
            "sb3": (sb3, ["--algo", "sac", "--algo-kwargs", "buffer_size=1000"], False)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sigkill_at_a_random_iteration_then_resume(tmp_path, family):
    cli, own_flags, exact = FAMILIES[family]
    iterations = 7
    kill_after = random.Random(6).randint(2, iterations - 3)  # lines in metrics.jsonl before the kill
    flags = ["--iterations", str(iterations), "--checkpoint-every", "1", "--eval-every", "0", "--no-progress",
             "--no-tensorboard", *own_flags, "--seed", "3"]
    killed = tmp_path / "killed"
    env = subprocess_env()
    proc = subprocess.Popen([sys.executable, "-m", f"agents.{family}", *flags, "--out", str(killed), *DIGITS],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = killed / "metrics.jsonl"
    deadline = time.monotonic() + 180
    try:
        while not (metrics.exists() and metrics.read_text().count("\n") >= kill_after):
            assert proc.poll() is None, f"the run ended before the kill: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "the run did not reach the kill point in time"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists()
    logged = metrics.read_text().count("\n")
    assert kill_after <= logged < iterations
    checkpointed = load_checkpoint(killed / "checkpoint.pt")["run"]["iteration"]
    assert checkpointed >= kill_after - 1  # atomic: never torn

    cli.main(["--resume", str(killed), *flags])
    cli.main([*flags, "--out", str(tmp_path / "straight"), *DIGITS])
    resumed, straight = read_jsonl(metrics), read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    assert [r["iteration"] for r in resumed] == list(range(1, iterations + 1))
    assert without_wall_time(resumed[:checkpointed]) == without_wall_time(straight[:checkpointed])
    if not exact:  # SB3's learn loop restarts: the documented difference
        assert without_wall_time(resumed) != without_wall_time(straight)
        return
    assert without_wall_time(resumed) == without_wall_time(straight)
    a, b = load_checkpoint(killed / "checkpoint.pt"), load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    for part, key in (("env", "model"), ("agent", "gates")) if family == "reinforce" else (("env", "model"),):
        assert a[part][key].keys() == b[part][key].keys()
        assert all(torch.equal(a[part][key][k], b[part][key][k]) for k in a[part][key]), part
    summaries = [json.loads((d / "summary.json").read_text()) for d in (killed, tmp_path / "straight")]
    assert summaries[0]["test"] == summaries[1]["test"]


# ---------------------------------------------------------------------- solver failing at random
def test_solver_failing_at_random_blocks_for_many_iterations(tmp_path, monkeypatch):
    iterations, rng, calls = 30, random.Random(0), {"training": 0, "failed": 0}
    real_solve = cnf_block.solve

    def flaky_solve(*args, **kwargs):
        if torch.is_grad_enabled():  # training solves; the test evaluation stays reliable
            calls["training"] += 1
            if rng.random() < 0.3:
                calls["failed"] += 1
                raise SolverError("injected step-size underflow")
        return real_solve(*args, **kwargs)

    monkeypatch.setattr(cnf_block, "solve", flaky_solve)
    run_dir = tmp_path / "run"
    summary = reinforce.main(["--iterations", str(iterations), "--checkpoint-every", "7", "--eval-every", "10",
                              "--eval-batches", "1", "--no-progress", "--no-tensorboard", "--out", str(run_dir), *TOY])
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert summary["iterations"] == iterations and [m["iteration"] for m in metrics] == list(range(1, iterations + 1))
    truncated = [m for m in metrics if "solver_error" in m]
    assert calls["failed"] == len(truncated) == summary["solver_failures"]
    assert 5 <= len(truncated) <= 25, f"{len(truncated)} of {iterations} episodes failed (30% of solves)"
    for m in truncated:
        assert m["solver_error"] == "injected step-size underflow" and "loss" not in m
        assert 1 <= len(m["tols"]) <= 2  # the episode ended at the block that failed
    for m in metrics:
        if "solver_error" not in m:
            assert m["skipped_update"] is False and math.isfinite(m["loss"])
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["env"]["counters"]["solver_failures"] == len(truncated)
    assert state["env"]["counters"]["iteration"] == iterations - len(truncated)  # flow updates
    assert _all_finite(state), "non-finite weights or optimizer state in the checkpoint"
    assert all(math.isfinite(v) for k, v in summary["test"].items() if k != "error")
    assert len(read_jsonl(run_dir / "eval.jsonl")) == 3  # iterations 10 and 20, then the final one


# ---------------------------------------------------------------------- NaN loss, NaN gradient
class _NaNGradient(torch.autograd.Function):
    """Identity forward; NaN gradient backward (a finite loss with a non-finite gradient)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


@pytest.mark.parametrize("fault, iteration", [("nan_loss", 2), ("nan_gradient", 4)])
def test_non_finite_loss_or_gradient_skips_the_update(tmp_path, monkeypatch, fault, iteration):
    real_solve = cnf_block.solve
    episode = {"n": 0, "solves": 0}

    def solve(*args, **kwargs):
        out = real_solve(*args, **kwargs)
        if not torch.is_grad_enabled():
            return out
        episode["solves"] += 1
        if episode["solves"] % 2 == 0 and episode["solves"] // 2 == iteration:  # the last of 2 blocks
            if fault == "nan_loss":
                return tuple(o * float("nan") for o in out)
            return tuple(_NaNGradient.apply(o) for o in out)
        return out

    weights: list[dict[str, torch.Tensor]] = []
    real_after = Run.after_episode

    def after_episode(self, *args, **kwargs):
        weights.append({k: v.clone() for k, v in self.env.unwrapped.model.state_dict().items()})
        return real_after(self, *args, **kwargs)

    monkeypatch.setattr(cnf_block, "solve", solve)
    monkeypatch.setattr(Run, "after_episode", after_episode)
    run_dir = tmp_path / "run"
    summary = fixed.main(["--iterations", "5", "--tol", "1e-4", "--checkpoint-every", "1", "--eval-every", "0",
                          "--no-progress", "--no-tensorboard", "--out", str(run_dir), *TOY])
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["skipped_update"] for m in metrics] == [m["iteration"] == iteration for m in metrics]
    assert math.isfinite(metrics[iteration - 1]["loss"]) is (fault == "nan_gradient")
    assert summary["skipped_updates"] == 1 and summary["solver_failures"] == 0
    for i in range(1, 5):  # weights after episode i vs after episode i + 1
        same = all(torch.equal(weights[i - 1][k], weights[i][k]) for k in weights[i])
        assert same is (i + 1 == iteration), f"episode {i + 1}"
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["env"]["counters"]["skipped_updates"] == 1 and state["env"]["counters"]["iteration"] == 5
    assert _all_finite(state["env"]["model"]) and _all_finite(state["env"]["optimizer"])


# ---------------------------------------------------------------------- the pieces a kill can hit
def test_checkpoint_write_keeps_the_previous_one(tmp_path):
    from infocnf_env.checkpoint import save_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"n": torch.tensor(1)}, path)
    save_checkpoint({"n": torch.tensor(2)}, path)
    assert int(load_checkpoint(path)["n"]) == 2 and int(load_checkpoint(tmp_path / "checkpoint.pt.prev")["n"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoint.pt.prev"]  # no temporaries


def test_resume_drops_lines_after_the_checkpoint_and_a_partial_line(tmp_path):
    from agents.run_dir import truncate_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 1}\n{"iteration": 2}\n{"iteration": 3}\n{"itera')
    truncate_jsonl(path, 2)
    assert path.read_text() == '{"iteration": 1}\n{"iteration": 2}\n'
