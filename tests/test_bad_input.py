"""The bad-input matrix: every case is one clear error, and a CLI says it in one line (exit 2)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agents import fixed, reinforce
from agents.envs import make_env
from agents.loop import run_cli
from infocnf_env.checkpoint import CheckpointError

DIGITS = "InfoCNF-Digits-v0"
TOY = "InfoCNF-Toy1D-v0"


def _cli(main: Callable, *argv: str) -> Callable[[Path], object]:
    """A CLI case: ``main(argv)`` writing (if it got that far) to ``tmp/run``."""
    def call(tmp: Path):
        return main(["--iterations", "1", "--no-progress", "--no-tensorboard", "--out", str(tmp / "run"),
                     *[a.replace("{tmp}", str(tmp)) for a in argv]])
    call.cli = True
    return call


def _step(action) -> Callable[[Path], object]:
    def call(tmp: Path):
        env = make_env(TOY, {"hidden": 4, "batch_size": 8})
        env.reset(seed=0)
        return env.step(np.asarray(action, dtype=np.float32))
    return call


def _fake_run_dir(tmp: Path, checkpoint: bytes | None) -> None:
    """A run directory of agents.fixed on digits (its config; optionally a checkpoint file)."""
    run = tmp / "old"
    run.mkdir()
    config = {"env": DIGITS, "agent": "fixed", "env_kwargs": {"hidden": 4}, "args": {"env": DIGITS, "tol": 1e-5}}
    (run / "config.json").write_text(json.dumps(config))
    if checkpoint is not None:
        (run / "checkpoint.pt").write_bytes(checkpoint)


def _resume(checkpoint: bytes | None, *argv: str, main: Callable = fixed.main) -> Callable[[Path], object]:
    cli = _cli(main, "--resume", "{tmp}/old", *argv)

    def call(tmp: Path):
        if not (tmp / "old").exists():
            _fake_run_dir(tmp, checkpoint)
        return cli(tmp)
    call.cli = True
    return call


def _checkpoint_of_another_model() -> Callable[[Path], object]:
    cli = _cli(fixed.main, "--env", DIGITS, "--env-kwargs", "hidden=4", "checkpoint='{tmp}/other.pt'")

    def call(tmp: Path):
        if not (tmp / "other.pt").exists():
            make_env(DIGITS, {"hidden": 8, "solver": "rk4", "max_num_steps": 50}).unwrapped.save(tmp / "other.pt")
        return cli(tmp)
    call.cli = True
    return call


CASES = {
    "unknown env id": (_cli(fixed.main, "--env", "InfoCNF-Nope-v0"), ValueError,
                       r"^unknown env id 'InfoCNF-Nope-v0'; registered ids: .*InfoCNF-\{[A-Za-z0-9,]*Digits.*ODE-\{"),
    "unknown env kwarg": (_cli(fixed.main, "--env", DIGITS, "--env-kwargs", "hiden=4"), ValueError,
                          r"^unknown env kwarg.*'hiden'"),
    "NaN action": (_step([float("nan")]), ValueError, r"^action must be finite, got nan$"),
    "infinite action": (_step([float("inf")]), ValueError, r"^action must be finite, got inf$"),
    "action of shape (2,)": (_step([-3.0, -4.0]), ValueError, r"^action must hold one log10 tolerance .*\(2,\)"),
    "action of shape (0,)": (_step([]), ValueError, r"^action must hold one log10 tolerance .*\(0,\)"),
    "batch_size=0": (_cli(fixed.main, "--env", TOY, "--env-kwargs", "batch_size=0"), ValueError,
                     r"^batch_size must be a positive integer, got 0$"),
    "batch_size=-8": (_cli(reinforce.main, "--env", TOY, "--env-kwargs", "batch_size=-8"), ValueError,
                      r"^batch_size must be a positive integer, got -8$"),
    "batch_size=2.5": (_cli(fixed.main, "--env", TOY, "--env-kwargs", "batch_size=2.5"), ValueError,
                       r"^batch_size must be a positive integer, got 2.5$"),
    "sup_ratio=0": (_cli(fixed.main, "--env", TOY, "--env-kwargs", "sup_ratio=0"), ValueError,
                    r"^sup_ratio must be in \(0, 1\], got 0$"),
    "sup_ratio=-0.1": (_cli(fixed.main, "--env", TOY, "--env-kwargs", "sup_ratio=-0.1"), ValueError,
                       r"^sup_ratio must be in \(0, 1\], got -0.1$"),
    "sup_ratio=1.5": (_cli(fixed.main, "--env", TOY, "--env-kwargs", "sup_ratio=1.5"), ValueError,
                      r"^sup_ratio must be in \(0, 1\], got 1.5$"),
    "sup_ratio=1.5 (CCNF ignores it)": (_cli(fixed.main, "--env", "CCNF-Digits-v0", "--env-kwargs", "sup_ratio=1.5"),
                                        ValueError, r"^sup_ratio must be in \(0, 1\], got 1.5$"),
    "missing data root": (_cli(fixed.main, "--env", "InfoCNF-CIFAR10-v0", "--env-kwargs", "data_root='{tmp}/data'"),
                          FileNotFoundError, r"^cifar10 was not found under data root '.*/data'\. Pass download=True"),
    "no data root": (_cli(fixed.main, "--env", "InfoCNF-CIFAR10-v0"), ValueError,
                     r"^dataset 'cifar10' needs a data root"),
    "negative iterations": (_cli(fixed.main, "--env", TOY, "--iterations", "-1"), ValueError,
                            r"^--iterations must be >= 0, got -1$"),
    "checkpoint of another model": (_checkpoint_of_another_model(), CheckpointError,
                                    r"^checkpoint was written for another model: model\.config\.hidden: 8 in the "
                                    r"checkpoint, 4 here$"),
    "resume into a run of another env": (_resume(None, "--env", "CCNF-Digits-v0"), CheckpointError,
                                         r"^--resume '.*/old' is a run of fixed on InfoCNF-Digits-v0, not fixed on "
                                         r"CCNF-Digits-v0$"),
    "resume with another agent": (_resume(None, "--env", DIGITS, main=reinforce.main), CheckpointError,
                                  r"^--resume '.*/old' is a run of fixed on InfoCNF-Digits-v0, not reinforce on "
                                  r"InfoCNF-Digits-v0$"),
    "resume from a folder that is no run": (_cli(reinforce.main, "--resume", "{tmp}/nowhere"), CheckpointError,
                                            r"^--resume '.*/nowhere': no config.json, not a run directory$"),
    "corrupt checkpoint": (_resume(b"\x00garbage" * 100, "--env", DIGITS), CheckpointError,
                           r"^checkpoint '.*/old/checkpoint.pt' is truncated or corrupt \(\w+\)$"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_clear_error(tmp_path, capsys, case):
    call, error, pattern = CASES[case]
    with pytest.raises(error, match=pattern) as info:
        call(tmp_path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    if getattr(call, "cli", False):
        assert not (tmp_path / "run").exists()  # nothing written for a run that never started
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            run_cli(lambda: call(tmp_path))
        assert exit_info.value.code == 2
        captured = capsys.readouterr()
        assert captured.err == f"error: {message}\n" and captured.out == ""
