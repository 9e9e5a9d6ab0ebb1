"""The bad-input matrix: every case is one clear error, and a CLI says it in one line (exit 2)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agents import fixed, reinforce, sb3
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
                            r"^--iterations must be >= 1 \(a run trains at least one iteration\), got -1$"),
    "zero iterations": (_cli(reinforce.main, "--env", TOY, "--iterations", "0"), ValueError,
                        r"^--iterations must be >= 1 \(a run trains at least one iteration\), got 0$"),
    "an id of another package": (_cli(reinforce.main, "--env", "CartPole-v1"), ValueError,
                                 r"^'CartPole-v1' is not an InfoCNF id; the InfoCNF ids \(README\.md\): "
                                 r"InfoCNF-\{.*ODE-\{"),
    "negative tolerance": (_cli(fixed.main, "--env", TOY, "--tol", "-1e-5"), ValueError,
                           r"^--tol must be a positive finite tolerance, got -1e-05$"),
    "negative schedule": (_cli(fixed.main, "--env", TOY, "--schedule", "1e-3", "-1e-4"), ValueError,
                          r"^--schedule must be positive finite tolerances, got 0.001 -0.0001$"),
    "negative policy lr": (_cli(sb3.main, "--env", TOY, "--policy-lr", "-1"), ValueError,
                           r"^--policy-lr must be a positive number, got -1.0$"),
    "zero threads": (_cli(fixed.main, "--env", TOY, "--threads", "0"), ValueError,
                     r"^--threads must be a positive integer, got 0$"),
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


#: Usage errors: (CLI module, argv, the error line's start).
USAGE = {
    "sb3 --algo dqn": ("agents.sb3", ["--algo", "dqn"],
                       "error: argument --algo: invalid choice: 'dqn' (choose from 'ppo', 'sac', 'a2c', 'td3')"),
    "reproduce nosuchstudy": ("runs.reproduce", ["nosuchstudy"],
                              "error: argument study: invalid choice: 'nosuchstudy' (choose from 'digits-table', "),
    "fixed --tol without a value": ("agents.fixed", ["--tol"], "error: argument --tol: expected one argument"),
    "an unknown flag": ("agents.reinforce", ["--gate-lrr", "1"], "error: unrecognized arguments: --gate-lrr 1"),
    "plots --nope": ("runs.plots", ["--nope"], "error: unrecognized arguments: --nope"),
}


@pytest.mark.parametrize("case", sorted(USAGE))
def test_usage_errors_are_one_line_naming_the_choices(case, capsys):
    import importlib

    module, argv, start = USAGE[case]
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(start) and err.count("\n") == 1, err
    assert err.rstrip().endswith(f"(python -m {module} --help lists every option)")


RUNS_CLIS = ["reproduce", "plots", "tables", "docs", "bench_gpu"]


@pytest.mark.parametrize("name", [*(f"runs.{m}" for m in RUNS_CLIS),
                                  *(f"agents.{m}" for m in ("fixed", "reinforce", "sb3", "evaluate"))])
def test_usage_lines_name_the_module_to_run(name, capsys):
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(name).main(["--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m {name} ")


def test_a_negative_number_is_a_value_in_any_notation():
    from agents.cli import parse_args

    for text, value in (("-1e-5", -1e-5), ("-.5", -0.5), ("-2", -2.0), ("-1E+2", -100.0)):
        assert parse_args(reinforce.Args, ["--init-mean", text]).init_mean == value
    assert parse_args(fixed.Args, ["--schedule", "1e-3", "-1e-4"]).schedule == [1e-3, -1e-4]


def test_the_resume_refusal_and_the_first_hour_page_name_the_same_changeable_flags(tmp_path):
    from agents.run_dir import CHANGEABLE_FLAGS, CHANGEABLE_ON_RESUME

    assert CHANGEABLE_FLAGS.split(", ") == [f"--{n}" for n in ("iterations", "progress", "device", "threads")]
    assert CHANGEABLE_ON_RESUME == {"resume", *(f[2:] for f in CHANGEABLE_FLAGS.split(", "))}
    page = (Path(__file__).resolve().parents[1] / "docs" / "first-hour.md").read_text()
    text = " ".join(page.replace("`", "").split())
    assert f"({CHANGEABLE_FLAGS.replace(', --threads', ' and --threads')} may change" in text
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"env": DIGITS, "agent": "fixed", "env_kwargs": {},
                                                 "args": {"env": DIGITS, "seed": 0}}))
    refusal = rf"--seed 3 differs from the run's 0; .* \(only {CHANGEABLE_FLAGS} may change\)$"
    with pytest.raises(CheckpointError, match=refusal):
        fixed.main(["--resume", str(run), "--seed", "3"])
