"""bench-flow: the cost of our CNF block per function evaluation, and NFE per iteration against the tolerance.

Part 1 (block cost). One ``flows.cnf_block.CNFBlock`` and a minimal hand-written torchdiffeq
CNF (:class:`_MinimalCNF`, FFJORD's augmented ODE and nothing else) share the same network
object, so the same weights. Both draw their Rademacher noise from a generator reseeded before
every solve with the same recipe, and solve with dopri5 at ``rtol = atol = 1e-5`` on the same
batch, so they integrate the same ODE with the same NFE (checked and reported). Weights are
perturbed (normal, per-case std) so that the solve takes tens of evaluations. Reported: median
over repeats of the wall time of one solve divided by its forward NFE, forward only (under
``no_grad``) and forward + backward of a Gaussian NLL, and the ratio ours / minimal.

Part 2 (tolerance sweep). Small InfoCNF digits models (``multiscale`` on (1, 8, 8) and ``mlp``
on (64,)) after a few Adam steps at tolerance 1e-3, then one training iteration (forward,
``out.loss.backward()``, no optimizer step) per tolerance 1e-8 .. 1e-2 with the same batch,
Hutchinson noise and dropout: forward and backward NFE summed over blocks, and wall times.

Every figure is measured with ``torch.set_num_threads(threads)`` (config: 2, the committed
figures' setting) on both sides. The load average is printed with the results: other processes
on the machine inflate the wall times (especially with more than one thread), not the NFE.
``--quick``: fewer block cases and tolerances, narrower blocks, 3 training steps.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import TypeVar

import torch
import torchdiffeq
from torch import nn

from flows import BatchStream, build_model, load_dataset
from flows.cnf_block import CNFBlock
from flows.model import FlowModel, FlowOutput
from flows.nets import conv_net, mlp_net
from flows.train import fit
from flows.transforms import FlowState, LogitTransform, Squeeze
from infocnf_env.threads import set_threads
from runs.format import rng, sci
from runs.run_cache import Context
from runs.study import Page, Res, Study

BLOCK_TOL = 1e-5
TRAIN_TOL = 1e-3
SWEEP_TOLS = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
QUICK_SWEEP_TOLS = (1e-6, 1e-4, 1e-2)
NOISE_SEED = 1234


# ---------------------------------------------------------------------------- the minimal baseline
class _MinimalCNF(nn.Module):
    """f(t, (z, logp)) = (net(t, z), e^T d net/dz e): FFJORD's augmented ODE, nothing else."""

    def __init__(self, net: nn.Module, noise: torch.Tensor):
        super().__init__()
        self.net = net
        self.noise = noise
        self.nfe = 0

    def forward(self, t: torch.Tensor, states: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        self.nfe += 1
        z = states[0]
        training = torch.is_grad_enabled()
        with torch.enable_grad():
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            dz = self.net(t, z)
            (e_dfdz,) = torch.autograd.grad(dz, z, self.noise, create_graph=training)
        div = (e_dfdz * self.noise).reshape(z.shape[0], -1).sum(1)
        if not training:
            return dz.detach(), div.detach()
        return dz, div


#: What a timed solve returns: the block output, its log-determinant and its NFE.
Solved = tuple[torch.Tensor, torch.Tensor, int]
R = TypeVar("R")


def _minimal_solve(net: nn.Module, z: torch.Tensor, tol: float, generator: torch.Generator) -> Solved:
    noise = torch.randint(0, 2, z.shape, generator=generator).to(z.dtype) * 2 - 1
    func = _MinimalCNF(net, noise)
    t = torch.tensor([0.0, 1.0]).to(z)
    zt, logdet = torchdiffeq.odeint(func, (z, z.new_zeros(z.shape[0])), t, rtol=tol, atol=tol, method="dopri5")
    return zt[-1], logdet[-1], func.nfe


def _ours_solve(block: CNFBlock, z: torch.Tensor, tol: float, generator: torch.Generator) -> Solved:
    out = block(z, tol=tol, generator=generator)
    return out.z, out.logdet, out.stats.nfe


# ---------------------------------------------------------------------------- helpers
def _perturb(module: nn.Module, std: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def _nll(z: torch.Tensor, logdet: torch.Tensor) -> torch.Tensor:
    return (0.5 * z.reshape(z.shape[0], -1).pow(2).sum(1) - logdet).mean()


def _timed(fn: Callable[[], R]) -> tuple[float, R]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def _digits_batch(batch: int, seed: int) -> tuple[BatchStream, torch.Tensor, torch.Tensor]:
    stream = BatchStream(load_dataset("digits"), batch, seed=seed)
    x, y = stream.next()
    return stream, x, y


# ---------------------------------------------------------------------------- part 1: block cost
@dataclass
class BlockCost:
    case: str
    shape: tuple[int, ...]
    std: float
    nfe_ours: int
    nfe_minimal: int
    nfe_backward_ours: int
    max_abs_diff: float
    fwd_ms_per_nfe_ours: float
    fwd_ms_per_nfe_minimal: float
    fwdbwd_ms_per_nfe_ours: float
    fwdbwd_ms_per_nfe_minimal: float

    @property
    def fwd_ratio(self) -> float:
        return self.fwd_ms_per_nfe_ours / self.fwd_ms_per_nfe_minimal

    @property
    def fwdbwd_ratio(self) -> float:
        return self.fwdbwd_ms_per_nfe_ours / self.fwdbwd_ms_per_nfe_minimal

    def as_dict(self) -> dict:
        return {**asdict(self), "fwd_ratio": self.fwd_ratio, "fwdbwd_ratio": self.fwdbwd_ratio}


def bench_block(
    case: str, net: nn.Module, z: torch.Tensor, std: float, repeats: int, tol: float = BLOCK_TOL
) -> BlockCost:
    """Per-NFE wall time of ``CNFBlock(net)`` and of the minimal CNF on the same ``net`` and ``z``."""
    _perturb(net, std, seed=0)
    block = CNFBlock(net, solver="dopri5", divergence="hutchinson", noise="rademacher")
    sides: dict[str, Callable[[torch.Generator], Solved]] = {
        "ours": lambda g: _ours_solve(block, z, tol, g),
        "minimal": lambda g: _minimal_solve(net, z, tol, g),
    }

    def forward_only(side: str) -> Solved:
        with torch.no_grad():
            return sides[side](torch.Generator().manual_seed(NOISE_SEED))

    def forward_backward(side: str) -> Solved:
        net.zero_grad(set_to_none=True)
        z_out, logdet, nfe = sides[side](torch.Generator().manual_seed(NOISE_SEED))
        _nll(z_out, logdet).backward()
        return z_out, logdet, nfe

    # Warm-up, and the check that both sides integrate the same ODE.
    ref = {side: forward_only(side) for side in sides}
    forward_backward("minimal")
    net.zero_grad(set_to_none=True)
    out = block(z, tol=tol, generator=torch.Generator().manual_seed(NOISE_SEED))
    _nll(out.z, out.logdet).backward()
    nfe_backward = out.stats.nfe_backward
    diff = max(float((ref["ours"][0] - ref["minimal"][0]).abs().max()),
               float((ref["ours"][1] - ref["minimal"][1]).abs().max()))

    per_nfe: dict[tuple[str, str], list[float]] = {}
    for r in range(repeats):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))  # alternate to cancel drift
        for mode, fn in (("fwd", forward_only), ("fwdbwd", forward_backward)):
            for side in order:
                seconds, (_, _, nfe) = _timed(partial(fn, side))
                per_nfe.setdefault((mode, side), []).append(1e3 * seconds / nfe)
    med = {key: statistics.median(values) for key, values in per_nfe.items()}
    return BlockCost(
        case=case, shape=tuple(z.shape), std=std, nfe_ours=ref["ours"][2], nfe_minimal=ref["minimal"][2],
        nfe_backward_ours=nfe_backward, max_abs_diff=diff,
        fwd_ms_per_nfe_ours=med[("fwd", "ours")], fwd_ms_per_nfe_minimal=med[("fwd", "minimal")],
        fwdbwd_ms_per_nfe_ours=med[("fwdbwd", "ours")], fwdbwd_ms_per_nfe_minimal=med[("fwdbwd", "minimal")],
    )


