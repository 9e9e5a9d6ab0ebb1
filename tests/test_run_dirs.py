"""Run directories never lose data: refuse, lock, resume what was asked, stop cleanly.

Every test injects the fault a user meets (an existing ``--out``, a second process, a bare or
changed ``--resume``, a deleted log, a kill before the first checkpoint, SIGINT / SIGTERM, a
corrupt checkpoint) and checks the files on disk, byte for byte where nothing may change.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from flowkit import (
    QUIET,
    REPO,
    TINY,
    cli,
    env_kwargs,
    killed_after,
    read_jsonl,
    snapshot,
    subprocess_env,
    without_wall_time,
)

from agents import fixed, reinforce, sb3
from agents.loop import run_cli
from agents.run_dir import DirLock, RunDirError
from infocnf_env.checkpoint import CheckpointError, load_checkpoint


# ---------------------------------------------------------------------- no overwrite, validation first
def test_out_of_an_existing_run_is_refused_and_nothing_changes(tmp_path, capsys):
    run = tmp_path / "run"
    fixed.main(cli(run, "--tol", "1e-4", "--eval-every", "0"))
    capsys.readouterr()  # the run's own output (its run directory, its summary)
    before = snapshot(run)
    for main, extra in ((reinforce.main, ()), (fixed.main, ("--tol", "1e-3")), (fixed.main, ("--tol=0",))):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(lambda main=main, extra=extra: main(cli(run, *extra)))
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error: " in err
        if extra != ("--tol=0",):
            assert f"--resume {run}" in err
        assert snapshot(run) == before


def test_a_non_empty_folder_or_a_file_is_refused(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    with pytest.raises(RunDirError, match="exists and is not empty"):
        fixed.main(cli(folder))
    assert snapshot(folder) == {"mine.txt": b"keep me"}
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        fixed.main(cli(tmp_path / "file"))


@pytest.mark.parametrize("bad", [("--tol=0",), ("--schedule", "1e-3", "1e-4"), ("--eval-every", "-1"),
                                 ("--checkpoint-every", "-2"), ("--env-kwargs", "alpha=-1")])
def test_bad_flags_leave_no_folder_behind(tmp_path, bad):
    out = tmp_path / "new" / "run"
    with pytest.raises(ValueError):
        fixed.main(["--iterations", "2", "--out", str(out), *QUIET, *bad])
    assert not (tmp_path / "new").exists()


def test_unwritable_out_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: fixed.main(cli(Path("/dev/null/run"))))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot create run directory '/dev/null/run'") and err.count("\n") == 1


# ---------------------------------------------------------------------- one writer at a time
def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that locks ``folder`` (as a running training would) until killed."""
    code = ("import sys, time; from pathlib import Path; from agents.run_dir import DirLock; "
            "DirLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_refused_and_changes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    fixed.main(cli(run, "--tol", "1e-4", "--eval-every", "0", iterations=2))
    before = snapshot(run)
    holder = _hold_lock(run)
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_cli(lambda: fixed.main(["--resume", str(run), "--iterations", "4", "--no-progress"]))
        assert exit_info.value.code == 2
        assert "is in use by another process" in capsys.readouterr().err
        assert snapshot(run) == before
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        holder.kill()
        holder.wait()
        holder = _hold_lock(fresh)
        with pytest.raises(RunDirError, match="in use by another process"):
            fixed.main(cli(fresh))
        assert snapshot(fresh) == {}
    finally:
        holder.kill()
        holder.wait()
    fixed.main(["--resume", str(run), "--iterations", "4", "--no-progress"])  # the lock went with its process
    assert [r["iteration"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3, 4]


def test_the_lock_is_released_when_the_run_ends(tmp_path):
    run = tmp_path / "run"
    fixed.main(cli(run, "--eval-every", "0"))
    lock = DirLock(run)
    lock.acquire()  # would raise if the finished run still held it
    lock.release()


# ---------------------------------------------------------------------- resume what was asked
def test_bare_resume_keeps_the_runs_iterations_and_cadences(tmp_path, monkeypatch):
    run = tmp_path / "run"
    settings = ["--tol", "1e-4", "--eval-every", "2", "--checkpoint-every", "1"]
    fixed.main(cli(tmp_path / "straight", *settings, iterations=5))
    killed_after(monkeypatch, fixed.main, cli(run, *settings, iterations=5), 3)
    summary = fixed.main(["--resume", str(run)])  # no other flag: the run's own settings
    assert summary["iterations"] == 5
    assert without_wall_time(read_jsonl(run / "metrics.jsonl")) == \
        without_wall_time(read_jsonl(tmp_path / "straight" / "metrics.jsonl"))
    assert [r["iteration"] for r in read_jsonl(run / "eval.jsonl")] == [2, 4, 5]


@pytest.mark.parametrize("flag", [("--tol", "1e-3"), ("--checkpoint-every", "7"), ("--seed", "9"),
                                  ("--env-kwargs", "hidden=8"), ("--env", "CCNF-Digits-v0")])
def test_resume_refuses_flags_that_would_change_the_run(tmp_path, flag):
    run = tmp_path / "run"
    fixed.main(cli(run, "--tol", "1e-4", "--eval-every", "0"))
    before = snapshot(run)
    with pytest.raises(CheckpointError) as info:
        fixed.main(["--resume", str(run), "--iterations", "4", *flag])
    assert "\n" not in str(info.value)
    assert snapshot(run) == before


def test_resume_accepts_the_runs_own_values_and_records_a_longer_run(tmp_path):
    run = tmp_path / "run"
    fixed.main(cli(run, "--tol", "1e-4", "--eval-every", "0"))
    fixed.main(["--resume", str(run), "--iterations", "3", "--tol", "1e-4", "--no-progress"])
    config = json.loads((run / "config.json").read_text())
    assert config["args"]["iterations"] == 3
    assert config["resumes"] == [{"at_iteration": 2, "iterations": 3}]
    assert json.loads((run / "summary.json").read_text())["iterations"] == 3
    with pytest.raises(ValueError, match="has finished its 3 iterations"):
        fixed.main(["--resume", str(run)])
    with pytest.raises(ValueError, match="would end it before that"):
        fixed.main(["--resume", str(run), "--iterations", "2"])


def test_resume_with_a_missing_or_inconsistent_log_is_refused(tmp_path, monkeypatch):
    run = tmp_path / "run"
    killed_after(monkeypatch, fixed.main, cli(run, "--checkpoint-every", "1", "--eval-every", "0", iterations=6), 4)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # iteration 2 lost
    before = snapshot(run)
    with pytest.raises(CheckpointError, match=r"lacks iteration\(s\) 2 before the checkpoint's iteration 3"):
        fixed.main(["--resume", str(run)])
    (run / "metrics.jsonl").unlink()
    with pytest.raises(CheckpointError, match="metrics.jsonl is missing"):
        fixed.main(["--resume", str(run)])
    assert snapshot(run) == {k: v for k, v in before.items() if k != "metrics.jsonl"}


def test_a_run_killed_before_its_first_checkpoint_starts_over(tmp_path, monkeypatch, capsys):
    settings = ["--tol", "1e-4", "--eval-every", "0", "--checkpoint-every", "10"]
    fixed.main(cli(tmp_path / "straight", *settings, iterations=3))
    run = tmp_path / "run"
    killed_after(monkeypatch, fixed.main, cli(run, *settings, iterations=3), 2)
    assert not (run / "checkpoint.pt").exists() and len(read_jsonl(run / "metrics.jsonl")) == 2
    capsys.readouterr()
    fixed.main(["--resume", str(run)])
    assert "holds no checkpoint yet: starting the run over from iteration 0" in capsys.readouterr().err
    assert without_wall_time(read_jsonl(run / "metrics.jsonl")) == \
        without_wall_time(read_jsonl(tmp_path / "straight" / "metrics.jsonl"))


# ---------------------------------------------------------------------- corrupt latest checkpoint
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, monkeypatch, capsys):
    settings = ["--gate-lr", "0.05", "--eval-every", "0", "--checkpoint-every", "1"]
    reinforce.main(cli(tmp_path / "straight", *settings, iterations=5))
    run = tmp_path / "run"
    killed_after(monkeypatch, reinforce.main, cli(run, *settings, iterations=5), 4)
    assert load_checkpoint(run / "checkpoint.pt")["run"]["iteration"] == 3
    (run / "checkpoint.pt").write_bytes(b"\x00torn" * 50)
    capsys.readouterr()
    reinforce.main(["--resume", str(run)])
    err = capsys.readouterr().err
    assert "is truncated or corrupt" in err and "resuming from checkpoint.pt.prev (iteration 2)" in err
    assert without_wall_time(read_jsonl(run / "metrics.jsonl")) == \
        without_wall_time(read_jsonl(tmp_path / "straight" / "metrics.jsonl"))
    (run / "checkpoint.pt").write_bytes(b"bad")
    (run / "checkpoint.pt.prev").write_bytes(b"bad")
    with pytest.raises(CheckpointError, match=r"corrupt .*, and so is checkpoint.pt.prev$"):
        reinforce.main(["--resume", str(run), "--iterations", "6"])


def test_tensorboard_holds_each_step_once_after_a_resume(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    flags = ["--tol", "1e-4", "--eval-every", "0", "--checkpoint-every", "2", "--tensorboard"]
    argv = ["--iterations", "5", "--out", str(run), "--no-progress", *flags, *env_kwargs(TINY)]
    killed_after(monkeypatch, fixed.main, argv, 3)
    fixed.main(["--resume", str(run)])
    events = EventAccumulator(str(run))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == [1, 2, 3, 4, 5]
    assert [e.step for e in events.Scalars("train/log10_tol/block0")] == [1, 2, 3, 4, 5]
    assert events.Scalars("train/log10_tol/block2")[0].value == pytest.approx(-4.0)


# ---------------------------------------------------------------------- SIGINT / SIGTERM
SIGNAL_ITERATIONS = 8  # the signal comes after iteration 2 (polled every 10 ms), long before the end
SIGNAL_FLAGS = ["--iterations", str(SIGNAL_ITERATIONS), "--checkpoint-every", "1000", "--eval-every", "0", *QUIET,
                "--gate-lr", "0.05"]


@pytest.fixture(scope="module")
def uninterrupted_metrics(tmp_path_factory):
    """The metrics of the signal tests' run, trained without a signal."""
    out = tmp_path_factory.mktemp("straight") / "run"
    reinforce.main([*SIGNAL_FLAGS, "--out", str(out), *env_kwargs(TINY)])
    return without_wall_time(read_jsonl(out / "metrics.jsonl"))


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_with_a_checkpoint_and_a_resume_line(tmp_path, signum, code, uninterrupted_metrics):
    iterations, flags = SIGNAL_ITERATIONS, SIGNAL_FLAGS
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "agents.reinforce", *flags, "--out", str(run), *env_kwargs(TINY)],
                            cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    try:
        while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the run did not start in time"
            time.sleep(0.01)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert f"continue with: python -m agents.reinforce --resume {run}" in err
    stopped_at = load_checkpoint(run / "checkpoint.pt")["run"]["iteration"]
    assert [r["iteration"] for r in read_jsonl(metrics)] == list(range(1, stopped_at + 1))
    assert 2 <= stopped_at < iterations and not (run / "summary.json").exists()
    reinforce.main(["--resume", str(run)])
    assert without_wall_time(read_jsonl(metrics)) == uninterrupted_metrics


# ---------------------------------------------------------------------- SB3: resumed, not bit-exact
def test_sb3_resume_goes_on_without_repeating_its_sampling(tmp_path, monkeypatch):
    """A resumed PPO run continues its random streams (its tolerances do not repeat the first
    iterations') and logs every iteration once; it is not bit-exact (``agents.sb3``'s docstring):
    the iterations after the checkpoint differ from an uninterrupted run's."""
    flags = ["--algo", "ppo", "--eval-every", "0", "--checkpoint-every", "2"]
    sb3.main(cli(tmp_path / "straight", *flags, iterations=8))
    run = tmp_path / "run"
    killed_after(monkeypatch, sb3.main, cli(run, *flags, iterations=8), 5)
    sb3.main(["--resume", str(run)])
    resumed, straight = read_jsonl(run / "metrics.jsonl"), read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    assert [r["iteration"] for r in resumed] == list(range(1, 9))
    assert without_wall_time(resumed[:4]) == without_wall_time(straight[:4])  # up to the checkpoint
    tols = [r["tols"] for r in resumed]
    assert tols[4:6] != tols[0:2]  # the sampling did not restart from the first seed
    assert without_wall_time(resumed[4:]) != without_wall_time(straight[4:])  # documented: not bit-exact
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["agent"]["model"].dtype == torch.uint8 and (run / "sb3_model.zip").exists()
