"""NFE counts against an independent count of the dynamics networks' calls.

The library counts evaluations in its ODE functions (``flows.ode.NFECounter``). These tests
count them apart from it, with hooks on the ``net`` module of every CNF block (the ``dynamics``
module of the LatentODE), and tag each call with the step it belongs to through torchdiffeq's
step callbacks (``callback_step`` / ``callback_accept_step`` / ``callback_reject_step``).

What they establish (dopri5, torchdiffeq 0.2):

* Forward NFE is every call of the dynamics network during the forward solve: the solve's first
  evaluation ``f0``, the initial-step heuristic's second evaluation (absent when a warm start
  gives the first step), and 6 per step, accepted or rejected (dopri5 reuses its last stage).
* With the adjoint method, backward NFE is every call of the dynamics network made while
  ``loss.backward()`` runs, i.e. the adjoint solve's evaluations (its own start-up and rejected
  steps included). Forward + backward is then the paper's "all evaluations of the forward solve
  plus all of the adjoint solve".
* With direct back-propagation, no evaluation happens during ``loss.backward()``; backward NFE is
  the number of network calls whose output the gradient flows through (equal to the count of a
  ``register_full_backward_hook`` on the net during backward). It is at most the forward NFE:

  - every evaluation of an accepted step and every solve's ``f0`` gets a gradient;
  - evaluations of rejected steps never do: a rejected step leaves the state, the interpolant
    and the time where they were, and the next step size is computed under ``no_grad``;
  - the heuristic's second evaluation gets a gradient only when it sets the first step:
    torchdiffeq does not detach the heuristic's step, so the first ``dt`` (and through it every
    later time) depends on ``f0`` and possibly on that evaluation. A warm start passes the first
    step as a plain number, so then backward NFE = forward NFE - evaluations of rejected steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import pytest
import torch
from flowkit import DIGITS_ID, TINY, perturb
from torch import nn

import infocnf_env  # noqa: F401  (registers the ids)
from flows import BatchStream, build_model, cnf_block, latent_ode, load_dataset
from flows.latent_ode import LatentODE

#: dopri5's evaluations per step (7 stages, the first reused from the previous step).
PER_STEP = 6
DIGITS = dict(hidden=8, num_scales=2, flows_per_scale=1, num_levels=17)
TOY = dict(num_blocks=2, hidden=16, num_layers=2, logit_alpha=None, num_levels=None)


@dataclass
class Solve:
    """The network calls of one forward solve, by role (indices into ``Probe.outputs``)."""

    start: list[int] = field(default_factory=list)  # f0, then the heuristic's evaluation if any
    accepted: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    step_calls: list[int] = field(default_factory=list)  # calls per step, accepted or rejected
    first_dt: torch.Tensor | None = None


@dataclass
class Probe:
    """Counts the calls of some dynamics networks without the library's counters.

    ``forward[k]`` / ``during_backward[k]``: calls of network ``k`` outside / inside
    :meth:`backward`; ``backward_hooks[k]``: its full backward hook firing inside it.
    ``outputs`` keeps every forward-pass output so that :meth:`watch` can tell which ones the
    gradient reaches; ``solves`` sorts them by step (filled in by :func:`tagged_steps`).
    """

    nets: list[nn.Module]
    forward: list[int] = field(default_factory=list)
    during_backward: list[int] = field(default_factory=list)
    backward_hooks: list[int] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)
    solves: list[Solve] = field(default_factory=list)
    reached: set[int] = field(default_factory=set)
    in_backward: bool = False
    _pending: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reset()
        for k, net in enumerate(self.nets):
            net.register_forward_hook(self._forward_hook(k))
            net.register_full_backward_hook(self._backward_hook(k))

    def _forward_hook(self, k: int) -> Callable[..., None]:
        return lambda module, inputs, output: self._on_call(k, output)

    def _backward_hook(self, k: int) -> Callable[..., None]:
        return lambda module, grad_inputs, grad_outputs: self._on_backward(k)

    def reset(self) -> None:
        self.forward = [0] * len(self.nets)
        self.during_backward = [0] * len(self.nets)
        self.backward_hooks = [0] * len(self.nets)
        self.outputs, self.solves, self.reached, self._pending = [], [], set(), []

    def _on_call(self, k: int, output: torch.Tensor) -> None:
        if self.in_backward:
            self.during_backward[k] += 1
            return
        self.forward[k] += 1
        self._pending.append(len(self.outputs))
        self.outputs.append(output)

    def _on_backward(self, k: int) -> None:
        if self.in_backward:  # (the hook also fires for the divergence's own vector-Jacobian products)
            self.backward_hooks[k] += 1

    # torchdiffeq's step callbacks, routed here by tagged_steps()
    def step(self, dt: torch.Tensor) -> None:
        if self._pending:  # calls before a solve's first step: its start
            self.solves.append(Solve(start=self._pending, first_dt=dt))
            self._pending = []

    def settle(self, accepted: bool) -> None:
        solve = self.solves[-1]
        (solve.accepted if accepted else solve.rejected).extend(self._pending)
        solve.step_calls.append(len(self._pending))
        self._pending = []

    def watch(self) -> None:
        """Hook every forward output kept so far: ``reached`` collects those the gradient reaches."""
        for i, out in enumerate(self.outputs):
            if out.requires_grad:
                out.register_hook(lambda grad, i=i: self.reached.add(i))

    @contextmanager
    def backward_pass(self) -> Iterator[None]:
        self.in_backward = True
        try:
            yield
        finally:
            self.in_backward = False

    def backward(self, loss: torch.Tensor) -> None:
        with self.backward_pass():
            loss.backward()

    def roles(self) -> dict[str, int]:
        return {role: sum(len(getattr(s, role)) for s in self.solves) for role in ("start", "accepted", "rejected")}


PROBE: list[Probe] = []


@pytest.fixture
def tagged_steps(monkeypatch):
    """Route the step callbacks of every ODE function to the probes made in the test."""
    PROBE.clear()

    def step(self, t0, y0, dt):
        for p in PROBE:
            p.step(dt)

    def settle(accepted: bool, original=None):
        def callback(self, t0, y0, dt):
            for p in PROBE:
                p.settle(accepted)
            if original is not None:
                original(self, t0, y0, dt)
        return callback

    # cnf_block's adaptive solves use _SteppedDynamics, whose own callbacks record the steps
    for dynamics in (cnf_block._Dynamics, cnf_block._SteppedDynamics, latent_ode._Dynamics):
        monkeypatch.setattr(dynamics, "callback_step", step, raising=False)
        monkeypatch.setattr(dynamics, "callback_accept_step",
                            settle(True, getattr(dynamics, "callback_accept_step", None)), raising=False)
        monkeypatch.setattr(dynamics, "callback_reject_step",
                            settle(False, getattr(dynamics, "callback_reject_step", None)), raising=False)
    yield PROBE
    PROBE.clear()


def probe(nets: list[nn.Module]) -> Probe:
    p = Probe(list(nets))
    PROBE.append(p)
    return p


def flow(arch: str, std: float = 0.0, **options):
    """A flow, one batch for it and a probe of its blocks' networks."""
    torch.manual_seed(0)
    if arch == "digits":
        model = build_model("infocnf", (1, 8, 8), 10, **{**DIGITS, **options})
        x, y = BatchStream(load_dataset("digits", "train"), 8, seed=0).next()
    else:
        model = build_model("infocnf", (2,), 2, arch="mlp", **{**TOY, **options})
        x, y = BatchStream(load_dataset("toy2d", "train"), 16, seed=0).next()
    if std:
        perturb(model, std)
    return model, (x, y), probe([b.net for b in model.blocks])