def block_cases(x: torch.Tensor, hidden: int, quick: bool) -> list[tuple[str, nn.Module, torch.Tensor, float]]:
    """(name, net, input, perturbation std): std chosen so a dopri5 solve at 1e-5 takes tens of NFE
    (each case's NFE is in the result)."""
    state = LogitTransform(1e-6)(FlowState(z=x, logdet=x.new_zeros(x.shape[0])))
    squeezed = Squeeze()(state).z
    torch.manual_seed(0)
    cases: list[tuple[str, nn.Module, torch.Tensor, float]] = [
        (f"mlp {hidden}", mlp_net(64, hidden), state.z.reshape(x.shape[0], -1), 0.35),
        (f"conv {hidden} 4x4x4", conv_net(4, hidden), squeezed, 0.1),
    ]
    if not quick:
        cases.append((f"conv {hidden} 1x8x8", conv_net(1, hidden), state.z, 0.1))
    return cases


# ---------------------------------------------------------------------------- part 2: tolerance sweep
@dataclass
class SweepPoint:
    arch: str
    tol: float
    nfe_forward: int
    nfe_backward: int
    nfe_per_block: tuple[int, ...]
    fwd_s: float
    fwdbwd_s: float
    bits_per_dim: float
    #: The same pass with warm-started blocks (each block's first step: the step it accepted in
    #: one earlier pass at this tolerance) instead of the initial-step heuristic.
    nfe_forward_warm: int
    nfe_backward_warm: int
    bits_per_dim_warm: float


