"""What a new user meets first: asynchronous vector envs, Gymnasium's seeding, the run directory
printed, ``--device``, SB3's exported model in the env's units, the CIFAR10 data step, bad
input as one line, ``--help``, and ``python -m runs.plots RUN_DIR``."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import infocnf_env
from agents import fixed, reinforce, sb3
from agents.cli import CommonArgs
from agents.loop import run_cli
from runs import plots, run_curves

DIGITS = "InfoCNF-Digits-v0"
TOY = "InfoCNF-Toy1D-v0"
SMALL = {DIGITS: dict(hidden=4, batch_size=8), TOY: dict(hidden=4, batch_size=8),
         "LatentODE-Spirals-v0": dict(num_train=32, num_test=16, length=100, window=20, extrap=10, batch_size=8,
                                      rnn_hidden=8, dyn_hidden=8, dec_hidden=8)}
#: Small benchmark ids (their caches go to the test's tmp_path).
SMALL_BENCHMARK = {"ODE-Lorenz-v0": dict(train_pool_size=2, test_pool_size=1, segments=2, reference_tol=1e-9),
                   "CNF-Frozen-8Gaussians-v0": dict(hidden=4, train_iterations=3, train_pool_size=2, test_pool_size=1,
                                                    batch_size=8)}
#: Seconds an asynchronous vector env may take to build, reset and step its workers.
ASYNC_LIMIT = 30.0


def cli(out: Path, *extra: str, env: str = TOY) -> list[str]:
    kwargs = [f"{k}={v}" for k, v in SMALL[TOY].items()] if env == TOY else []
    return ["--env", env, "--iterations", "1", "--eval-every", "0", "--eval-batches", "1", "--no-progress",
            "--no-tensorboard", "--out", str(out), *extra, "--env-kwargs", *kwargs]


# ---------------------------------------------------------------------- 1. make_vec(..., "async")
def _start_thread_pool() -> None:
    """Make this process's OpenMP pool exist, as any torch program's does (conftest runs the
    tests on one thread; its fixture restores that afterwards)."""
    torch.set_num_threads(2)
    torch.ones(1 << 20).exp_()  # a parallel loop over the pool


@pytest.mark.parametrize("env_id", sorted(SMALL) + sorted(SMALL_BENCHMARK))
def test_async_make_vec_returns_in_bounded_time(env_id, tmp_path):
    """Forked workers run torch on one thread (infocnf_env.threads): with the parent's OpenMP
    pool copied into them they would wait forever in their first parallel operation."""
    _start_thread_pool()
    kwargs = SMALL[env_id] if env_id in SMALL else {**SMALL_BENCHMARK[env_id], "cache": str(tmp_path)}
    if env_id in SMALL_BENCHMARK:
        gym.make(env_id, **kwargs).close()  # the cached artefacts first: the workers then load them
    built: dict[str, gym.vector.VectorEnv] = {}
    # make_vec itself waits for the workers' spaces without a timeout: build it in a thread
    builder = threading.Thread(target=lambda: built.update(envs=gym.make_vec(
        env_id, num_envs=2, vectorization_mode="async", **kwargs)), daemon=True)
    builder.start()
    builder.join(ASYNC_LIMIT)
    if builder.is_alive():
        for worker in multiprocessing.active_children():  # the make_vec workers; their pipes close
            worker.terminate()
        builder.join(5.0)
        pytest.fail(f"make_vec({env_id!r}, vectorization_mode='async') did not return within {ASYNC_LIMIT} s")
    envs = built["envs"]
    try:
        envs.reset_async(seed=0)
        obs, _ = envs.reset_wait(timeout=ASYNC_LIMIT)  # raises multiprocessing.TimeoutError on a hang
        assert obs.shape[0] == 2 and np.isfinite(obs).all()
        envs.step_async(np.full((2, *envs.single_action_space.shape), -3.0, np.float32))
        _, reward, *_ = envs.step_wait(timeout=ASYNC_LIMIT)
        assert reward.shape == (2,) and np.isfinite(reward).all()
    except multiprocessing.TimeoutError:
        envs.close(terminate=True)
        pytest.fail(f"make_vec({env_id!r}, vectorization_mode='async') did not answer within {ASYNC_LIMIT} s")
    envs.close()


def test_forked_children_run_torch_on_one_thread():
    _start_thread_pool()
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        assert pool.apply(torch.get_num_threads) == 1


# ---------------------------------------------------------------------- 2. seeding
def _batch(env: gym.Env) -> torch.Tensor:
    env.reset()
    return env.unwrapped._batch[0].clone()


def _weights(env: gym.Env) -> list[torch.Tensor]:
    return [p.detach().clone() for p in env.unwrapped.model.parameters()]


def test_unseeded_instances_differ_and_share_the_configs_initial_weights():
    first, second = gym.make(TOY, **SMALL[TOY]), gym.make(TOY, **SMALL[TOY])
    assert all(torch.equal(a, b) for a, b in zip(_weights(first), _weights(second), strict=True))
    assert not torch.equal(_batch(first), _batch(second))
    other_seed = gym.make(TOY, seed=1, **SMALL[TOY])
    assert not all(torch.equal(a, b) for a, b in zip(_weights(first), _weights(other_seed), strict=True))


def test_make_vec_unseeded_sub_envs_draw_different_batches():
    envs = gym.make_vec(TOY, num_envs=2, vectorization_mode="sync", **SMALL[TOY])
    envs.reset()
    a, b = (env.unwrapped._batch[0] for env in envs.unwrapped.envs)
    assert not torch.equal(a, b)
    envs.close()


def test_seeded_reset_reproduces_the_episode_stream():
    first, second = gym.make(TOY, **SMALL[TOY]), gym.make(TOY, **SMALL[TOY])
    for env in (first, second):
        env.reset(seed=5)
    assert torch.equal(first.unwrapped._batch[0], second.unwrapped._batch[0])
    assert torch.equal(_batch(first), _batch(second))  # later unseeded resets go on from the seeded stream


def test_a_loaded_state_is_not_reseeded_by_the_next_reset(tmp_path):
    env = gym.make(TOY, **SMALL[TOY])
    env.reset(seed=3)
    env.unwrapped.save(tmp_path / "state.pt")
    expected = _batch(env)
    restored = gym.make(TOY, checkpoint=str(tmp_path / "state.pt"), **SMALL[TOY])
    assert torch.equal(_batch(restored), expected)


# ---------------------------------------------------------------------- 3, 7. run directory and device
def test_run_directory_is_printed_at_the_start_and_in_the_summary(tmp_path, capsys):
    summary = fixed.main(cli(tmp_path / "run"))
    captured = capsys.readouterr()
    assert captured.err.splitlines()[0].startswith(f"run directory: {tmp_path / 'run'} ")
    rows = [line.split() for line in captured.out.strip().splitlines()]
    assert ["run", "directory", str(tmp_path / "run")] in rows
    assert ["device", summary["device"]] in rows
    assert summary["run_dir"] == str(tmp_path / "run")


def test_device_flag_reaches_the_env_and_the_summary(tmp_path):
    summary = reinforce.main(cli(tmp_path / "run", "--device", "cpu"))
    assert summary["device"] == summary["env_device"] == "cpu"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["args"]["device"] == "cpu"


def test_an_env_without_a_device_setting_runs_on_the_cpu(tmp_path):
    """The frozen benchmark's config has no device: the runner does not pass one."""
    from agents.envs import env_has_device

    assert env_has_device(DIGITS) and env_has_device(f"infocnf_env:{DIGITS}") and not env_has_device("Nope-v0")
    frozen = "CNF-Frozen-8Gaussians-v0"
    assert not env_has_device(frozen)
    summary = fixed.main(["--env", frozen, "--iterations", "1", "--eval-every", "0", "--no-progress",
                          "--no-tensorboard", "--out", str(tmp_path / "run"), "--env-kwargs", "hidden=4",
                          "train_iterations=2", "train_batch_size=16", "train_pool_size=2", "test_pool_size=1",
                          "batch_size=4",
                          f"cache='{tmp_path / 'cache'}'"])
    assert summary["env_device"] == "cpu"


