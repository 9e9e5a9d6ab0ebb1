"""Multi-process training on CPU with the gloo backend: 2 processes, identical weights.

``torchrun -m agents.reinforce`` end to end (data sharding and gradient averaging equal one
process on the global batch), solver failures and a NaN on one rank only (every rank skips
together), the sharded batch stream, and SB3's single-process refusal.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from flowkit import REPO, read_jsonl, subprocess_env

from agents import fixed, reinforce, sb3
from agents.cli import parse_env_kwargs
from agents.envs import make_env
from agents.loop import run_cli
from flows import BatchStream, SolverError, load_dataset
from infocnf_env.checkpoint import load_checkpoint

TOY = "InfoCNF-Toy1D-v0"
#: Fixed-step Euler and the exact divergence make every example's computation independent of
#: the rest of its batch, and dropout 0 leaves no per-rank randomness in the loss: two ranks
#: on batches of 8 then compute exactly what one process computes on their union of 16.
EULER = ["hidden=8", "solver='euler'", "dropout=0.0", "eval_batch_size=500"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _common(out: Path, iterations: int) -> list[str]:
    return ["--iterations", str(iterations), "--eval-every", "0", "--checkpoint-every", "2", "--no-progress",
            "--no-tensorboard", "--out", str(out)]


def test_torchrun_two_processes_train_like_one_process_on_the_global_batch(tmp_path):
    """2 ranks x 8 examples == 1 process x 16 examples; gates and flow identical on both ranks."""
    iterations = 3
    run_dir = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           f"--master_port={_free_port()}", "-m", "agents.reinforce", "--env", TOY, "--init-std", "1.0",
           *_common(run_dir, iterations), "--env-kwargs", "batch_size=8", *EULER]
    proc = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # rank 0 alone wrote the run directory: one metrics line per iteration, one summary
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoint.pt", "checkpoint.pt.prev", "config.json", "eval.jsonl", "metrics.jsonl", "summary.json"]
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == list(range(1, iterations + 1))
    assert all(m["failed_ranks"] == 0 and m["skipped_update"] is False for m in metrics)
    assert len(read_jsonl(run_dir / "eval.jsonl")) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    first, second = summary["rank_checksums"]  # flow + gates, exact bytes, at the final checkpoint
    assert first == second

    # The same run in one process with the global batch of 16: the same flow weights (the
    # union of the ranks' batches is this batch; averaged gradients are DDP's mean).
    single = tmp_path / "single"
    reinforce.main(["--env", TOY, "--init-std", "1.0", *_common(single, iterations),
                    "--env-kwargs", "batch_size=16", *EULER])
    ddp_state = load_checkpoint(run_dir / "checkpoint.pt")
    one_state = load_checkpoint(single / "checkpoint.pt")
    ddp_model, one_model = ddp_state["env"]["model"], one_state["env"]["model"]
    assert ddp_model.keys() == one_model.keys()
    for key in ddp_model:
        torch.testing.assert_close(ddp_model[key], one_model[key], rtol=1e-5, atol=1e-6, msg=key)
    initial = make_env(TOY, {**parse_env_kwargs(["batch_size=16", *EULER]), "seed": 0}).unwrapped.model.state_dict()
    assert any(not torch.equal(initial[k], ddp_model[k]) for k in initial)  # the flow did train
    # per-rank state for an exact resume with the same number of ranks
    assert len(ddp_state["ranks"]) == 2
    assert not torch.equal(ddp_state["ranks"][0]["agent"]["generator"], ddp_state["ranks"][1]["agent"]["generator"])
    # per-rank tolerances: the ranks sampled different ones, so the gates (identical on both
    # ranks) differ from the one-process run's, which saw one episode per update
    gate = "0.head.linear.bias"
    assert not torch.equal(ddp_state["agent"]["gates"][gate], one_state["agent"]["gates"][gate])


# ---------------------------------------------------------------------- faults on one rank
#: (rank, episode) -> what goes wrong on that rank: a failed solve of the first block (on one
#: rank, on the other, on both at once) or NaN out of the last block's solve (a NaN loss).
FAULTS = {(1, 2): "fail", (0, 3): "fail", (1, 5): "nan", (0, 6): "fail", (1, 6): "fail"}
ITERATIONS = 8


def _worker(rank: int, port: int, out: str, result_dir: str) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import flows.cnf_block as cnf_block
    from infocnf_env.training_env import TrainingStepEnv

    real_solve, real_reset = cnf_block.solve, TrainingStepEnv.reset
    episode = {"n": 0, "block": 0}

    def reset(self, **kwargs):
        episode["n"] += 1
        episode["block"] = 0
        return real_reset(self, **kwargs)

    def solve(*args, **kwargs):
        episode["block"] += 1
        fault = FAULTS.get((rank, episode["n"])) if torch.is_grad_enabled() else None  # not in evaluation
        if fault == "fail" and episode["block"] == 1:
            raise SolverError("injected failure")
        out = real_solve(*args, **kwargs)
        return tuple(o * float("nan") for o in out) if fault == "nan" and episode["block"] == 2 else out

    cnf_block.solve, TrainingStepEnv.reset = solve, reset
    summary = fixed.main(["--env", TOY, "--tol", "1e-4", *_common(Path(out), ITERATIONS),
                          "--env-kwargs", "batch_size=8", "hidden=8", "eval_batch_size=500"])
    Path(result_dir, f"rank{rank}.json").write_text(json.dumps(summary, default=str))


def test_faults_on_one_rank_skip_the_update_on_every_rank(tmp_path):
    run_dir, results = tmp_path / "run", tmp_path / "results"
    results.mkdir()
    mp.spawn(_worker, args=(_free_port(), str(run_dir), str(results)), nprocs=2, join=True)
    metrics = read_jsonl(run_dir / "metrics.jsonl")  # rank 0's episodes
    assert [m["iteration"] for m in metrics] == list(range(1, ITERATIONS + 1))
    by_iteration = {m["iteration"]: m for m in metrics}
    for episode in range(1, ITERATIONS + 1):
        m = by_iteration[episode]
        failed = sum(FAULTS.get((r, episode)) == "fail" for r in (0, 1))
        nan = any(FAULTS.get((r, episode)) == "nan" for r in (0, 1))
        assert m["failed_ranks"] == failed, episode
        if FAULTS.get((0, episode)) == "fail":
            assert m["solver_error"] == "injected failure" and "skipped_update" not in m
        else:  # rank 0 finished its episode; it updates only if no rank failed or saw a NaN
            assert "solver_error" not in m
            assert m["skipped_update"] is (failed > 0 or nan), episode
    state = load_checkpoint(run_dir / "checkpoint.pt")
    clean = sum(1 for e in range(1, ITERATIONS + 1) if all((r, e) not in FAULTS for r in (0, 1)))
    nan_episodes = sum(1 for e in range(1, ITERATIONS + 1) if any(FAULTS.get((r, e)) == "nan" for r in (0, 1))
                       and not any(FAULTS.get((r, e)) == "fail" for r in (0, 1)))
    # the flow's iteration counter (epochs, learning-rate schedule) agrees on every rank: it
    # counts episodes that no rank failed; one of them (the NaN) was skipped
    assert state["env"]["counters"]["iteration"] == clean + nan_episodes
    assert all(torch.isfinite(v).all() for v in state["env"]["model"].values() if v.is_floating_point())
    summaries = [json.loads((results / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert summaries[0]["rank_checksums"] == [summaries[1]["checksum"]] * 2


# ---------------------------------------------------------------------- pieces
def test_sharded_stream_splits_the_global_batch():
    data = load_dataset("toy1d", "train")
    single = BatchStream(data, 12, seed=3)
    ranks = [BatchStream(data, 4, seed=3, rank=r, world_size=3) for r in range(3)]
    assert ranks[0].batches_per_epoch == single.batches_per_epoch == len(data) // 12
    for _ in range(single.batches_per_epoch + 2):  # across an epoch boundary
        x, y = single.next()
        parts = [s.next() for s in ranks]
        torch.testing.assert_close(torch.cat([p[0] for p in parts]), x, rtol=0, atol=0)
        torch.testing.assert_close(torch.cat([p[1] for p in parts]), y, rtol=0, atol=0)
    assert ranks[1].epoch == single.epoch == 1
    with pytest.raises(ValueError, match="rank"):
        BatchStream(data, 4, rank=2, world_size=2)


@pytest.mark.parametrize("rank", ["0", "1"])
def test_sb3_refuses_to_run_under_torchrun(tmp_path, monkeypatch, capsys, rank):
    """One line on rank 0, nothing on the others (which wait before they exit, so that rank 0
    fails first and torchrun reports its line), and the exit status of bad input on every rank."""
    import agents.loop

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    waits: list[float] = []
    monkeypatch.setattr(agents.loop.time, "sleep", waits.append)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: sb3.main(["--out", str(tmp_path / "run"), "--no-progress"]))
    assert exit_info.value.code == 2
    assert (waits == []) if rank == "0" else (len(waits) == 1 and waits[0] > 0)
    err = capsys.readouterr().err
    if rank == "0":
        assert err.count("\n") == 1 and err.startswith("error: agents.sb3 runs in one process")
    else:
        assert err == ""
    assert not (tmp_path / "run").exists()


def test_sb3_under_torchrun_fails_with_one_line_of_its_own(tmp_path):
    """The launcher itself: the project's line once, no Python traceback from the workers, a
    non-zero status (torchrun adds its own report of the failed workers)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc_per_node=2", "-m", "agents.sb3", "--out", str(tmp_path / "run"),
                           "--no-progress"], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=120)
    output = proc.stdout + proc.stderr
    assert output.count("error: agents.sb3 runs in one process") == 1, output
    assert "agents/" not in output.split("ChildFailedError")[0], output  # no frame of the project's code
    assert proc.returncode != 0 and not (tmp_path / "run").exists()