def sweep_model(arch: str, hidden: int) -> tuple[FlowModel, tuple[int, ...]]:
    if arch == "multiscale":
        shape: tuple[int, ...] = (1, 8, 8)
        model = build_model("infocnf", shape, 10, "multiscale", hidden=hidden, num_scales=2, flows_per_scale=1,
                            num_levels=17)
    else:
        shape = (64,)
        model = build_model("infocnf", shape, 10, "mlp", hidden=hidden, num_blocks=2, num_levels=17)
    return model, shape


def sweep(
    arch: str, model: FlowModel, x: torch.Tensor, y: torch.Tensor, tols: tuple[float, ...], iterations: int
) -> list[SweepPoint]:
    """One training iteration (no optimizer step) per tolerance; median wall times over ``iterations``."""
    x = x.reshape(x.shape[0], *model.data_shape)
    points = []
    for tol in tols:
        fwd, total = [], []
        for _ in range(iterations):
            model.zero_grad(set_to_none=True)
            g = torch.Generator().manual_seed(NOISE_SEED)
            t0 = time.perf_counter()
            out = model(x, y, tol=tol, generator=g)
            t1 = time.perf_counter()
            out.loss.backward()
            t2 = time.perf_counter()
            fwd.append(t1 - t0)
            total.append(t2 - t0)
        warm = _warm_pass(model, x, y, tol)
        points.append(SweepPoint(
            arch=arch, tol=tol, nfe_forward=out.nfe_forward, nfe_backward=out.nfe_backward,
            nfe_per_block=tuple(s.nfe for s in out.stats), fwd_s=statistics.median(fwd),
            fwdbwd_s=statistics.median(total), bits_per_dim=float(out.bits_per_dim.detach()),
            nfe_forward_warm=warm.nfe_forward, nfe_backward_warm=warm.nfe_backward,
            bits_per_dim_warm=float(warm.bits_per_dim.detach()),
        ))
    return points