def test_a_resumed_run_may_change_its_device(tmp_path, capsys):
    fixed.main(cli(tmp_path / "run"))
    summary = fixed.main(["--resume", str(tmp_path / "run"), "--iterations", "2", "--device", "cpu"])
    assert summary["iterations"] == 2 and summary["device"] == "cpu"
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"resuming run directory: {tmp_path / 'run'} ")


def test_device_default_is_cuda_when_available(tmp_path):
    summary = fixed.main(cli(tmp_path / "run"))
    assert summary["device"] == ("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------- 4. SB3's exported model
def test_sb3_model_states_its_action_scaling_and_load_policy_acts_in_env_units(tmp_path):
    run_dir = tmp_path / "ppo"
    summary = sb3.main(cli(run_dir, "--algo", "ppo", "--device", "cpu"))
    assert summary["device"] == "cpu"
    model = sb3.algo_class("ppo").load(run_dir / sb3.EXPORT, device="cpu")
    rescale = model.action_rescale
    assert rescale["wrapper"] == "gymnasium.wrappers.RescaleAction"
    assert (rescale["min_action"], rescale["max_action"]) == (-1.0, 1.0)
    assert (rescale["env_low"], rescale["env_high"]) == ([-8.0], [-2.0])
    policy = sb3.load_policy(run_dir)
    env = gym.make(TOY, **SMALL[TOY])  # a plain env, no wrapper
    obs, _ = env.reset(seed=0)
    unit, _ = model.predict(obs, deterministic=True)
    action = policy(obs)
    assert -8.0 <= float(action[0]) <= -2.0
    assert float(action[0]) == pytest.approx(-8.0 + (float(np.clip(unit[0], -1, 1)) + 1.0) * 3.0, abs=1e-5)
    env.step(action)  # the env takes it as it is


def test_sb3_load_policy_refuses_a_run_of_another_agent(tmp_path):
    fixed.main(cli(tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match="sb3_model.zip is missing"):
        sb3.load_policy(tmp_path / "run")


def test_sb3_device_goes_through_device_flag_not_algo_kwargs(tmp_path):
    with pytest.raises(ValueError, match="^device is set by --device, not --algo-kwargs$"):
        sb3.main(cli(tmp_path / "run", "--algo", "a2c", "--algo-kwargs", "device='cpu'"))
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------- 5, 6. errors a new user meets
CUDA_MISSING = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
#: case -> (flags, extra env kwargs, the error's pattern)
BAD = {
    "seed -1": (("--seed", "-1"), (), r"^--seed must be an integer in \[0, 2\*\*32\), got -1$"),
    "tolerance above 1": ((), ("tol_bounds=(1, 2)",), r"^tol_bounds must be <= 0 \(log10 of a value"),
    "hidden=0": ((), ("hidden=0",), r"^hidden must be a positive integer, got 0$"),
    "device disagreement": (("--device", "cpu"), ("device='meta'",),
                            r"^--device cpu and --env-kwargs device='meta' disagree"),
    "unknown device": (("--device", "gpu"), (), r"^unknown device 'gpu'; e\.g\. 'cpu', 'cuda'"),
    "env seed -1": ((), ("seed=-1",), r"^seed must be an integer in \[0, 2\*\*32\), got -1$"),
    "max_num_steps=0": ((), ("max_num_steps=0",), r"^max_num_steps must be a positive integer or None, got 0$"),
}
#: reinforce's own flags
REINFORCE_BAD = {
    "--gate-lr -1": (("--gate-lr", "-1"), r"^the gates' learning rate \(--gate-lr\) must be a positive number"),
    "--gamma 2": (("--gamma", "2"), r"^the discount \(--gamma\) must be in \[0, 1\], got 2.0$"),
}
CUDA_BAD = {
    "--device cuda": (("--device", "cuda"), (), r"^device 'cuda' asked for, but CUDA is not available"),
    "env kwarg device='cuda'": ((), ("device='cuda'",), r"^device 'cuda' asked for, but CUDA is not"),
}


def _check_one_line(tmp_path: Path, capsys, argv: list[str], pattern: str, main=fixed.main) -> None:
    with pytest.raises(ValueError, match=pattern):
        main(argv)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line(tmp_path, capsys, case):
    flags, kwargs, pattern = BAD[case]
    _check_one_line(tmp_path, capsys, [*flags, *cli(tmp_path / "run"), *kwargs], pattern)


def test_the_seed_flag_takes_every_32_bit_seed_and_nothing_past_it(tmp_path, capsys):
    """--seed is an integer in [0, 2**32): 2**32 - 1 passes the flag's check, 2**32 is refused
    there, as one line naming the flag."""
    from agents.run_dir import check_common_args

    check_common_args(CommonArgs(seed=2**32 - 1))
    _check_one_line(tmp_path, capsys, ["--seed", str(2**32), *cli(tmp_path / "run")],
                    rf"^--seed must be an integer in \[0, 2\*\*32\), got {2**32}$")


@pytest.mark.parametrize("case", sorted(REINFORCE_BAD))
def test_bad_reinforce_flags_are_one_line(tmp_path, capsys, case):
    flags, pattern = REINFORCE_BAD[case]
    _check_one_line(tmp_path, capsys, [*flags, *cli(tmp_path / "run")], pattern, main=reinforce.main)


def test_sb3_algo_kwargs_error_lists_public_arguments_only(tmp_path):
    with pytest.raises(ValueError, match="PPO has no argument n_step; valid: batch_size, ") as info:
        sb3.main(cli(tmp_path / "run", "--algo", "ppo", "--algo-kwargs", "n_step=3"))
    assert "_init_setup_model" not in str(info.value)


@CUDA_MISSING
@pytest.mark.parametrize("case", sorted(CUDA_BAD))
def test_cuda_on_a_machine_without_it_is_one_line(tmp_path, capsys, case):
    flags, kwargs, pattern = CUDA_BAD[case]
    _check_one_line(tmp_path, capsys, [*flags, *cli(tmp_path / "run"), *kwargs], pattern, main=sb3.main)


@CUDA_MISSING
def test_gym_make_on_cuda_without_it_is_a_value_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        gym.make(TOY, device="cuda", **SMALL[TOY])


def test_tolerance_bounds_above_one_are_refused_by_the_env():
    with pytest.raises(ValueError, match="tol_bounds must be <= 0"):
        gym.make(TOY, tol_bounds=(1.0, 2.0))
    gym.make(TOY, tol_bounds=(-8.0, 0.0), **SMALL[TOY])  # up to tolerance 1


def test_the_readmes_prefixed_id_works_on_the_command_line(tmp_path):
    summary = fixed.main(cli(tmp_path / "run", env=TOY)[2:] + ["--env", f"infocnf_env:{TOY}"])
    assert summary["env"] == TOY
    assert json.loads((tmp_path / "run" / "config.json").read_text())["env"] == TOY


def test_cifar10_without_a_data_root_says_how_to_give_it(tmp_path, capsys):
    _check_one_line(tmp_path, capsys, cli(tmp_path / "run", env="InfoCNF-CIFAR10-v0"),
                    r"^dataset 'cifar10' needs a data root: .*--env-kwargs data_root=DIR download=True")


def test_help_examples_of_cifar10_and_mnist_give_the_data_root():
    for module in (reinforce, fixed, sb3):
        for line in (module.__doc__ or "").splitlines():
            if "python -m" in line and ("CIFAR10" in line or "MNIST" in line):
                assert "data_root=" in line, line


# ---------------------------------------------------------------------- 9. --env help
def test_env_help_names_every_registered_family():
    help_text = next(f.metadata["help"] for f in CommonArgs.__dataclass_fields__.values() if f.name == "env")
    assert "infocnf_env.ENV_IDS" in help_text and "infocnf_env.FROZEN_IDS" in help_text
    assert set(infocnf_env.ENV_IDS) | set(infocnf_env.FROZEN_IDS) <= set(gym.registry)


# ---------------------------------------------------------------------- 8. python -m runs.plots RUN_DIR
def _fake_run(path: Path, iterations: int = 40, offset: float = 0.0, env: str = DIGITS, agent: str = "reinforce",
              tols: tuple[float, ...] = (1e-3, 1e-4, 1e-5)) -> Path:
    """A run directory as the runner writes it (config.json, metrics.jsonl, eval.jsonl)."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"env": env, "agent": agent, "env_kwargs": {},
                                                  "args": {"seed": 0}}))
    lines = [json.dumps({"iteration": i, "loss": 5.0 - i / 20 + offset, "bits_per_dim": 3.0 - i / 40,
                         "nfe_forward": 40 + i % 3, "nfe_backward": 38, "tols": list(tols),
                         "nfe_blocks": [14, 13, 13], "reward": -30.0 - offset, "error": 0.5})
             for i in range(1, iterations + 1)]
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (path / "eval.jsonl").write_text(json.dumps({"iteration": iterations, "bits_per_dim": 2.1, "error": 0.3}) + "\n")
    return path


def _colour_pixels(png: Path, colour: str, within: float = 0.02) -> int:
    import matplotlib.colors
    import matplotlib.image

    image = matplotlib.image.imread(str(png))[..., :3]
    target = np.array(matplotlib.colors.to_rgb(colour))
    return int((np.abs(image - target).max(axis=-1) < within).sum())


def test_plots_draws_one_runs_curves_beside_it(tmp_path, capsys):
    run = _fake_run(tmp_path / "run")
    plots.main([str(run)])
    png = run / run_curves.CURVES
    assert capsys.readouterr().out == f"wrote {png}\n"
    import matplotlib.image

    image = matplotlib.image.imread(str(png))
    assert image.ndim == 3 and image.shape[0] > 400 and image.shape[1] > 600
    assert _colour_pixels(png, run_curves.RUN_COLOURS[0]) > 1000  # the curves are drawn
    assert run_curves.plotted([run_curves.read_run(run)]) == [
        "loss", "bits/dim", "NFE per iteration", "log10 tolerance per block", "error", "episode reward"]


def test_plots_compare_overlays_runs_in_their_own_colours(tmp_path, capsys):
    first, second = _fake_run(tmp_path / "a"), _fake_run(tmp_path / "b", offset=1.0)
    out = tmp_path / "both.png"
    plots.main(["--compare", str(first), str(second), "--out", str(out)])
    assert capsys.readouterr().out == f"wrote {out}\n"
    for colour in run_curves.RUN_COLOURS[:2]:
        assert _colour_pixels(out, colour) > 500, colour


def test_plots_give_each_segment_of_one_run_its_own_colour(tmp_path):
    """An ODE run's four segments: four colours in the tolerance panel, each drawn in the PNG."""
    import matplotlib.colors
    import matplotlib.pyplot as plt

    run = _fake_run(tmp_path / "ode", env="ODE-Mixed-v0", tols=(1e-3, 1e-4, 1e-5, 1e-6))
    fig = run_curves.figure([run_curves.read_run(run)])
    ax = next(a for a in fig.axes if a.get_title() == "log10 tolerance per block")
    colours = [matplotlib.colors.to_hex(line.get_color()) for line in ax.get_lines()]
    plt.close(fig)
    assert len(colours) == 4 and len(set(colours)) == 4
    png = run_curves.plot_run(run)
    for colour in run_curves.BLOCK_COLOURS[:4]:  # thin flat lines: antialiased, so a looser match
        assert _colour_pixels(png, colour, within=0.15) > 300, colour
    assert _colour_pixels(png, run_curves.BLOCK_COLOURS[4], within=0.15) == 0  # no fifth block


def test_plots_compare_legends_name_runs_by_what_tells_them_apart(tmp_path):
    import matplotlib.pyplot as plt

    a = _fake_run(tmp_path / "ODE-Mixed-v0__reinforce__0__20261207-010101", env="ODE-Mixed-v0")
    b = _fake_run(tmp_path / "ODE-Mixed-v0__sb3-ppo__0__20261207-020202", env="ODE-Mixed-v0", agent="sb3-ppo",
                  offset=1.0)
    runs = [run_curves.read_run(a), run_curves.read_run(b)]
    fig = run_curves.figure(runs)
    texts = [t.get_text() for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
             for t in legend.get_texts()]
    plt.close(fig)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["reinforce", "sb3-ppo"]
    assert all(len(t) <= 20 and "__" not in t for t in texts), texts
    same = _fake_run(tmp_path / "again", env="ODE-Mixed-v0")  # a run like the first: numbered instead
    assert run_curves.short_labels([runs[0], run_curves.read_run(same)]) == ["run 1", "run 2"]


@pytest.mark.parametrize("setup, message", [
    (lambda p: p.mkdir(), "is not a run directory: no config.json"),
    (lambda p: (p.mkdir(), (p / "config.json").write_text("{}")), "has no iteration in metrics.jsonl yet"),
])
def test_plots_of_a_folder_that_is_no_run_is_one_line(tmp_path, capsys, setup, message):
    folder = tmp_path / "x"
    setup(folder)
    with pytest.raises(SystemExit) as exit_info:
        plots.main([str(folder)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_smooth_is_a_running_mean():
    values = np.array([1.0, 3.0, 5.0, 7.0])
    np.testing.assert_allclose(run_curves.smooth(values, 2), [1.0, 2.0, 4.0, 6.0])
    np.testing.assert_allclose(run_curves.smooth(values, 1), values)
