"""``build_model``: the one constructor for every flow of the project.

Architectures (registry :data:`ARCHITECTURES`):

* ``multiscale`` — Appendix B / FFJORD's multiscale flow for images ``(C, H, W)``: logit
  transform; then for each scale ``flows_per_scale`` CNF blocks, a squeeze and
  ``flows_per_scale`` more blocks, with half the channels factored out before the next scale;
  the last scale has no squeeze. The paper's CIFAR10 model is 4 scales x (2 + squeeze + 2),
  64-filter conv dynamics (the authors' runs: three hidden layers, ``num_layers=4``); its "2x"
  model is ``flows_per_scale=4``.
* ``mlp`` — a stack of ``num_blocks`` CNF blocks on flattened vectors (1-D, 2-D, 64-d data),
  with an optional logit transform for data in [0, 1].

:data:`AUTHORS_RECIPE` holds the four options in which the authors' published runs differ
from this module's defaults (which the digits studies were run with); the CIFAR10 and MNIST
environment ids use it, and any flow can: ``build_model(..., **AUTHORS_RECIPE)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from torch import nn

from flows.cnf_block import CNFBlock
from flows.heads import HEAD_INITS, LatentHead, supervised_dim
from flows.model import FlowModel
from flows.nets import conv_net, mlp_net
from flows.ode import check_adjoint_norm, check_backend_options
from flows.transforms import FactorOut, LogitTransform, Squeeze


@dataclass(frozen=True)
class FlowConfig:
    """Every option of a flow. Defaults are the paper's CIFAR10 settings where it has them,
    except the four of :data:`AUTHORS_RECIPE` (``num_layers``, ``head_init``, ``beta``,
    ``train_time``), which keep the values the digits studies were run with.

    Attributes:
        hidden: width of the dynamics networks (Appendix B: 64 filters).
        num_layers: layers per dynamics network, the output layer included: ``num_layers - 1``
            hidden layers of ``hidden`` units (c -> h -> ... -> h -> c). Default 3
            (c -> h -> h -> c); the authors' ``--dims 64,64,64`` is 4.
        flows_per_scale: ``multiscale`` only: CNF blocks before and again after each squeeze.
        num_scales: ``multiscale`` only: number of scales; ``None`` picks the most the spatial
            size allows (4 for 32x32 CIFAR10, as in the paper).
        num_blocks: ``mlp`` only: number of CNF blocks.
        layer_type: ``mlp`` only: ``"concatsquash"`` or ``"concat"``.
        logit_alpha: logit-transform alpha for data in [0, 1]; ``None`` disables it, as
            real-valued data needs (``FlowModel.start`` rejects data outside [0, 1] otherwise).
        time_length: ODE end time T (paper: 1).
        train_time: learn T per block (the authors' ``--train_T True``).
        solver: the ODE method, a method of ``solver_backend`` (``flows.ode.backend_methods``).
        adjoint: adjoint back-propagation (FFJORD's default; slower on CPU).
        adjoint_norm: the adjoint solve's error norm: ``"seminorm"`` (default) leaves the
            parameter-gradient channels out of its step-size control (Kidger, Chen and Lyons
            2021), ``"full"`` measures every channel (torchdiffeq's default, FFJORD's choice);
            see ``flows.ode.ADJOINT_NORMS``. Used only with ``adjoint=True``.
        divergence: ``"hutchinson"`` or ``"exact"``.
        noise: Hutchinson noise, ``"rademacher"`` or ``"gaussian"``.
        max_num_steps: step cap per solve (``None``: unlimited).
        sup_ratio: InfoCNF's fraction of z used as z_y (paper: 0.5).
        dropout: dropout on the classifier input (paper: 0.5).
        beta: weight of the cross-entropy in J (Eq. 4; the authors' ``--weight_y``, 0.5 in
            their runs).
        head_init: the zero-initialised q_phi / q_theta layers: ``"zeros"`` (plain linear) or
            ``"linear_zeros"`` (Glow's ``LinearZeros``, output x exp(3 logs) with a learned
            per-output log-scale, as the authors' code); see :mod:`flows.heads`.
        num_levels: quantisation levels for bits/dim (``None``: continuous data).
        kinetic_weight: weight of the kinetic-energy regularizer (0 = off).
        jacobian_weight: weight of the Jacobian-Frobenius regularizer (0 = off).
        warm_start: start each block's adaptive solve from the step it last accepted in
            training instead of the initial-step heuristic, and with the adjoint each block's
            adjoint solve from the step that solve last accepted (see ``CNFBlock``).
        error_weight: weight of the solver-error regularizer (Pal et al. 2021; 0 = off): in
            training, each block takes one dopri5 probe step of size T from its input and the
            loss gets ``error_weight`` times the mean square of its local error estimate
            (:mod:`flows.error_reg`). The probe's 7 evaluations per block count in the NFE.
        solver_backend: ODE backend, a name in ``flows.ode.BACKENDS`` (``"torchode"`` and
            ``"torchode-pi"``: dopri5 or tsit5, direct back-propagation only; ``"scipy"`` computes no
            gradient, so it serves frozen flows only).
    """

    hidden: int = 64
    num_layers: int = 3
    flows_per_scale: int = 2
    num_scales: int | None = None
    num_blocks: int = 2
    layer_type: str = "concatsquash"
    logit_alpha: float | None = 1e-6
    time_length: float = 1.0
    train_time: bool = False
    solver: str = "dopri5"
    adjoint: bool = False
    adjoint_norm: str = "seminorm"
    divergence: str = "hutchinson"
    noise: str = "rademacher"
    max_num_steps: int | None = None
    sup_ratio: float = 0.5
    dropout: float = 0.5
    beta: float = 1.0
    head_init: str = "zeros"
    num_levels: int | None = 256
    kinetic_weight: float = 0.0
    jacobian_weight: float = 0.0
    warm_start: bool = False
    error_weight: float = 0.0
    solver_backend: str = "torchdiffeq"

    @classmethod
    def from_kwargs(cls, **kwargs: object) -> FlowConfig:
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - valid)
        if unknown:
            raise ValueError(f"unknown flow option(s) {unknown}; valid options: {', '.join(sorted(valid))}")
        return cls(**kwargs)  # type: ignore[arg-type]

    def as_dict(self) -> dict:
        return asdict(self)


#: The authors' recipe (the first author's FFJORD fork, ``train_cnf_disentangle_rl.py`` as run
#: for Table 1) where it differs from the :class:`FlowConfig` defaults: dynamics with three
#: hidden layers (``--dims 64,64,64``), Glow's LinearZeros for q_phi and q_theta, cross-entropy
#: weight 0.5 (``--weight_y 0.5``) and a learned end time per block (``--train_T True``).
AUTHORS_RECIPE: dict[str, object] = {"num_layers": 4, "head_init": "linear_zeros", "beta": 0.5, "train_time": True}


def _block(net: nn.Module, cfg: FlowConfig) -> CNFBlock:
    return CNFBlock(
        net, time_length=cfg.time_length, train_time=cfg.train_time, solver=cfg.solver,
        adjoint=cfg.adjoint, adjoint_norm=cfg.adjoint_norm, divergence=cfg.divergence, noise=cfg.noise,
        max_num_steps=cfg.max_num_steps,
        regularize=bool(cfg.kinetic_weight or cfg.jacobian_weight), warm_start=cfg.warm_start,
        error_probe=cfg.error_weight > 0,
        backend=cfg.solver_backend,
    )


def _max_scales(height: int, width: int) -> int:
    """FFJORD's count (one scale per level at least 4 pixels wide), limited to even squeezes."""
    scales = 0
    while height >= 4 and width >= 4:
        scales += 1
        if height % 2 or width % 2:
            break
        height, width = height // 2, width // 2
    return max(scales, 1)


def multiscale_ops(data_shape: tuple[int, ...], cfg: FlowConfig) -> list[nn.Module]:
    if len(data_shape) != 3:
        raise ValueError(f"the multiscale architecture needs (C, H, W) data, got shape {data_shape}")
    channels, height, width = data_shape
    available = _max_scales(height, width)
    scales = available if cfg.num_scales is None else cfg.num_scales
    if not 1 <= scales <= available:
        raise ValueError(f"num_scales must be in [1, {available}] for {height}x{width} inputs, got {scales}")
    ops: list[nn.Module] = []
    if cfg.logit_alpha is not None:
        ops.append(LogitTransform(cfg.logit_alpha))
    c = channels
    for scale in range(scales):
        last = scale == scales - 1
        ops += [_block(conv_net(c, cfg.hidden, cfg.num_layers), cfg) for _ in range(cfg.flows_per_scale)]
        if not last:
            ops.append(Squeeze())
            c *= 4
            ops += [_block(conv_net(c, cfg.hidden, cfg.num_layers), cfg) for _ in range(cfg.flows_per_scale)]
            ops.append(FactorOut())
            c //= 2
    return ops


def mlp_ops(data_shape: tuple[int, ...], cfg: FlowConfig) -> list[nn.Module]:
    if len(data_shape) != 1:
        raise ValueError(f"the mlp architecture needs flat (D,) data, got shape {data_shape}")
    ops: list[nn.Module] = [LogitTransform(cfg.logit_alpha)] if cfg.logit_alpha is not None else []
    dim = data_shape[0]
    ops += [_block(mlp_net(dim, cfg.hidden, cfg.num_layers, cfg.layer_type), cfg) for _ in range(cfg.num_blocks)]
    return ops


ARCHITECTURES = {"multiscale": multiscale_ops, "mlp": mlp_ops}


def build_model(
    head: str,
    data_shape: tuple[int, ...],
    num_classes: int | None = None,
    arch: str = "multiscale",
    **config: object,
) -> FlowModel:
    """Build a CNF / CCNF / InfoCNF flow.

    Args:
        head: ``"cnf"``, ``"ccnf"`` or ``"infocnf"`` (Section 2.2).
        data_shape: shape of one input, ``(C, H, W)`` for ``multiscale``, ``(D,)`` for ``mlp``.
        num_classes: number of labels (required by conditional heads).
        arch: ``"multiscale"`` or ``"mlp"``.
        **config: fields of :class:`FlowConfig`.

    Raises:
        ValueError: unknown head, head_init, architecture, solver, backend, adjoint norm or option; a solver
            or adjoint the backend lacks; bad shape or ratio; a width or count below 1.
    """
    cfg = FlowConfig.from_kwargs(**config)
    if not (isinstance(cfg.error_weight, (int, float)) and 0 <= cfg.error_weight < math.inf):
        raise ValueError(f"error_weight must be a finite number >= 0, got {cfg.error_weight!r}")
    for name in ("hidden", "num_layers", "flows_per_scale", "num_blocks"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    steps = cfg.max_num_steps
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"max_num_steps must be a positive integer or None, got {steps!r}")
    check_backend_options(cfg.solver_backend, cfg.solver, cfg.adjoint)
    check_adjoint_norm(cfg.adjoint_norm)
    if cfg.head_init not in HEAD_INITS:
        raise ValueError(f"unknown head_init {cfg.head_init!r}; valid: {', '.join(HEAD_INITS)}")
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}; valid architectures: {', '.join(ARCHITECTURES)}")
    data_shape = tuple(int(d) for d in data_shape)
    if not data_shape or any(d <= 0 for d in data_shape):
        raise ValueError(f"data_shape must be positive sizes, got {data_shape}")
    dim = math.prod(data_shape)
    sup = supervised_dim(head, dim, cfg.sup_ratio)
    if sup and (num_classes is None or num_classes < 2):
        raise ValueError(f"head {head!r} needs num_classes >= 2, got {num_classes}")
    ops = ARCHITECTURES[arch](data_shape, cfg)
    latent_head = LatentHead(dim, sup, num_classes, cfg.dropout, init=cfg.head_init)
    model = FlowModel(
        ops, latent_head, data_shape, beta=cfg.beta, num_levels=cfg.num_levels,
        regularization=(cfg.kinetic_weight, cfg.jacobian_weight), error_weight=cfg.error_weight,
        spec={"head": head, "data_shape": list(data_shape), "num_classes": num_classes, "arch": arch,
              "config": cfg.as_dict()},
    )
    return model
