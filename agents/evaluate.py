"""Evaluate a finished run with its own tolerance policy, and at the evaluation tolerance.

    python -m agents.evaluate logs/RUN_DIR                   # test set, batch 100
    python -m agents.evaluate logs/RUN_DIR --split train --batch-size 500
    python -m agents.evaluate logs/ODE_RUN --pool test       # a benchmark run (frozen flow, ODE task)

Only a finished run is scored (its ``summary.json`` written and readable); an interrupted
one is finished first with ``--resume``. ``--split``, ``--batch-size``, ``--tol`` and
``--seed`` apply to runs of a flow environment, ``--pool`` and ``--grid-step`` to runs of a
benchmark task; each is refused on the other kind.

A run on a benchmark task (``ODE-*``, ``CNF-Frozen-*``: tolerance learning in isolation) is
scored by :func:`score_benchmark_run`: the run's deterministic policy on the task's held-out
test pool (``--pool``), next to the best constant grid tolerance (chosen on the training pool)
and the hindsight oracle, with the fraction of the gap between them that the run closes. The
``benchmark`` study's leaderboard scores its runs with the same policy loader and baselines
(:func:`load_action_policy`, ``infocnf_env.baselines``).

Prints one JSON object: ``policy`` (test metrics with each block's tolerance chosen by the
run's policy from that batch: REINFORCE gate means, SB3 ``predict(deterministic=True)``, a
fixed agent's tolerances) and ``fixed`` (the same batches and Hutchinson noise at tol 1e-5,
what the paper reports, Section 4.2). The gap between the two is the solver error that the
learned tolerances would leak into the metrics (Appendix D).

The Python API underneath is what ``runs.reproduce`` uses: :func:`load_run`,
:func:`load_policy`, :func:`policy_tolerance` (a policy as a ``flows`` tolerance function)
and :func:`evaluate_policy`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents import registry
from agents.base import ActionPolicy, TolerancePolicy
from agents.cli import arg, parse_args
from agents.loop import run_cli
from flows import EVAL_TOL, FlowModel, FlowState, evaluate, iterate_batches


@dataclasses.dataclass
class LoadedRun:
    """A finished run's environment (flow frozen, final checkpoint loaded) and its config."""

    run_dir: Path
    config: dict
    env: Any  # the unwrapped TrainingStepEnv

    @property
    def model(self) -> torch.nn.Module:
        return self.env.model


def load_run(run_dir: str | Path) -> LoadedRun:
    """Rebuild a run's environment from its ``config.json`` with its checkpoint, flow frozen."""
    import gymnasium as gym

    import infocnf_env  # noqa: F401  (registers the ids)

    run_dir = Path(run_dir)
    for name in ("config.json", "checkpoint.pt"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir} is not a finished run directory: {name} is missing")
    config = json.loads((run_dir / "config.json").read_text())
    kwargs = dict(config["env_kwargs"], train_flow=False, checkpoint=str(run_dir / "checkpoint.pt"))
    return LoadedRun(run_dir, config, gym.make(config["env"], **kwargs).unwrapped)


def load_action_policy(run_dir: str | Path, env: Any) -> ActionPolicy:
    """The deterministic policy of a finished run, returning the env's whole action
    (:meth:`agents.base.Agent.saved_policy` of the run's agent, :mod:`agents.registry`).

    fixed: its tolerance (or per-block schedule) and first step. REINFORCE: each gate's
    deterministic action (the Gaussian's mean; a squashed gate's median, inside the bounds).
    SB3: ``predict(deterministic=True)`` rescaled entry by entry from [-1, 1] to the action
    bounds, as ``RescaleAction`` does during training.
    """
    run_dir = Path(run_dir)
    agent = json.loads((run_dir / "config.json").read_text())["agent"]
    return registry.of_run(agent).agent_class().saved_policy(run_dir, env)


def load_policy(run_dir: str | Path, env: Any) -> TolerancePolicy:
    """The deterministic tolerance policy of a finished run: log10 of each block's tolerance
    (:func:`load_action_policy`'s first entry) and, for REINFORCE, the gate's std
    (:meth:`agents.base.Agent.saved_tolerance_policy` of the run's agent)."""
    agent = json.loads((Path(run_dir) / "config.json").read_text())["agent"]
    return registry.of_run(agent).agent_class().saved_tolerance_policy(Path(run_dir), env)


@dataclasses.dataclass
class ToleranceTrace:
    """What a policy chose: per pass, each block's log10 tolerance and the policy's std."""

    log_tols: list[list[float]] = dataclasses.field(default_factory=list)
    stds: list[list[float]] = dataclasses.field(default_factory=list)


