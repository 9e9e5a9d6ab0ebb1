"""The configuration of a :class:`~infocnf_env.TrainingStepEnv`: what to train and how the agent is paid.

An :class:`EnvConfig` groups the settings by what they hold:

* :class:`DataConfig` — the dataset, batch sizes and where torchvision data live;
* :class:`OptimConfig` — the model's Adam optimiser and learning-rate schedule;
* :class:`RewardConfig` — the weights of the reward (Eq. 6) and of the solver-error check;
* :class:`SpaceConfig` — the action bounds and the observation encoding;
* ``head``, ``arch`` and ``model`` — the model; ``model`` holds the options of that model
  family (:class:`flows.FlowConfig` fields for flows, :class:`flows.latent_ode.LatentODE`
  keywords and spiral-data keywords for the LatentODE), checked by the task that builds it.

Each registered id is one ``EnvConfig`` (``infocnf_env.ENV_IDS``). ``gymnasium.make(id, **kw)``
overrides any field by its plain name (``alpha=0.5``, ``batch_size=32``, ``hidden=8``) through
:meth:`EnvConfig.replace`; a whole group can be replaced too (``reward=RewardConfig(...)``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from flows import EVAL_TOL
from infocnf_env.actions import ACTION_MODES, DEFAULT_FIRST_STEP_BOUNDS, check_bounds

#: log10 bounds of the tolerance action: loose enough to save NFE, tight enough that a policy
#: cannot profit from solver error (docs/design.md, "Numbers that must be honest").
DEFAULT_TOL_BOUNDS = (-8.0, -2.0)
#: Step caps per ODE solve unless ``max_num_steps`` is given, for every env in one place. A cap
#: is a safety net, not a budget: a runaway solve (a policy's or a trained model's dynamics gone
#: stiff) truncates the episode instead of stalling the run. Each cap is meant to sit far above
#: what the tightest allowed tolerance needs on its env's problems.
#: The library's own defaults are outside the envs: ``flows`` caps no flow solve (``None``) and
#: the LatentODE class at 10000.
#:
#: * the training-step env (flows and the LatentODE being trained): 1000;
DEFAULT_MAX_NUM_STEPS = 1000
#: * the frozen-flow benchmark tasks (:mod:`infocnf_env.frozen`): 2000;
FROZEN_MAX_NUM_STEPS = 2000
#: * the classical ODE tasks (:mod:`infocnf_env.ode_env`): 20000.
ODE_MAX_NUM_STEPS = 20_000
OBS_MODES = ("vector", "features")
GAP_SIDES = ("one", "two")


def check_device(device: Any) -> str:
    """``device`` as a string, or one ``ValueError`` if torch does not know it or this machine lacks it."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; e.g. 'cpu', 'cuda', 'cuda:1'") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available on this machine; use 'cpu'")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for, but MPS is not available on this machine; use 'cpu'")
    return str(parsed)


