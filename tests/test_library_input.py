"""Bad input to the library and its command lines: one clear error, raised before any work."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import infocnf_env  # noqa: F401  (registers the ids)
from agents import evaluate, fixed, reinforce, sb3
from agents.loop import run_cli
from flows import BatchStream, build_model, load_dataset
from runs import plots

TOY = "InfoCNF-Toy1D-v0"


# ---------------------------------------------------------------------------- logit transform
def test_logit_transform_rejects_data_outside_the_unit_interval():
    model = build_model("cnf", (2,), arch="mlp", hidden=4)  # logit_alpha 1e-6 by default
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    pattern = (r"^the logit transform needs data in \[0, 1\], got values in \[-?[\d.]+, [\d.]+\]; "
               r"for real-valued data turn it off with logit_alpha=None \(a build_model / env option\)$")
    with pytest.raises(ValueError, match=pattern):
        model.start(x)
    with pytest.raises(ValueError, match=pattern):  # the forward pass checks before any solve
        model(x)
    model.start(torch.rand(8, 2))
    model.start(torch.tensor([[0.0, 1.0]]))  # the closed interval
    build_model("cnf", (2,), arch="mlp", hidden=4, logit_alpha=None).start(x)


def test_env_with_the_logit_transform_on_real_valued_data_fails_at_reset():
    env = gym.make(TOY, hidden=4, batch_size=8, logit_alpha=1e-6)
    with pytest.raises(ValueError, match=r"^the logit transform needs data in \[0, 1\]"):
        env.reset(seed=0)


# ---------------------------------------------------------------------------- batch size
def test_a_batch_larger_than_the_dataset_fails_at_construction():
    with pytest.raises(ValueError, match=r"^batch_size 10000000 exceeds the 6000 examples of the toy1d train split; "
                                         r"use batch_size <= 6000$"):
        gym.make(TOY, batch_size=10**7, hidden=4)
    data = load_dataset("toy1d", "test")
    with pytest.raises(ValueError, match=r"^batch_size 700 x 3 processes = 2100 exceeds the 2000 examples of the "
                                         r"toy1d test split; use batch_size <= 666$"):
        BatchStream(data, 700, world_size=3)
    assert BatchStream(data, 666, world_size=3).global_batch_size == 1998


def test_a_batch_larger_than_the_dataset_is_one_line_from_the_cli(tmp_path, capsys):
    argv = ["--env", TOY, "--iterations", "1", "--no-progress", "--no-tensorboard", "--out", str(tmp_path / "run"),
            "--env-kwargs", "batch_size=7000", "hidden=4"]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: fixed.main(argv))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == ("error: batch_size 7000 exceeds the 6000 examples of the toy1d train split; "
                                       "use batch_size <= 6000\n")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- actions
@pytest.mark.parametrize("action, shown", [
    (None, "None"), ("abc", "'abc' (str)"), (True, "True (bool)"), ([None], "[None] (list)"),
    ({"tol": -3}, "{'tol': -3} (dict)"), (1j, "1j (complex)"),
    ([[-3.0], [-3.0, -4.0]], "[[-3.0], [-3.0, -4.0]] (list)"),
    ("x" * 100, "'" + "x" * 56 + "... (str)"),
])
def test_an_action_that_is_no_number_says_what_it_got(action, shown):
    env = gym.make(TOY, hidden=4, batch_size=8)
    env.reset(seed=0)
    with pytest.raises(ValueError) as info:
        env.step(action)
    assert str(info.value) == f"action must be a number (log10 of the tolerance), got {shown}"
    _, _, _, _, info = env.step(np.array([-3.0], dtype=np.float32))  # nothing was solved: still block 0
    assert info["block"] == 0


def test_numbers_of_any_real_dtype_are_actions():
    env = gym.make(TOY, hidden=4, batch_size=8)
    for action in (-3, np.int64(-4), [-5.0], torch.tensor([-3.0])):
        env.reset(seed=0)
        assert env.step(action)[4]["tol"] == pytest.approx(10.0 ** float(np.asarray(action).reshape(())))


# ---------------------------------------------------------------------------- downloads
def _tree(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files}


@pytest.fixture
def offline(monkeypatch):
    def urlopen(*args, **kwargs):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py")])
@pytest.mark.parametrize("layout", ["new root", "existing root", "existing dataset folder"])
def test_a_failed_download_is_one_line_and_leaves_only_what_was_there(tmp_path, offline, name, folder, layout):
    top = tmp_path / "data"
    root = top / "nested" if layout == "new root" else top
    top.mkdir()
    (top / "mine.txt").write_text("a user's file")
    if layout == "existing dataset folder":
        (top / folder.split("/")[0]).mkdir()
        (top / folder.split("/")[0] / "notes.txt").write_text("keep me")
    before = _tree(tmp_path)
    with pytest.raises(ValueError) as info:
        load_dataset(name, "train", root=str(root), download=True)
    assert str(info.value) == (f"could not download {name} to {str(root)!r}: <urlopen error no network (test)>; "
                               f"download it elsewhere and pass data_root=... (the folder that holds '{folder}')")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_an_unwritable_root_is_one_line(offline, name):
    with pytest.raises(ValueError, match=r"^could not download \w+ to '/dev/null/data': \[Errno 20\] Not a directory: "
                                         r"'/dev/null/data[^\n]*'; download it elsewhere and pass data_root=\.\.\. "):
        load_dataset(name, "test", root="/dev/null/data", download=True)


# ---------------------------------------------------------------------------- --help
@pytest.mark.parametrize("module", [fixed, reinforce, sb3, evaluate], ids=lambda m: m.__name__)
def test_help_shows_each_default_once_and_the_examples_as_written(module, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "250")  # one line per option
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for line in lines:
        assert len(re.findall(r"\bdefault\b", line, re.IGNORECASE)) <= 1, line
    assert "(default: None)" not in out and "(default: [])" not in out and "(default: False)" not in out
    examples = [line for line in module.__doc__.splitlines() if line.lstrip().startswith("python -m ")]
    assert examples and all(example in lines for example in examples)
    if module is reinforce:
        baseline = next(line for line in lines if line.lstrip().startswith("--baseline "))
        assert "momentum" in baseline and "0.9" in baseline and "omit" not in baseline


# ---------------------------------------------------------------------------- runs.plots
def test_plots_given_a_run_summary_says_it_is_not_a_study(tmp_path, capsys):
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"env": TOY, "agent": "fixed", "seed": 0, "iterations": 2, "test": {}}))
    with pytest.raises(SystemExit) as exit_info:
        plots.main([str(summary)])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == (f"error: {str(summary)!r} is not a study result: expected a STUDY.json written by "
                            "runs.reproduce (keys study, rows, ...), got a run's summary.json with keys agent, env, "
                            f"iterations, seed, test; a run's curves: python -m runs.plots {str(tmp_path)!r}\n")
    assert captured.out == "" and not summary.with_suffix(".png").exists()


@pytest.mark.parametrize("content, message", [
    (None, "cannot read '{path}': No such file or directory"),
    ("{", "'{path}' is not JSON (Expecting property name enclosed in double quotes at line 2)"),
    ("[1, 2]", "'{path}' is not a study result: expected a STUDY.json written by runs.reproduce (keys study, "
               "rows, ...), got a JSON list"),
    ('{"study": "nope", "rows": []}', "no plot for study 'nope'; valid: digits-table, "),
])
def test_plots_bad_json_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "study.json"
    if content is not None:
        path.write_text(content + "\n")
    with pytest.raises(SystemExit) as exit_info:
        plots.main([str(path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + message.format(path=path)) and err.count("\n") == 1
