"""bench-backend: the ODE backends of ``flows.ode.solve`` on the digits InfoCNF flow: is there a quicker solve loop?

The flow is ``InfoCNF-Digits-v0``'s (hidden 24, 2 scales x 1 flow, 17 levels, batch 128 of
``BatchStream(load_dataset("digits", "train"), 128, seed=0)``), trained ``train_steps`` Adam
steps at tolerance 1e-3 first (torchdiffeq) so that the solves take more than the few steps of
fresh weights. Every candidate then runs on a copy of those weights, with the same batch, the
same Hutchinson noise (generator reseeded per pass) and the same dropout (global seed reseeded),
at each tolerance (the timed passes go round the candidates in turn):

* ``train_s``: median wall time of one training pass (forward + ``out.loss.backward()``, no
  optimizer step) over ``repeats`` passes after ``warmup`` passes;
* ``eval_s``: median wall time of one forward pass under ``torch.no_grad`` (what evaluation at a
  tolerance costs);
* ``nfe_forward`` / ``nfe_backward``: the model's own NFE counts of the training pass, and
  ``s_per_nfe`` = ``train_s / (nfe_forward + nfe_backward)``;
* ``bpd_gap``: ``|bits/dim - torchdiffeq's bits/dim at tol 1e-5|`` of the training pass.

Candidates: every backend of ``flows.ode.BACKENDS`` whose packages are installed, and
``compile`` (torchdiffeq with each block's dynamics network wrapped in ``torch.compile``; not a
library backend: it is measured here, and a failure is recorded as ``error``). Its training pass
fails: the divergence is a vector-Jacobian product taken with ``create_graph=True`` and the loss
back-propagates through it, a double backward, which AOTAutograd's compiled graphs refuse
("donated buffers ... create_graph=False", or "does not currently support double backward").

Wall times depend on the load of the machine (the load average is recorded); NFE do not.
``--quick``: batch 16, hidden 8, no training, one repeat, no ``compile``.
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torchdiffeq

from flows import BatchStream, build_model, load_dataset
from flows.cnf_block import CNFBlock
from flows.model import FlowModel
from flows.ode import BACKENDS
from flows.train import fit
from infocnf_env import ENV_IDS
from infocnf_env.threads import set_threads
from runs.format import sci
from runs.run_cache import Context
from runs.study import Page, Res, Study

ENV_ID = "InfoCNF-Digits-v0"
REFERENCE = ("torchdiffeq", 1e-5)
NOISE_SEED = 1234
DROPOUT_SEED = 4321


@dataclass
class Args:
    tols: tuple[float, ...] = (1e-5, 1e-3)
    backends: tuple[str, ...] = ("torchdiffeq", "torchode", "compile")
    batch: int = 128
    hidden: int | None = None  # None: the env's
    train_steps: int = 20
    train_tol: float = 1e-3
    warmup: int = 1
    repeats: int = 7
    threads: int = 1
    seed: int = 0
    out: str = ""  #: the result's path (recorded)
    quick: bool = False


@dataclass
class Point:
    backend: str
    tol: float
    train_s: float | None = None
    eval_s: float | None = None
    #: the first successful pass (a warmup when ``warmup`` > 0), torch.compile's compilation included
    first_pass_s: float | None = None
    nfe_forward: int | None = None
    nfe_backward: int | None = None
    nfe_per_block: list[int] = field(default_factory=list)
    eval_nfe_forward: int | None = None
    s_per_nfe: float | None = None
    eval_s_per_nfe: float | None = None
    bits_per_dim: float | None = None
    bpd_gap: float | None = None
    error: str | None = None


def available(backend: str) -> str | None:
    """``None`` when ``backend`` can run here, else why not."""
    if backend == "compile":
        return None if hasattr(torch, "compile") else "torch.compile is missing"
    if backend not in BACKENDS:
        return f"unknown backend (valid: {', '.join([*BACKENDS, 'compile'])})"
    if backend == "torchode":
        try:
            import torchode  # noqa: F401
        except ImportError:
            return "torchode is not installed (pip install 'torchode>=1.0.1,<2')"
    return None


def digits_model(args: Args) -> tuple[FlowModel, torch.Tensor, torch.Tensor]:
    env = ENV_IDS[ENV_ID]
    options: dict[str, Any] = dict(env.model)
    if args.hidden is not None:
        options["hidden"] = args.hidden
    data = load_dataset(env.data.dataset, "train")
    options.setdefault("num_levels", data.num_levels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = build_model(env.head, data.shape, data.num_classes, env.arch, **options)
    stream = BatchStream(data, args.batch, seed=args.seed)
    if args.train_steps:
        fit(model, stream, args.train_steps, tol=args.train_tol, lr=env.optim.lr,
            generator=torch.Generator().manual_seed(args.seed))
    x, y = stream.next()
    return model, x, y


def candidate(base: FlowModel, backend: str) -> FlowModel:
    """A copy of ``base`` that solves with ``backend``."""
    model = copy.deepcopy(base)
    for block in model.blocks:
        assert isinstance(block, CNFBlock)
        if backend == "compile":
            block.backend = "torchdiffeq"
            block.net = torch.compile(block.net)  # type: ignore[assignment]
        else:
            block.backend = backend
    return model


def _train_pass(model: FlowModel, x: torch.Tensor, y: torch.Tensor, tol: float) -> tuple[float, Any]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(DROPOUT_SEED)
    g = torch.Generator().manual_seed(NOISE_SEED)
    t0 = time.perf_counter()
    out = model(x, y, tol=tol, generator=g)
    out.loss.backward()
    return time.perf_counter() - t0, out


def _eval_pass(model: FlowModel, x: torch.Tensor, y: torch.Tensor, tol: float) -> tuple[float, Any]:
    torch.manual_seed(DROPOUT_SEED)
    g = torch.Generator().manual_seed(NOISE_SEED)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model(x, y, tol=tol, generator=g)
    return time.perf_counter() - t0, out


def _error(stage: str, err: Exception) -> str:
    return f"{stage}: {type(err).__name__}: {str(err).splitlines()[0][:200]}"


def measure(models: dict[str, FlowModel], tol: float, x: torch.Tensor, y: torch.Tensor, args: Args) -> list[Point]:
    """Every candidate at ``tol``; the timed passes go round the candidates in turn, so that a
    change in the machine's load hits them alike. A pass that fails is recorded in ``error`` and
    the candidate leaves that stage (a failed training pass still leaves the forward-only one)."""
    points = {name: Point(backend=name, tol=tol) for name in models}
    for stage, one_pass in (("training pass", _train_pass), ("forward-only pass", _eval_pass)):
        live = list(models)
        times: dict[str, list[float]] = {name: [] for name in live}
        outs: dict[str, Any] = {}
        for i in range(args.warmup + args.repeats):
            for name in list(live):
                try:
                    seconds, outs[name] = one_pass(models[name], x, y, tol)
                except Exception as err:  # recorded, not fatal: a candidate may fail
                    message = _error(stage, err)
                    points[name].error = message if points[name].error is None else f"{points[name].error}; {message}"
                    live.remove(name)
                    continue
                if i == 0 and points[name].first_pass_s is None:
                    points[name].first_pass_s = seconds
                if i >= args.warmup:
                    times[name].append(seconds)
        for name in live:
            p, out, median = points[name], outs[name], statistics.median(times[name])
            if one_pass is _train_pass:
                p.train_s, p.nfe_forward, p.nfe_backward = median, out.nfe_forward, out.nfe_backward
                p.nfe_per_block = [s.nfe for s in out.stats]
                p.s_per_nfe = median / max(out.nfe_forward + out.nfe_backward, 1)
                p.bits_per_dim = float(out.bits_per_dim.detach())
            else:
                p.eval_s, p.eval_nfe_forward = median, out.nfe_forward
                p.eval_s_per_nfe = median / max(out.nfe_forward, 1)
    return list(points.values())


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__, "torchdiffeq": torchdiffeq.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0],
    }
    try:
        import torchode

        info["torchode"] = torchode.__version__
    except ImportError:
        info["torchode"] = None
    return info


def _fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(points: list[Point]) -> None:
    head = (f"{'backend':<12} {'tol':>6} {'train s':>8} {'eval s':>8} {'fNFE':>5} {'bNFE':>5} "
            f"{'ms/NFE':>7} {'|dbpd|':>8}  error")
    print(head)
    print("-" * len(head))
    for p in points:
        ms = None if p.s_per_nfe is None else 1000 * p.s_per_nfe
        print(f"{p.backend:<12} {p.tol:>6.0e} {_fmt(p.train_s, '8.3f')} {_fmt(p.eval_s, '8.3f')} "
              f"{_fmt(p.nfe_forward, '5d')} {_fmt(p.nfe_backward, '5d')} {_fmt(ms, '7.2f')} "
              f"{_fmt(p.bpd_gap, '8.1e')}  {p.error or ''}")


def compare_backends(args: Args) -> dict[str, Any]:
    previous_threads = set_threads(args.threads)
    try:
        start, load_at_start = time.perf_counter(), os.getloadavg()[0]
        skipped = {b: why for b in args.backends if (why := available(b)) is not None}
        backends = [b for b in args.backends if b not in skipped]
        for b, why in skipped.items():
            print(f"skipped {b}: {why}")
        base, x, y = digits_model(args)
        models = {backend: candidate(base, backend) for backend in backends}
        points = []
        for tol in args.tols:
            for point in measure(models, tol, x, y, args):
                points.append(point)
                print(f"  {point.backend} tol {tol:.0e}: train {_fmt(point.train_s, '.3f')} s, "
                      f"NFE {point.nfe_forward}/{point.nfe_backward} {point.error or ''}", flush=True)
        reference = next((p.bits_per_dim for p in points if (p.backend, p.tol) == REFERENCE), None)
        for p in points:
            if reference is not None and p.bits_per_dim is not None:
                p.bpd_gap = abs(p.bits_per_dim - reference)
        print_table(points)
        elapsed = time.perf_counter() - start
        print(f"total {elapsed:.1f} s, threads {args.threads}, load average {os.getloadavg()[0]:.2f}")
        return {
            "args": {**asdict(args), "tols": list(args.tols), "backends": list(args.backends)},
            "env_id": ENV_ID, "reference": {"backend": REFERENCE[0], "tol": REFERENCE[1]},
            "machine": {**machine(), "load_average_start": load_at_start}, "skipped": skipped, "elapsed_s": elapsed,
            "points": [asdict(p) for p in points],
        }
    finally:
        set_threads(previous_threads)


CONFIG: dict[str, Any] = {"tols": [1e-5, 1e-3], "backends": ["torchdiffeq", "torchode", "compile"], "batch": 128,
                          "hidden": None, "train_steps": 20, "train_tol": 1e-3, "warmup": 1, "repeats": 7, "threads": 1,
                          "seed": 0}
QUICK: dict[str, Any] = {"backends": ["torchdiffeq", "torchode"], "batch": 16, "hidden": 8, "train_steps": 0,
                         "warmup": 0, "repeats": 1}


def run(ctx: Context) -> dict[str, Any]:
    c = ctx.config
    args = Args(tols=tuple(c["tols"]), backends=tuple(c["backends"]), batch=c["batch"], hidden=c["hidden"],
                train_steps=c["train_steps"], train_tol=c["train_tol"], warmup=c["warmup"], repeats=c["repeats"],
                threads=c["threads"], seed=c["seed"], out=str(ctx.result_path or ""), quick=ctx.quick)
    return compare_backends(args)


def section(res: Res) -> str:
    b = res["bench_backend"]
    lines = ["| backend | tol | train s / pass | forward NFE | backward NFE | ms per NFE | bits/dim gap |",
             "|" + " --- |" * 7]
    for p in b["points"]:
        if p.get("train_s") is None:
            continue
        lines.append(f"| {p['backend']} | {sci(p['tol'])} | {p['train_s']:.3f} | {p['nfe_forward']} | "
                     f"{p['nfe_backward']} | {1e3 * p['s_per_nfe']:.2f} | {p['bpd_gap']:.1e} |")
    return f"""\
`python -m runs.reproduce bench-backend` (`runs/results/bench_backend.json`): the digits InfoCNF flow, \
one training pass (forward + backward) per backend, median over repeats, {b['machine']['threads']} thread(s). \
The bits/dim gap is against torchdiffeq at 1e-5. `torch.compile` of the dynamics cannot run a training pass \
(the divergence's double backward), so it has no row.

""" + "\n".join(lines)


STUDY = Study(
    name="bench-backend",
    summary="performance: the ODE backends of flows.ode.solve on the digits flow",
    config=CONFIG,
    quick=QUICK,
    run=run,
    page=Page("Performance: ODE backends", order=1050, render=section, needs=("bench_backend",)),
    nullable_keys=("train_s", "eval_s", "first_pass_s", "nfe_forward", "nfe_backward", "eval_nfe_forward",
                   "s_per_nfe", "eval_s_per_nfe", "bits_per_dim", "bpd_gap", "error", "torchode"),
    uses_digits_regimes=False,
    seeds=1,
    stem="bench_backend",
)