def _warm_pass(model: FlowModel, x: torch.Tensor, y: torch.Tensor, tol: float) -> FlowOutput:
    """The sweep's training iteration with warm-started blocks, seeded by one pass at ``tol``."""
    for block in model.blocks:
        block.warm_start, block.last_step = True, None
    try:
        for _ in range(2):  # the first pass records each block's step, the second starts from it
            model.zero_grad(set_to_none=True)
            out = model(x, y, tol=tol, generator=torch.Generator().manual_seed(NOISE_SEED))
            out.loss.backward()
    finally:
        for block in model.blocks:
            block.warm_start, block.last_step = False, None
    return out


# ---------------------------------------------------------------------------- driver and tables
def _print_block_table(rows: list[BlockCost]) -> None:
    print(f"Part 1: cost per function evaluation, dopri5 rtol=atol={BLOCK_TOL:.0e}, Rademacher noise "
          "(ms per forward NFE, median over repeats)")
    head = (f"{'case':<18} {'input':<14} {'std':>5} {'NFE':>4} {'bNFE':>4} {'same':>5} {'|diff|':>8}  "
            f"{'fwd ours':>9} {'fwd min':>9} {'ratio':>6}  {'f+b ours':>9} {'f+b min':>9} {'ratio':>6}")
    print(head)
    print("-" * len(head))
    for r in rows:
        same = "yes" if r.nfe_ours == r.nfe_minimal else f"{r.nfe_minimal}"
        shape = "x".join(map(str, r.shape))
        print(f"{r.case:<18} {shape:<14} {r.std:>5.2f} {r.nfe_ours:>4d} {r.nfe_backward_ours:>4d} {same:>5} "
              f"{r.max_abs_diff:>8.1e}  {r.fwd_ms_per_nfe_ours:>9.3f} {r.fwd_ms_per_nfe_minimal:>9.3f} "
              f"{r.fwd_ratio:>6.3f}  {r.fwdbwd_ms_per_nfe_ours:>9.3f} {r.fwdbwd_ms_per_nfe_minimal:>9.3f} "
              f"{r.fwdbwd_ratio:>6.3f}")
    print("NFE: forward NFE of one solve; bNFE: our counter's backward NFE; same: minimal side has the same NFE; "
          "|diff|: max |z|, |logdet| gap; ratio: ours / minimal")


def _print_sweep_table(points: list[SweepPoint], train_loss: dict[str, float], train_steps: int) -> None:
    print(f"Part 2: NFE per training iteration vs tolerance (InfoCNF digits, after {train_steps} Adam steps at "
          f"tol {TRAIN_TOL:.0e}; forward + out.loss.backward(), median wall time)")
    head = (f"{'arch':<11} {'tol':>6} {'fwd NFE':>8} {'bwd NFE':>8} {'NFE per block':<18} {'fwd s':>8} "
            f"{'fwd+bwd s':>10} {'f+b ms/NFE':>10} {'bits/dim':>9} {'warm fwd NFE':>13}")
    print(head)
    print("-" * len(head))
    for p in points:
        blocks = "/".join(map(str, p.nfe_per_block))
        ms = 1e3 * p.fwdbwd_s / max(p.nfe_forward, 1)
        print(f"{p.arch:<11} {p.tol:>6.0e} {p.nfe_forward:>8d} {p.nfe_backward:>8d} {blocks:<18} {p.fwd_s:>8.3f} "
              f"{p.fwdbwd_s:>10.3f} {ms:>10.2f} {p.bits_per_dim:>9.4f} {p.nfe_forward_warm:>13d}")
    print("train loss after warm-up training: " + ", ".join(f"{k} {v:.3f}" for k, v in train_loss.items()))