def policy_tolerance(env: Any, policy: TolerancePolicy,
                     trace: ToleranceTrace | None = None) -> Callable[[FlowState], float]:
    """``policy`` as a tolerance function of ``FlowModel.forward`` / ``flows.evaluate``.

    Before each block the env's observation encoder turns the block's input into the
    observation the agent was trained on; the chosen log10 tolerance is clipped to the action
    bounds, as the environment clips it. Choices are appended to ``trace`` (one list per pass).
    """
    model = env.model
    low, high = float(env.action_space.low[0]), float(env.action_space.high[0])

    def tolerance(state: FlowState) -> float:
        block = model.block_index(state)
        log_tol, std = policy(env.encoder.encode(block, model.features(state)), block)
        log_tol = min(max(log_tol, low), high)
        if trace is not None:
            if block == 0:
                trace.log_tols.append([])
                trace.stds.append([])
            trace.log_tols[-1].append(log_tol)
            trace.stds[-1].append(std)
        return 10.0 ** log_tol

    return tolerance


def evaluate_policy(env: Any, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], policy: TolerancePolicy,
                    seed: int = 0) -> dict:
    """``flows.evaluate`` with each block's tolerance chosen by ``policy`` for each batch.

    Adds ``log10_tol`` (mean over blocks and batches) and ``log10_tol_blocks`` (per block).
    """
    trace = ToleranceTrace()
    metrics = evaluate(env.model, _shaped(env.model, batches), tol=policy_tolerance(env, policy, trace), seed=seed)
    return {**metrics, "log10_tol": float(np.mean(trace.log_tols)),
            "log10_tol_blocks": np.mean(trace.log_tols, axis=0).tolist()}


def evaluate_fixed(env: Any, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], tol: float = EVAL_TOL,
                   seed: int = 0) -> dict:
    """``flows.evaluate`` of the env's model at one tolerance (batches of flat or shaped data)."""
    return evaluate(env.model, _shaped(env.model, batches), tol=tol, seed=seed)


def _shaped(model: Any, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]):
    return ((x.reshape(x.shape[0], *model.data_shape), y) for x, y in batches)


# ---------------------------------------------------------------------------- benchmark runs
def make_benchmark_env(run_dir: str | Path) -> tuple[dict, Any]:
    """A benchmark run's ``config.json`` and its task's env (unwrapped), built as the run built it."""
    import gymnasium as gym

    import infocnf_env  # noqa: F401  (registers the ids)

    config = json.loads((Path(run_dir) / "config.json").read_text())
    return config, gym.make(config["env"], **config["env_kwargs"]).unwrapped


def score_benchmark_run(run_dir: str | Path, pool: str = "test", env: Any = None,
                        grid_step: float = 0.5) -> dict[str, Any]:
    """A benchmark run's policy on ``pool`` beside the best constant and the oracle.

    The best constant is the grid tolerance with the best mean reward on the training pool;
    the oracle each episode's best grid tolerance in hindsight; ``gap_closed`` is
    ``(run - best constant) / (oracle - best constant)``, all on ``pool``. The grid is cached
    beside the task's references (``infocnf_env.baselines.cached_grid_table``).
    """
    from infocnf_env import baselines

    run_dir = Path(run_dir)
    for name in ("config.json", "checkpoint.pt"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir} is not a finished run directory: {name} is missing")
    config, built = make_benchmark_env(run_dir)
    env = env if env is not None else built
    action = load_action_policy(run_dir, env)
    mine = env.score(action, pool)
    table = baselines.cached_grid_table(env, baselines.log_tol_grid(env, grid_step))
    best = baselines.best_constant(table, "train")
    constant = baselines.column(table, best, pool)
    oracle = baselines.oracle(table, pool)
    return {"run_dir": str(run_dir), "env": config["env"], "agent": config["agent"], "pool": pool,
            "run": mine, "best_constant": {"log10_tol": table.log_tols[best], **constant},
            "oracle": {k: oracle[k] for k in ("reward", "nfe", "error")},
            "gap_closed": baselines.gap_closed(mine["reward"], constant["reward"], oracle["reward"])}


