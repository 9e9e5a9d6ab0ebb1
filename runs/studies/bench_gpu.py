"""bench-gpu: the CIFAR10 InfoCNF environment on a GPU, briefly: time per iteration, NFE, memory.

    python -m runs.bench_gpu --synthetic                              # no CIFAR10 needed
    python -m runs.bench_gpu --data-root ~/data                       # real CIFAR10
    python -m runs.bench_gpu --policy reinforce --synthetic           # with the paper's CNN gates
    python -m runs.bench_gpu --env InfoCNF-CIFAR10-LargeBatch-v0 --synthetic --iterations 20
    python -m runs.bench_gpu --device cpu --synthetic --iterations 2 --batch-size 4 \\
        --env-kwargs hidden=8                                         # CPU smoke test

Its command line is ``runs/bench_gpu.py`` (flags as below; each sets the config entry of its name);
``python -m runs.reproduce bench-gpu --quick`` is its CPU smoke test. Not part of
``python -m runs.reproduce all``: it needs a GPU (``device`` ``auto``: CUDA where there is one).

Runs ``--iterations`` training iterations of ``--env`` (default ``InfoCNF-CIFAR10-v0``: the
paper's model and recipe, batch 900, adjoint) with every block at tolerance 1e-5
(``--policy fixed``, the paper's baseline) or REINFORCE gates (``--policy reinforce``, CNN
gates on feature maps, trained as they go). Reports the median and mean wall time per
iteration (CUDA-synchronised; the first ``--warmup`` iterations excluded), forward and
backward NFE per iteration, peak GPU memory (``torch.cuda.max_memory_allocated``) and the
projected time of the paper's 400 epochs at the measured speed (NFE grows during training, so
this is a lower bound). The JSON is rewritten after every iteration, so a run stopped by
``--max-seconds`` or a time limit still leaves its numbers.

``--synthetic``: random uint8 images written to a temporary folder in torchvision's CIFAR10
format (one training image per batch slot, so one epoch is one iteration), with
torchvision's MD5 check of those files switched off in this process. Random images are not
CIFAR10: the flow's NFE on them differs from real data, the time per function evaluation
does not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import pickle
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infocnf_env import default_threads
from infocnf_env.threads import set_threads
from runs.run_cache import Context
from runs.study import Page, Res, Study

#: Training images per epoch of real CIFAR10 (for the projection of the paper's 400 epochs).
CIFAR10_TRAIN = 50_000
PAPER_EPOCHS = 400


def write_synthetic_cifar10(root: Path, train_size: int, test_size: int = 100, seed: int = 0) -> None:
    """Random images in ``root/cifar-10-batches-py/``: 5 pickled training batches, a test batch, meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_batch = math.ceil(train_size / 5)
    files = [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test_size)]
    for name, n in files:
        entry = {"data": rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8),
                 "labels": (np.arange(n) % 10).tolist(), "batch_label": name}
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch}, fh)


@contextlib.contextmanager
def _without_cifar10_md5() -> Iterator[None]:
    """torchvision checks CIFAR10's files against their MD5 sums; synthetic files cannot match."""
    import torchvision.datasets.cifar as cifar

    saved = cifar.CIFAR10._check_integrity, cifar.check_integrity
    cifar.CIFAR10._check_integrity = lambda self: True
    cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)
    try:
        yield
    finally:
        cifar.CIFAR10._check_integrity, cifar.check_integrity = saved


