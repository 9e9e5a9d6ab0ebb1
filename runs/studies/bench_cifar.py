"""bench-cifar: the CIFAR10 ids' flow beside a minimal torchdiffeq multiscale CNF, adjoint on both.

    python -m runs.reproduce bench-cifar                               # CPU, batch 4
    python -m runs.reproduce bench-cifar --set device=cuda batch=900 train_iterations=200 --out runs/results/gpu

The model is the one ``InfoCNF-CIFAR10-v0`` builds (``infocnf_env.ENV_IDS``: 4 scales, 14 CNF
blocks of c+1 -> 64 -> 64 -> 64 -> c conv dynamics, dopri5, Rademacher noise, adjoint, a learned
end time per block) on CIFAR-shaped random data (8-bit levels, dequantised, random labels).

The baseline (:func:`ffjord_pass`) is FFJORD's solve and nothing else, written here on
torchdiffeq: for every block, ``odeint_adjoint`` of (z, log p) with the Hutchinson divergence
at ``rtol = atol = tol``, torchdiffeq's default options (the full adjoint norm, its
initial-step heuristic in both solves), the block's end time as a constant (FFJORD's default
``train_T=False``: no time gradient), and a standard normal prior. The glue between blocks
(logit transform, squeeze, factor-out) is the model's own. It uses the model's own networks, so
both sides integrate the same dynamics with the same weights, and it draws its noise the way the
model does (one Rademacher tensor per block from a generator seeded alike).

Arms, each at the fixed tolerance ``--tol`` (1e-5, the paper's baseline):

* ``ffjord``: the baseline;
* ``full``: the model with the full adjoint norm (``adjoint_norm="full"``): the project's cost
  beside FFJORD's at equal solver settings (it also learns the end times);
* ``seminorm``: the adjoint's step-size control without the parameter-gradient channels;
* ``seminorm_warm``: the seminorm and warm starts (``warm_start``): every block's forward and
  adjoint solve start from the step they accepted in the arm's previous round, rescaled.

Learned tolerances are not an arm: their saving depends on a trained policy (see the
``speed-adjoint`` study). First ``train_iterations`` Adam steps (lr ``lr``) at tolerance
``train_tol`` move the dynamics away from their initialisation (where every block takes one
step). Then a warm-up round and ``rounds`` measured rounds: in each, every arm in turn (the
order rotates between rounds) runs one training iteration (forward, ``loss.backward()``) and
one evaluation pass (``no_grad``, eval mode) on the round's batch; after the round, one Adam
step with the gradient of the round's last iteration, so warm-started steps are one update old,
as in training (the warm-up round gives the warm-started arm its first steps). Reported per
arm: wall times (CUDA-synchronised), forward and backward NFE; per arm against ``ffjord``: the
ratio of the minimum times and of the median times. The JSON is rewritten after every round.
``--quick``: a narrow 2-scale model, batch 1, one round, no training steps.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torchdiffeq
from torch import nn

from flows import build_model
from flows.cnf_block import CNFBlock
from flows.divergence import sample_noise
from flows.model import FlowModel
from flows.transforms import FlowState, Transform
from infocnf_env import ENV_IDS
from infocnf_env.threads import set_threads
from runs.format import sci
from runs.run_cache import Context
from runs.study import Page, Res, Study

ENV_ID = "InfoCNF-CIFAR10-v0"
DATA_SHAPE = (3, 32, 32)
NUM_CLASSES = 10
#: Arm -> (adjoint norm, warm start) of the model; ``ffjord`` is the baseline.
ARMS: dict[str, tuple[str, bool] | None] = {
    "ffjord": None, "full": ("full", False), "seminorm": ("seminorm", False), "seminorm_warm": ("seminorm", True),
}
#: A narrow 2-scale model for ``--quick``.
QUICK_MODEL = {"hidden": 8, "num_scales": 2, "flows_per_scale": 1}


# ---------------------------------------------------------------------------- the minimal baseline
class _HutchinsonCNF(nn.Module):
    """f(t, (z, logp)) = (net(t, z), e^T (d net / dz) e), counting its calls by phase."""

    def __init__(self, net: nn.Module, noise: torch.Tensor, calls: dict[str, int]):
        super().__init__()
        self.net = net
        self.noise = noise
        self.calls = calls

    def forward(self, t: torch.Tensor, states: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        self.calls["backward" if self.calls["in_backward"] else "forward"] += 1
        z = states[0]
        create_graph = torch.is_grad_enabled()  # the adjoint's dynamics; off in the forward solve
        with torch.enable_grad():
            z = z if create_graph and z.requires_grad else z.detach().requires_grad_(True)
            dz = self.net(t, z)
            (e_dfdz,) = torch.autograd.grad(dz, z, self.noise, create_graph=create_graph)
        return dz, (e_dfdz * self.noise).reshape(z.shape[0], -1).sum(1)


def ffjord_pass(model: FlowModel, x: torch.Tensor, tol: float, generator: torch.Generator,
                calls: dict[str, int]) -> torch.Tensor:
    """Bits/dim of ``x`` under the baseline: the model's blocks solved FFJORD's way, N(0, I) prior."""
    state = FlowState(z=x, logdet=x.new_zeros(x.shape[0]))
    for op in model.ops:
        if isinstance(op, CNFBlock):
            func = _HutchinsonCNF(op.net, sample_noise(state.z, "rademacher", generator), calls)
            t = torch.tensor([0.0, float(op.end_time.detach())], device=x.device)
            z, logdet = torchdiffeq.odeint_adjoint(func, (state.z, torch.zeros_like(state.logdet)), t, rtol=tol,
                                                   atol=tol, method="dopri5", adjoint_params=tuple(op.net.parameters()))
            state = replace(state, z=z[-1], logdet=state.logdet + logdet[-1])
        else:
            assert isinstance(op, Transform)  # a FlowModel's ops are CNF blocks and transforms
            state = op(state)
    z = torch.cat([p.reshape(x.shape[0], -1) for p in (*state.factored, state.z)], dim=1)
    logpx = -0.5 * (z.pow(2) + torch.log(torch.tensor(2 * torch.pi))).sum(1) + state.logdet
    return model.bits_per_dim(logpx).mean()


# ---------------------------------------------------------------------------- the arms
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


class Arms:
    """The arms on one model: each of the model's arms keeps its own solver state between rounds."""

    def __init__(self, model: FlowModel, tol: float):
        self.model = model
        self.tol = tol
        self.solver_states: dict[str, dict[str, Any] | None] = {name: None for name in ARMS}

    def _configure(self, name: str) -> None:
        setting = ARMS[name]
        assert setting is not None  # the model's arms only
        norm, warm = setting
        for block in self.model.blocks:
            block.adjoint_norm, block.warm_start = norm, warm
        self.model.load_solver_state(self.solver_states[name])

    def iteration(self, name: str, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict[str, float]:
        """One training iteration (forward and backward) and one evaluation pass of arm ``name``."""
        device = x.device
        gen = lambda: torch.Generator(device=device).manual_seed(seed)  # noqa: E731
        self.model.zero_grad(set_to_none=True)
        self.model.train()
        if ARMS[name] is None:
            calls = {"forward": 0, "backward": 0, "in_backward": 0}

            def train() -> tuple[int, int]:
                loss = ffjord_pass(self.model, x, self.tol, gen(), calls)
                forward = calls["forward"]
                calls["in_backward"] = 1
                loss.backward()
                return forward, calls["backward"]

            train_s, (nfe_forward, nfe_backward) = _timed(device, train)
            calls.update(forward=0, in_backward=0)
            self.model.eval()
            with torch.no_grad():
                eval_s, _ = _timed(device, lambda: ffjord_pass(self.model, x, self.tol, gen(), calls))
            eval_nfe = calls["forward"]
        else:
            self._configure(name)

            def train() -> tuple[int, int]:
                out = self.model(x, y, tol=self.tol, generator=gen())
                out.loss.backward()
                return out.nfe_forward, out.nfe_backward

            train_s, (nfe_forward, nfe_backward) = _timed(device, train)
            self.model.eval()
            with torch.no_grad():
                eval_s, out = _timed(device, lambda: self.model(x, y, tol=self.tol, generator=gen()))
            eval_nfe = out.nfe_forward
            self.solver_states[name] = self.model.solver_state()
        self.model.train()
        return {"iteration_s": train_s, "eval_s": eval_s, "nfe_forward": nfe_forward, "nfe_backward": nfe_backward,
                "eval_nfe": eval_nfe}


def random_batch(batch: int, device: torch.device, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-shaped data: random 8-bit levels, dequantised to [0, 1], and random labels."""
    levels = torch.randint(0, 256, (batch, *DATA_SHAPE), generator=generator)
    x = (levels + torch.rand(levels.shape, generator=generator)) / 256
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=generator)
    return x.to(device), y.to(device)


def _ratios(mine: list[float], base: list[float]) -> dict[str, float]:
    """The ratio of the minimum times and of the median times."""
    return {"min": min(mine) / min(base), "median": statistics.median(mine) / statistics.median(base)}


def summarise(records: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    arms: dict[str, Any] = {}
    for name, rows in records.items():
        arms[name] = {key: [r[key] for r in rows] for key in rows[0]}
        arms[name].update({f"{key}_median": statistics.median(arms[name][key]) for key in rows[0]})
        arms[name].update({f"{key}_min": min(arms[name][key]) for key in ("iteration_s", "eval_s")})
    ratios = {}
    for name in records:
        if name == "ffjord":
            continue
        ratios[name] = {
            "iteration": _ratios(arms[name]["iteration_s"], arms["ffjord"]["iteration_s"]),
            "eval": _ratios(arms[name]["eval_s"], arms["ffjord"]["eval_s"]),
            "nfe_backward": arms[name]["nfe_backward_median"] / arms["ffjord"]["nfe_backward_median"],
            "nfe_forward": arms[name]["nfe_forward_median"] / arms["ffjord"]["nfe_forward_median"],
        }
    return {"arms": arms, "ratios_to_ffjord": ratios}


CONFIG: dict[str, Any] = {"device": "cpu", "batch": 4, "tol": 1e-5, "rounds": 5, "train_iterations": 100,
                          "train_tol": 1e-3, "lr": 1e-3, "threads": 1, "seed": 0, "model": {}}
QUICK: dict[str, Any] = {"batch": 1, "rounds": 1, "train_iterations": 0, "model": QUICK_MODEL}


def run(ctx: Context) -> dict[str, Any]:
    """The arms' rounds (``model``: overrides of the id's model options); the result is rewritten
    to ``ctx.result_path`` after every round."""
    c = ctx.config
    set_threads(c["threads"])
    device = torch.device(c["device"])
    options = {**ENV_IDS[ENV_ID].model, **c["model"]}
    torch.manual_seed(c["seed"])
    model = build_model("infocnf", DATA_SHAPE, NUM_CLASSES, **{**options, "adjoint_norm": "seminorm"}).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=c["lr"])
    data = torch.Generator().manual_seed(c["seed"])
    start = time.perf_counter()
    for i in range(c["train_iterations"]):
        x, y = random_batch(c["batch"], device, data)
        optimizer.zero_grad(set_to_none=True)
        out = model(x, y, tol=c["train_tol"], generator=torch.Generator(device=device).manual_seed(i))
        out.loss.backward()
        optimizer.step()
        print(f"train {i + 1}/{c['train_iterations']}: nfe {out.nfe_forward}+{out.nfe_backward}, "
              f"{time.perf_counter() - start:.0f}s", flush=True)
    train_s = time.perf_counter() - start
    arms = Arms(model, c["tol"])
    records: dict[str, list[dict[str, float]]] = {name: [] for name in ARMS}
    names = list(ARMS)
    result: dict[str, Any] = {}
    for r in range(-1, c["rounds"]):  # round -1: a warm-up round, not recorded
        x, y = random_batch(c["batch"], device, data)
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            record = arms.iteration(name, x, y, seed=1000 + r)
            if r >= 0:
                records[name].append(record)
        optimizer.step()
        if r < 0:
            continue
        result = {
            "env_id": ENV_ID, "model": options, "quick": ctx.quick, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
            "batch": c["batch"], "tol": c["tol"], "threads": c["threads"], "rounds": r + 1,
            "train_iterations": c["train_iterations"], "train_tol": c["train_tol"], "train_s": train_s,
            "num_blocks": model.num_blocks, "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__, "torchdiffeq": torchdiffeq.__version__, **summarise(records),
        }
        if ctx.result_path is not None:
            ctx.result_path.parent.mkdir(parents=True, exist_ok=True)
            ctx.result_path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"round {r + 1}/{c['rounds']}: " + ", ".join(
            f"{n} {records[n][-1]['iteration_s']:.2f}s nfe {records[n][-1]['nfe_forward']}+"
            f"{records[n][-1]['nfe_backward']}" for n in order), flush=True)
    for name, ratio in result["ratios_to_ffjord"].items():
        print(f"{name}: iteration {ratio['iteration']['min']:.2f}x (min) {ratio['iteration']['median']:.2f}x "
              f"(median), eval {ratio['eval']['median']:.2f}x, backward NFE {ratio['nfe_backward']:.2f}x")
    return result


def section(res: Res) -> str:
    b = res["bench_cifar"]
    arms, ratios = b["arms"], b["ratios_to_ffjord"]
    lines = ["| arm | forward + backward NFE | iteration s (median) | vs FFJORD (min, median) | eval s (median) | "
             "eval vs FFJORD (median) |", "|" + " --- |" * 6]
    for name, a in arms.items():
        r = ratios.get(name)
        vs = f"{r['iteration']['min']:.2f}x, {r['iteration']['median']:.2f}x" if r else "1"
        eval_vs = f"{r['eval']['median']:.2f}x" if r else "1"
        lines.append(f"| {name} | {a['nfe_forward_median']:.0f} + {a['nfe_backward_median']:.0f} | "
                     f"{a['iteration_s_median']:.2f} | {vs} | {a['eval_s_median']:.2f} | {eval_vs} |")
    warm = ratios["seminorm_warm"]["iteration"]
    semi = arms["seminorm"]["nfe_backward_median"] / arms["full"]["nfe_backward_median"]
    extra = arms["full"]["nfe_backward_median"] - arms["ffjord"]["nfe_backward_median"]
    return f"""\
`python -m runs.reproduce bench-cifar` (`runs/results/bench_cifar.json`): the \
`{b['env_id']}` model ({b['num_blocks']} blocks, adjoint, learned end times) on CIFAR-shaped random data, batch \
{b['batch']}, {b['device']}, {b['threads']} thread(s), after {b['train_iterations']} Adam steps at \
{sci(b['train_tol'])}; one training iteration and one evaluation pass per arm at {sci(b['tol'])}, interleaved over \
{b['rounds']} rounds, against `ffjord`, a minimal torchdiffeq multiscale CNF with the same networks and noise \
(full adjoint norm, initial-step heuristic, fixed end times). Every lever this measurement covers \
(seminorm + warm start): an iteration {warm['min']:.2f}x (min) / {warm['median']:.2f}x (median) of FFJORD's time \
(target for a trained model: at most 0.5x). The seminorm alone takes {semi:.2f}x the full norm's backward \
evaluations here, and the learned end times cost {extra:.0f} adjoint evaluations over FFJORD's for \
{b['num_blocks']} blocks (one per block); the machine's load average was {b['load_avg']:.1f}, so single times are \
noisy. Random data and {b['train_iterations']} steps leave the dynamics \
close to their initialisation, where a warm-started block needs few steps, so these are not a trained flow's \
ratios.

""" + "\n".join(lines)


STUDY = Study(
    name="bench-cifar",
    summary="performance: the CIFAR10 ids' adjoint path beside a minimal FFJORD solve",
    config=CONFIG,
    quick=QUICK,
    run=run,
    page=Page("Performance: the adjoint path beside FFJORD", order=1060, render=section, needs=("bench_cifar",)),
    nullable_keys=("load_avg",),
    uses_digits_regimes=False,
    seeds=1,
    stem="bench_cifar",
)