def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_finite_number(name: str, value: Any, *, minimum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    """What the model trains on.

    Attributes:
        dataset: a key of ``flows.DATASETS`` or of ``infocnf_env.TASKS`` (``"spirals"``).
        batch_size: training mini-batch size (per process under ``torchrun``).
        eval_batch_size: batch size of test passes (``None``: the task's default).
        data_root: folder of the torchvision datasets (CIFAR10, MNIST).
        download: let torchvision download missing data.
    """

    dataset: str = "digits"
    batch_size: int = 128
    eval_batch_size: int | None = None
    data_root: str | None = None
    download: bool = False

    def __post_init__(self) -> None:
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("eval_batch_size", self.eval_batch_size, allow_none=True)


@dataclass(frozen=True)
class OptimConfig:
    """The model's optimiser (Adam, paper Section 4.1).

    Attributes:
        lr: learning rate.
        lr_milestones: ``((epoch, lr), ...)``: the learning rate from that epoch on.
        max_grad_norm: clip the gradient norm to this value (``None``: no clipping).
        train_flow: ``False`` freezes the model: only the policy learns (isolated study).
    """

    lr: float = 1e-3
    lr_milestones: tuple[tuple[int, float], ...] = ()
    max_grad_norm: float | None = None
    train_flow: bool = True

    def __post_init__(self) -> None:
        check_finite_number("lr", self.lr)
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        milestones = tuple((int(epoch), float(lr)) for epoch, lr in self.lr_milestones)
        object.__setattr__(self, "lr_milestones", milestones)
        if self.max_grad_norm is not None:
            check_finite_number("max_grad_norm", self.max_grad_norm, minimum=0.0)


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the reward (Eq. 6) and of its accuracy term.

    The accuracy term: every ``gap_check_every``-th iteration the same batch, with the same
    Hutchinson noise and dropout masks, is also solved at ``reference_tol`` (no gradient), and
    the last step pays ``-gap_weight * gap`` where ``gap`` is the loss at ``reference_tol``
    minus the loss at the chosen actions: one-sided (``gap_sided="one"``, ``max(0, gap)``: only
    a loss that looks better than it is, which the loss term would otherwise reward) or
    two-sided (``"two"``, ``|gap|``). The reference solve's NFE is reported apart
    (``info["nfe_reference"]``), never in the NFE cost.

    Attributes:
        alpha: weight of the NFE cost; step i pays ``-(alpha / N) * nfe_i``.
        loss_weight: weight of the loss paid on the last step.
        failure_penalty: paid (negated) when a solve fails or the loss is not finite.
        gap_check_every: K: every K-th iteration measures the gap (0: never).
        gap_weight: weight of the gap.
        reference_tol: tolerance of the reference solve.
        gap_sided: ``"one"`` or ``"two"`` (above).
    """

    alpha: float = 1.0
    loss_weight: float = 1.0
    failure_penalty: float = 10.0
    gap_check_every: int = 0
    gap_weight: float = 1.0
    reference_tol: float = EVAL_TOL
    gap_sided: str = "one"

    def __post_init__(self) -> None:
        check_finite_number("alpha", self.alpha, minimum=0.0)
        check_finite_number("loss_weight", self.loss_weight, minimum=0.0)
        check_finite_number("failure_penalty", self.failure_penalty, minimum=0.0)
        check_finite_number("gap_weight", self.gap_weight, minimum=0.0)
        check_finite_number("reference_tol", self.reference_tol)
        if not self.reference_tol > 0:
            raise ValueError(f"reference_tol must be positive, got {self.reference_tol!r}")
        if self.gap_sided not in GAP_SIDES:
            raise ValueError(f"unknown gap_sided {self.gap_sided!r}; valid values: {', '.join(GAP_SIDES)}")
        if not isinstance(self.gap_check_every, int) or isinstance(self.gap_check_every, bool) \
                or self.gap_check_every < 0:
            raise ValueError(f"gap_check_every must be an integer >= 0, got {self.gap_check_every!r}")


@dataclass(frozen=True)
class SpaceConfig:
    """The action and observation spaces.

    Attributes:
        tol_bounds: ``(low, high)`` of the action, log10 of the tolerance.
        action_mode: ``"tol"`` (the paper's gate), ``"tol_first_step"`` (also the solver's
            first step) or ``"tol_method"`` (also the solver's method, the ODE tasks only); see
            :mod:`infocnf_env.actions`.
        first_step_bounds: ``(low, high)``, log10 of the first step as a fraction of the
            block's time span (``"tol_first_step"`` only).
        obs_mode: ``"vector"`` (block one-hot + batch statistics) or ``"features"`` (feature
            maps for CNN gates); see :mod:`infocnf_env.observation`.
        feature_samples: examples of the batch in a ``features`` observation.
        feature_size: spatial size of a ``features`` observation (``None``: the largest block's).
        feedback: ``vector`` observations end with the solver's feedback from the previous
            block (``log1p(NFE)``, log10 of its last accepted step as a fraction of the block's
            span, ``log1p(rejected steps)``, log10 of its tolerance; zeros before the first
            block; :class:`infocnf_env.episode.Feedback`). On by default on the benchmark
            tasks, off on the training ids (whose committed studies ran without it).
    """

    tol_bounds: tuple[float, float] = DEFAULT_TOL_BOUNDS
    action_mode: str = "tol"
    first_step_bounds: tuple[float, float] = DEFAULT_FIRST_STEP_BOUNDS
    obs_mode: str = "vector"
    feature_samples: int = 8
    feature_size: int | None = None
    feedback: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "tol_bounds", check_bounds("tol_bounds", self.tol_bounds))
        object.__setattr__(self, "first_step_bounds", check_bounds("first_step_bounds", self.first_step_bounds))
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"unknown action_mode {self.action_mode!r}; valid modes: {', '.join(ACTION_MODES)}")
        if self.obs_mode not in OBS_MODES:
            raise ValueError(f"unknown obs_mode {self.obs_mode!r}; valid modes: {', '.join(OBS_MODES)}")
        check_positive_int("feature_samples", self.feature_samples)
        if not isinstance(self.feedback, bool):
            raise ValueError(f"feedback must be True or False, got {self.feedback!r}")
        if self.feedback and self.obs_mode != "vector":
            raise ValueError("feedback is part of vector observations only (obs_mode='vector')")
        check_positive_int("feature_size", self.feature_size, allow_none=True)


#: The groups of an :class:`EnvConfig`, by attribute name.
_GROUPS: dict[str, type] = {"data": DataConfig, "optim": OptimConfig, "reward": RewardConfig, "spaces": SpaceConfig}


@dataclass(frozen=True)
class EnvConfig:
    """Everything a :class:`~infocnf_env.TrainingStepEnv` needs; one per registered id.

    Attributes:
        head: ``"cnf"``, ``"ccnf"`` or ``"infocnf"`` (flows); ``"cnf"`` or ``"infocnf"``
            (LatentODE: baseline or partitioned latent code).
        arch: ``"multiscale"`` or ``"mlp"`` (flows), ``"latent_ode"`` (spirals).
        model: options of the model family (see the module docstring); checked by the task.
        data, optim, reward, spaces: the groups above.
        checkpoint: a file written by ``TrainingStepEnv.save`` to start from.
        device: torch device of the model and the batches.
        seed: seed of the initial weights. The data order and the solver noise follow
            ``reset(seed=...)`` (Gymnasium's convention): a seeded reset reproduces them, the
            first unseeded reset draws them from fresh entropy.
    """

    head: str = "infocnf"
    arch: str = "multiscale"
    model: Mapping[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    spaces: SpaceConfig = field(default_factory=SpaceConfig)
    checkpoint: str | None = None
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", dict(self.model))
        object.__setattr__(self, "device", check_device(self.device))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        for name, kind in _GROUPS.items():
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"EnvConfig.{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}")
        if self.spaces.action_mode == "tol_method":
            raise ValueError("action_mode 'tol_method' chooses among a task's solver methods; the training-step "
                             "ids have one solver (valid modes here: tol, tol_first_step)")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> EnvConfig:
        """A config from plain field names, e.g. ``EnvConfig.from_kwargs(dataset="toy1d", hidden=8)``."""
        return cls().replace(**kwargs)

    def replace(self, **overrides: Any) -> EnvConfig:
        """A copy with fields overridden by their plain names.

        A name of this class (``head``, ``seed``, ``reward``, ...) replaces that field; a field
        name of a group (``alpha``, ``batch_size``, ``tol_bounds``, ...) replaces it inside its
        group; any other name is a model option (``hidden``, ``beta``, ``segments``, ...) and is
        checked by the task that builds the model. ``model=`` (the whole options dict) and
        flat model options in one call are ambiguous and raise ``ValueError``.
        """
        top = {f.name for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        grouped: dict[str, dict[str, Any]] = {name: {} for name in _GROUPS}
        model = dict(self.model)
        flat_model: list[str] = []
        for key, value in overrides.items():
            group = _group_of(key)
            if key in top:
                changes[key] = value
            elif group is not None:
                grouped[group][key] = value
            else:
                model[key] = value
                flat_model.append(key)
        if "model" in changes and flat_model:
            raise ValueError(f"pass model options either as model={{...}} or by name ({', '.join(flat_model)}), "
                             "not both in one call")
        for name, fields_ in grouped.items():
            if fields_:
                base = changes.get(name, getattr(self, name))
                changes[name] = dataclasses.replace(base, **fields_)
        if "model" not in changes:
            changes["model"] = model
        return dataclasses.replace(self, **changes)

    def flat(self) -> dict[str, Any]:
        """Every setting under its plain name (the names :meth:`replace` takes)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                               if f.name not in _GROUPS and f.name != "model"}
        for name in _GROUPS:
            out.update(dataclasses.asdict(getattr(self, name)))
        out.update(self.model)
        return out


def _group_of(key: str) -> str | None:
    for name, kind in _GROUPS.items():
        if key in {f.name for f in dataclasses.fields(kind)}:
            return name
    return None