def _make_env(args: argparse.Namespace, data_root: str) -> tuple:
    """The env and the agent ``args.policy`` names (:mod:`agents.registry`), with the env settings
    its trainer adds (REINFORCE: the feature maps its CNN gates read on CIFAR10 and MNIST)."""
    import gymnasium as gym

    import infocnf_env  # noqa: F401  (registers the ids)
    from agents import registry

    agent_class = registry.get(args.policy).agent_class()
    kwargs = {**agent_class.env_kwargs(args.env), "device": args.device, "data_root": data_root, "seed": args.seed,
              **args.env_kwargs}
    if args.batch_size:
        kwargs["batch_size"] = args.batch_size
    env = gym.make(args.env, **kwargs)
    return env, agent_class.for_env(env, seed=args.seed, tol=args.tol), kwargs


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    with contextlib.ExitStack() as stack:
        data_root = args.data_root
        if args.synthetic:
            from infocnf_env import ENV_IDS

            batch = args.batch_size or ENV_IDS[args.env].data.batch_size
            data_root = stack.enter_context(tempfile.TemporaryDirectory(prefix="fake-cifar10-"))
            write_synthetic_cifar10(Path(data_root), train_size=batch)
            stack.enter_context(_without_cifar10_md5())
        if data_root is None:
            raise ValueError("pass --data-root DIR (real CIFAR10) or --synthetic")
        env, agent, kwargs = _make_env(args, str(data_root))
        return _loop(args, env, agent, kwargs)


def _loop(args: argparse.Namespace, env, agent, kwargs: dict) -> dict:
    core = env.unwrapped
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    records: list[dict] = []
    start = time.perf_counter()
    result: dict = {}
    obs, _ = env.reset(seed=args.seed)
    for it in range(args.iterations):
        _sync(args.device)
        t0 = time.perf_counter()
        if it:
            obs, _ = env.reset()
        done, info = False, {}
        while not done:
            obs, reward, terminated, truncated, info = env.step(agent.act(obs))
            agent.observe(reward)
            done = terminated or truncated
        agent.end_episode()
        _sync(args.device)
        records.append({"iteration": it + 1, "seconds": time.perf_counter() - t0,
                        "nfe_forward": info.get("nfe_forward"), "nfe_backward": info.get("nfe_backward"),
                        "loss": info.get("loss"), "bits_per_dim": info.get("bits_per_dim"),
                        "solver_error": info.get("solver_error"),
                        "mean_log10_tol": float(np.mean(np.log10(info["tols"]))) if info.get("tols") else None})
        result = _summary(args, core, kwargs, records, cuda, time.perf_counter() - start, bool(agent.modules()))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=2))
        if args.progress:
            r = records[-1]
            print(f"it {it + 1}: {r['seconds']:.2f}s nfe f/b {r['nfe_forward']}/{r['nfe_backward']} "
                  f"loss {r['loss']}", flush=True)
        if args.max_seconds and time.perf_counter() - start > args.max_seconds:
            print(f"stopping after {it + 1} iterations (--max-seconds {args.max_seconds})", flush=True)
            break
    return result


def _summary(args: argparse.Namespace, core, kwargs: dict, records: list[dict], cuda: bool, wall: float,
             learns: bool) -> dict:
    timed = [r for r in records[args.warmup:] if r["nfe_forward"] is not None] or \
        [r for r in records if r["nfe_forward"] is not None]
    seconds = [r["seconds"] for r in timed]
    nfe_f = [r["nfe_forward"] for r in timed]
    nfe_b = [r["nfe_backward"] for r in timed]
    batch = core.task.stream.batch_size
    iters_per_epoch = CIFAR10_TRAIN // batch
    median = statistics.median(seconds) if seconds else float("nan")
    out = {
        "env": args.env, "policy": args.policy, "tol": None if learns else args.tol,
        "device": args.device, "device_name": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "synthetic_data": bool(args.synthetic), "batch_size": batch, "num_blocks": core.num_blocks,
        "env_kwargs": {k: v for k, v in kwargs.items() if k != "data_root"},
        "iterations_done": len(records), "warmup": args.warmup, "timed_iterations": len(timed),
        "seconds_per_iteration_median": median,
        "seconds_per_iteration_mean": statistics.fmean(seconds) if seconds else float("nan"),
        "nfe_forward_mean": statistics.fmean(nfe_f) if nfe_f else float("nan"),
        "nfe_backward_mean": statistics.fmean(nfe_b) if nfe_b else float("nan"),
        "seconds_per_function_evaluation": median / statistics.fmean([f + b for f, b in zip(nfe_f, nfe_b, strict=True)])
        if seconds else float("nan"),
        "solver_failures": sum(1 for r in records if r["solver_error"]),
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "projected_hours_400_epochs_at_this_speed": median * iters_per_epoch * PAPER_EPOCHS / 3600,
        "wall_seconds": wall, "torch": torch.__version__, "python": sys.version.split()[0],
        "per_iteration": records,
    }
    return out