# ---------------------------------------------------------------------------- command line
@dataclasses.dataclass
class Args:
    run_dir: str = arg("", "a finished run directory (holds config.json and checkpoint.pt)", positional=True)
    split: str = arg("test", "data split", choices=["train", "test"])
    batch_size: int = arg(100, "evaluation batch size (the policy chooses tolerances per batch)")
    tol: float = arg(EVAL_TOL, "the fixed tolerance to compare with")
    seed: int = arg(0, "seed of the Hutchinson noise (the same for both evaluations)")
    pool: str = arg("test", "benchmark runs: the pool of episodes to score on (train: where the run learned)",
                    choices=["train", "test"])
    grid_step: float = arg(0.5, "benchmark runs: spacing of the baselines' grid of log10 tolerances")
    threads: int | None = arg(None, "CPU threads of torch and NumPy's BLAS (default: the thread rule for the "
                              "run's env, infocnf_env.threads: 1 for the bundled ids)")
    #: The flags given on the command line (those of the other kind of run are refused).
    explicit: frozenset[str] = dataclasses.field(default=frozenset(), repr=False, compare=False,
                                                 metadata={"cli": False})


#: Flags that apply to one kind of run only: flow runs (test metrics) or benchmark runs (pools).
FLOW_FLAGS = ("split", "batch_size", "tol", "seed")
BENCHMARK_FLAGS = ("pool", "grid_step")


def finished_run_config(run_dir: str | Path) -> dict:
    """The ``config.json`` of a finished run (one whose ``summary.json`` was written and reads);
    one clear error otherwise: no run, an interrupted run, a damaged record."""
    run_dir = Path(run_dir)
    config_path, summary_path = run_dir / "config.json", run_dir / "summary.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished run directory: config.json is missing")
    try:
        config = json.loads(config_path.read_text())
        if not isinstance(config, dict) or not {"env", "agent", "env_kwargs", "args"} <= set(config):
            raise ValueError("not a run's config")
    except ValueError as err:
        raise ValueError(f"{config_path} is not a run's config ({type(err).__name__}): the run's record is "
                         "damaged") from None
    if not summary_path.is_file():
        script = registry.of_run(str(config["agent"])).module
        raise ValueError(f"{run_dir} is not a finished run: it has no summary.json (stopped before its end?); "
                         f"finish it with python -m {script} --resume {run_dir}")
    try:
        summary = json.loads(summary_path.read_text())
        if not isinstance(summary, dict) or "iterations" not in summary:
            raise ValueError("not a run's summary")
    except ValueError as err:
        raise ValueError(f"{summary_path} is unreadable ({type(err).__name__}): the run's record is damaged, "
                         "so it is not scored") from None
    return config


def _is_benchmark_run(config: dict) -> bool:
    import gymnasium as gym

    import infocnf_env

    env_id = config.get("env", "")
    return gym.registry.get(env_id) is not None and env_id not in infocnf_env.ENV_IDS


def _refuse(args: Args, names: tuple[str, ...], what: str) -> None:
    given = [f"--{n.replace('_', '-')}" for n in names if n in args.explicit]
    if given:
        raise ValueError(f"{' '.join(given)} applies to {what} only; {args.run_dir} is not one")


def main(argv: list[str] | None = None) -> dict:
    from infocnf_env import default_threads
    from infocnf_env.threads import check_threads, set_threads

    args = parse_args(Args, argv, description=__doc__)
    if not args.run_dir:
        raise ValueError("name a run directory: python -m agents.evaluate RUN_DIR")
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    if args.threads is not None:
        check_threads(args.threads)
    config = finished_run_config(args.run_dir)
    set_threads(args.threads or default_threads(str(config["env"])))
    if _is_benchmark_run(config):
        _refuse(args, FLOW_FLAGS, "runs of a flow environment (the training-step ids)")
        if not (math.isfinite(args.grid_step) and args.grid_step > 0):
            raise ValueError(f"--grid-step must be a positive number of decades, got {args.grid_step}")
        result = score_benchmark_run(args.run_dir, args.pool, grid_step=args.grid_step)
        print(json.dumps(result, indent=2))
        return result
    _refuse(args, BENCHMARK_FLAGS, "runs of a benchmark task (ODE-*, CNF-Frozen-*)")
    run = load_run(args.run_dir)
    if not isinstance(run.model, FlowModel):
        raise ValueError(f"{run.config['env']} is not a flow environment; agents.evaluate evaluates flows")
    policy = load_policy(run.run_dir, run.env)
    batches = list(iterate_batches(run.env.task.data(args.split), args.batch_size))
    print(f"evaluating {run.run_dir} on {len(batches)} {args.split} batches, with its policy and at tol {args.tol:g}",
          file=sys.stderr, flush=True)
    result = {"run_dir": str(run.run_dir), "env": run.config["env"], "agent": run.config["agent"],
              "split": args.split, "batch_size": args.batch_size,
              "policy": evaluate_policy(run.env, batches, policy, args.seed),
              "fixed": {"tol": args.tol, **evaluate_fixed(run.env, batches, args.tol, args.seed)}}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    run_cli(main)