def measure(batch: int, repeats: int, quick: bool, threads: int, hidden: int, sweep_hidden: int,
            train_steps: int, sweep_iterations: int) -> dict:
    set_threads(threads)
    stream, x, y = _digits_batch(batch, seed=0)
    t_start = time.perf_counter()
    print(f"torch {torch.__version__}, torchdiffeq {torchdiffeq.__version__}, threads {torch.get_num_threads()}, "
          f"batch {x.shape[0]}, load average at start {os.getloadavg()[0]:.2f}")
    print()

    block_rows = [bench_block(name, net, z, std, repeats) for name, net, z, std in block_cases(x, hidden, quick)]
    _print_block_table(block_rows)
    print()

    tols = QUICK_SWEEP_TOLS if quick else SWEEP_TOLS
    points, train_loss = [], {}
    for arch in ("multiscale", "mlp"):
        torch.manual_seed(0)
        model, shape = sweep_model(arch, sweep_hidden)
        train_loss[arch] = fit(model, stream, train_steps, tol=TRAIN_TOL, lr=1e-3,
                               generator=torch.Generator().manual_seed(1)).loss
        points += sweep(arch, model, x, y, tols, sweep_iterations)
    _print_sweep_table(points, train_loss, train_steps)
    elapsed = time.perf_counter() - t_start
    print(f"\ntotal {elapsed:.1f} s, load average at end {os.getloadavg()[0]:.2f}")
    return {
        "settings": {
            "batch": int(x.shape[0]), "repeats": repeats, "quick": quick, "threads": threads,
            "block_tol": BLOCK_TOL, "block_hidden": hidden, "sweep_hidden": sweep_hidden,
            "train_steps": train_steps, "train_tol": TRAIN_TOL, "sweep_iterations": sweep_iterations,
            "torch": torch.__version__, "torchdiffeq": torchdiffeq.__version__, "python": platform.python_version(),
        },
        "block_cost": [r.as_dict() for r in block_rows],
        "tolerance_sweep": [asdict(p) for p in points],
        "train_loss": train_loss,
        "elapsed_s": elapsed,
    }


CONFIG = {"batch": 64, "repeats": 9, "threads": 2, "block_hidden": 64, "sweep_hidden": 32, "train_steps": 30,
          "sweep_iterations": 2}
QUICK = {"repeats": 2, "threads": 1, "block_hidden": 32, "train_steps": 3, "sweep_iterations": 1}


def run(ctx: Context) -> dict:
    c = ctx.config
    return measure(c["batch"], c["repeats"], ctx.quick, c["threads"], hidden=c["block_hidden"],
                   sweep_hidden=c["sweep_hidden"], train_steps=c["train_steps"], sweep_iterations=c["sweep_iterations"])


def section(res: Res) -> str:
    b = res["bench_flow"]
    st = b["settings"]
    ratios = [c["fwdbwd_ms_per_nfe_ours"] / c["fwdbwd_ms_per_nfe_minimal"] for c in b["block_cost"]]
    lines = ["| arch | tol | forward NFE | backward NFE | bits/dim | forward NFE, warm start | "
             "bits/dim, warm start |", "|" + " --- |" * 7]
    for p in b["tolerance_sweep"]:
        lines.append(f"| {p['arch']} | {sci(p['tol'])} | {p['nfe_forward']} | {p['nfe_backward']} | "
                     f"{p['bits_per_dim']:.4f} | {p['nfe_forward_warm']} | {p['bits_per_dim_warm']:.4f} |")
    return f"""\
`python -m runs.reproduce bench-flow` (`runs/results/bench_flow.json`): our CNF block costs {rng(ratios, 2)}x a \
minimal hand-written torchdiffeq CNF per function evaluation (forward + backward, {len(ratios)} cases). One \
training iteration of small digits flows after {st['train_steps']} Adam steps at {sci(st['train_tol'])}, batch \
{st['batch']}, per tolerance, with the initial-step heuristic and warm-started:

""" + "\n".join(lines)


STUDY = Study(
    name="bench-flow",
    summary="performance: our CNF block's cost per NFE, and the NFE per iteration against the tolerance",
    config=CONFIG,
    quick=QUICK,
    run=run,
    page=Page("Performance: NFE against the tolerance, and the cost of one evaluation", order=1040, render=section,
              needs=("bench_flow",)),
    uses_digits_regimes=False,
    seeds=1,
    stem="bench_flow",
)