def run(model, batch, tol: float):
    x, y = batch
    return model(x, y, tol=tol, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------- forward


@pytest.mark.parametrize("warm_start", [False, True])
@pytest.mark.parametrize("arch", ["digits", "mlp"])
def test_forward_nfe_is_every_call_of_the_forward_solve(tagged_steps, arch, warm_start):
    model, batch, p = flow(arch, warm_start=warm_start)
    for i, tol in enumerate((1e-3, 1e-5, 1e-7, 1e-4)):
        p.reset()
        out = run(model, batch, tol)
        assert [s.nfe for s in out.stats] == p.forward
        assert out.nfe_forward == sum(p.forward) == len(p.outputs)
        assert len(p.solves) == model.num_blocks
        warm = warm_start and i > 0  # a warm start needs a step from an earlier training pass
        for s in p.solves:
            assert len(s.start) == (1 if warm else 2)  # f0 (+ the initial-step heuristic)
            assert s.step_calls and set(s.step_calls) == {PER_STEP}
        assert out.nfe_forward == sum(p.roles().values())
        assert out.nfe_backward == 0  # nothing back-propagated


def test_forward_nfe_counts_rejected_steps(tagged_steps):
    model, batch, p = flow("mlp", std=2.0)
    out = run(model, batch, 1e-3)
    roles = p.roles()
    assert roles["rejected"] > 0
    assert out.nfe_forward == roles["start"] + roles["accepted"] + roles["rejected"] == len(p.outputs)


# ---------------------------------------------------------------------------- backward, adjoint


@pytest.mark.parametrize("arch, std", [("digits", 0.0), ("mlp", 0.0), ("mlp", 2.0)])
def test_adjoint_backward_nfe_is_every_call_made_by_backward(tagged_steps, arch, std):
    model, batch, p = flow(arch, std=std, adjoint=True)
    out = run(model, batch, 1e-4)
    forward = list(p.forward)
    assert out.nfe_forward == sum(forward)
    p.backward(out.loss)
    assert [s.nfe_backward for s in out.stats] == p.during_backward
    assert out.nfe_backward == sum(p.during_backward) > 0
    assert p.forward == forward and out.nfe_forward == sum(forward)  # the adjoint solve is not forward NFE


# ---------------------------------------------------------------------------- backward, direct


@pytest.mark.parametrize("warm_start", [False, True])
@pytest.mark.parametrize("arch, std, tol, options", [
    ("digits", 0.0, 1e-4, {}), ("digits", 0.2, 1e-3, {}), ("mlp", 0.0, 1e-5, {}), ("mlp", 1.0, 1e-5, {}),
    ("mlp", 2.0, 1e-3, {}), ("mlp", 2.0, 1e-3, {"divergence": "exact"}),
    ("mlp", 2.0, 1e-3, {"kinetic_weight": 0.1, "jacobian_weight": 0.1}),
])
def test_direct_backward_nfe_is_the_evaluations_back_propagated_through(tagged_steps, arch, std, tol, options,
                                                                        warm_start):
    model, batch, p = flow(arch, std=std, warm_start=warm_start, **options)
    if warm_start:
        run(model, batch, tol * 10)  # gives each block a step to start from
        p.reset()
    out = run(model, batch, tol)
    p.watch()
    p.backward(out.loss)
    assert sum(p.during_backward) == 0  # no evaluation during the backward pass
    assert [s.nfe_backward for s in out.stats] == p.backward_hooks
    assert out.nfe_backward == sum(p.backward_hooks) == len(p.reached)
    assert 0 < out.nfe_backward <= out.nfe_forward
    roles = p.roles()
    for s in p.solves:
        assert set(s.accepted) <= p.reached  # every accepted step's evaluations get a gradient
        assert not set(s.rejected) & p.reached  # no rejected step's evaluation does
        assert s.start[0] in p.reached  # f0 is the first step's first stage
        assert s.first_dt is not None and s.first_dt.requires_grad is (not warm_start)
    if warm_start:  # the first step is a plain number: only rejected steps go without a gradient
        assert out.nfe_backward == out.nfe_forward - roles["rejected"]
    else:  # the heuristic's evaluation gets a gradient when it sets the (differentiable) first step
        heuristic = sum(s.start[1] in p.reached for s in p.solves)
        assert out.nfe_backward == roles["accepted"] + len(p.solves) + heuristic
    if std:
        assert roles["rejected"] > 0  # the case the test is about


def test_the_heuristics_evaluation_gets_a_gradient_only_sometimes(tagged_steps):
    """Both outcomes occur in these (deterministic) toy flows: whether the gradient reaches the
    heuristic's evaluation depends on which of its two estimates sets the first step."""
    reached = []
    for std in (0.0, 0.5):
        model, batch, p = flow("mlp", std=std)
        out = run(model, batch, 1e-3)
        p.watch()
        p.backward(out.loss)
        reached += [s.start[1] in p.reached for s in p.solves]
        PROBE.remove(p)
    assert any(reached) and not all(reached)


# ---------------------------------------------------------------------------- LatentODE


def latent(adjoint: bool, segments: int = 2):
    torch.manual_seed(0)
    model = LatentODE(torch.linspace(0.0, 3.0, 12), rnn_hidden=8, dyn_hidden=8, dec_hidden=8, adjoint=adjoint,
                      segments=segments)
    perturb(model.dynamics, 1.0)
    x = torch.randn(6, 12, 2, generator=torch.Generator().manual_seed(0))
    return model, x, probe([model.dynamics])


@pytest.mark.parametrize("adjoint", [False, True])
def test_latent_ode_counts(tagged_steps, adjoint):
    model, x, p = latent(adjoint)
    out = model(x, tol=1e-5, generator=torch.Generator().manual_seed(0))
    assert len(p.solves) == len(out.stats) == 2
    assert p.roles()["rejected"] > 0
    assert out.nfe_forward == p.forward[0] == sum(p.roles().values())
    assert [s.nfe for s in out.stats] == [len(s.start) + len(s.accepted) + len(s.rejected) for s in p.solves]
    p.watch()
    p.backward(out.loss)
    if adjoint:
        assert out.nfe_backward == p.during_backward[0] > 0
    else:
        assert p.during_backward[0] == 0
        assert out.nfe_backward == p.backward_hooks[0] == len(p.reached) <= out.nfe_forward
        assert not {i for s in p.solves for i in s.rejected} & p.reached
        assert {i for s in p.solves for i in s.accepted} <= p.reached
    assert out.nfe_forward == p.forward[0]  # the backward pass added nothing to the forward count


# ---------------------------------------------------------------------------- the environment


@pytest.mark.parametrize("adjoint", [False, True])
def test_env_reports_the_independent_counts(tagged_steps, monkeypatch, adjoint):
    env = gym.make(DIGITS_ID, **TINY, adjoint=adjoint)
    model = env.unwrapped.model
    assert model.blocks[0].adjoint is adjoint
    p = probe([b.net for b in model.blocks])
    original = torch.Tensor.backward

    def backward(tensor, *args, **kwargs):
        with p.backward_pass():
            return original(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "backward", backward)
    for seed in (0, None):
        p.reset()
        env.reset(seed=seed)
        infos, done = [], False
        for action in (-3.0, -4.0, -5.0):
            _, _, terminated, truncated, info = env.step(np.array([action], dtype=np.float32))
            infos.append(info)
            done = terminated or truncated
        assert done and len(infos) == model.num_blocks
        last = infos[-1]
        assert [i["nfe"] for i in infos] == last["nfe_blocks"] == p.forward
        assert last["nfe_forward"] == sum(p.forward)
        if adjoint:
            assert last["nfe_backward"] == sum(p.during_backward) > 0
        else:
            assert sum(p.during_backward) == 0
            assert 0 < last["nfe_backward"] == sum(p.backward_hooks) <= last["nfe_forward"]