CONFIG: dict[str, Any] = {"env": "InfoCNF-CIFAR10-v0", "iterations": 300, "warmup": 3, "policy": "fixed",
                          "tol": 1e-5, "batch_size": None, "device": "auto", "data_root": None, "synthetic": False,
                          "env_kwargs": {}, "seed": 0, "max_seconds": None, "progress": True, "threads": None}
#: ``--quick``: a CPU smoke test on synthetic CIFAR10, two iterations of a narrow, shallow model
#: (two scales of one flow each).
QUICK: dict[str, Any] = {"device": "cpu", "threads": 1, "synthetic": True, "iterations": 2, "warmup": 0,
                         "batch_size": 4, "env_kwargs": {"hidden": 4, "flows_per_scale": 1, "num_scales": 2},
                         "progress": False}


def check(c: dict[str, Any]) -> None:
    """One ``ValueError`` for settings that cannot run."""
    if c["iterations"] < 1:
        raise ValueError("--iterations must be >= 1")
    if c["synthetic"] and "CIFAR10" not in c["env"]:
        raise ValueError("--synthetic writes CIFAR10-format data: use a CIFAR10 id (or --data-root for MNIST)")
    from agents import registry

    played = [n for n, e in registry.AGENTS.items() if e.agent_class().plays_episodes()]
    if c["policy"] not in played:
        raise ValueError(f"unknown policy {c['policy']!r}; valid: {', '.join(played)}")


def run(ctx: Context) -> dict:
    """The timed iterations; the result is rewritten to ``ctx.result_path`` after every one."""
    c = dict(ctx.config)
    check(c)
    if c["device"] == "auto":
        c["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    set_threads(c["threads"] or default_threads(c["env"]))
    result = measure(argparse.Namespace(**c, json=ctx.result_path))
    keys = ("env", "policy", "device_name", "batch_size", "timed_iterations", "seconds_per_iteration_median",
            "nfe_forward_mean", "nfe_backward_mean", "peak_memory_gib", "projected_hours_400_epochs_at_this_speed")
    print("\n".join(f"{k:<42} {result.get(k)}" for k in keys))
    return result


def section(res: Res) -> str:
    if "bench_gpu" not in res:
        return ("**Not quoted here**: `python -m runs.bench_gpu` (the CIFAR10 id's time per iteration on a GPU, its "
                "`projected_hours_400_epochs_at_this_speed`) and the Table 1/2 recipes in `runs/gpu_recipes.md` "
                "commit no result file, so this page, which quotes committed result files only, holds no GPU figure.")
    b = res["bench_gpu"]
    memory = "" if b["peak_memory_gib"] is None else f", peak memory {b['peak_memory_gib']:.1f} GiB"
    return (f"`python -m runs.bench_gpu` (`runs/results/bench_gpu.json`): `{b['env']}` ({b['policy']}), batch "
            f"{b['batch_size']}, on {b['device_name']}: {b['seconds_per_iteration_median']:.2f} s per iteration "
            f"(median of {b['timed_iterations']}), {b['nfe_forward_mean']:.0f} + {b['nfe_backward_mean']:.0f} NFE"
            f"{memory}; the paper's {PAPER_EPOCHS} epochs at this speed: "
            f"{b['projected_hours_400_epochs_at_this_speed']:.0f} hours.")


STUDY = Study(
    name="bench-gpu",
    summary="performance: the CIFAR10 id on a GPU (time per iteration, NFE, memory); run by name",
    config=CONFIG,
    quick=QUICK,
    run=run,
    page=Page("Performance on a GPU", order=1070, render=section, needs=()),
    nullable_keys=("tol", "peak_memory_gib", "solver_error", "mean_log10_tol", "loss", "bits_per_dim",
                   "nfe_forward", "nfe_backward"),
    uses_digits_regimes=False,
    seeds=1,
    stem="bench_gpu",
    in_all=False,
)
