"""The LatentODE on bi-directional spirals (paper Sec. 4.6) as a task of ``TrainingStepEnv``.

``TrainingStepEnv(dataset="spirals", head=..., arch="latent_ode")`` trains a
:class:`flows.latent_ode.LatentODE` instead of a flow (``infocnf_env.TASKS``). The
latent trajectory solve is cut into ``segments`` (default 2) consecutive time segments of the
observation window, so one episode has ``segments`` steps, each choosing the tolerance of one
segment; the last step decodes, computes the loss and trains the model. Everything else
(actions, rewards, truncation, checkpoints) is the flow environment's contract.

* ``head``: ``"cnf"`` is the baseline LatentODE (``N(0, I)`` prior on ``z_t0``), ``"infocnf"``
  the partitioned one (InfoCNF's split of ``z_t0`` into a supervised ``z_y`` with the
  conditional prior ``p(z_y | y)`` and ``z_u``). ``arch`` must be ``"latent_ode"``.
* Observation (``obs_mode="vector"``): one-hot segment index + statistics of the latent state
  at the start of the segment (``z_t0`` for the first).
* Last-step info: ``loss`` (negative ELBO per observed scalar + ``beta`` * supervised loss),
  ``recon_mse``, ``recon_nll``, ``kl``, ``bits_per_dim`` (the negative ELBO per observed scalar
  in bits), and for the partitioned model ``xent``, ``ab_mse``, ``direction_error`` and its
  alias ``error``; plus the env's ``nfe_forward``, ``nfe_backward``, ``tols``, ``nfe_blocks``...
* :meth:`SpiralTask.evaluate`: see its docstring.

Data: :func:`flows.spirals.make_spirals` with a fixed ``data_seed`` (the env's ``seed`` sets the
initial weights, the batch order and the posterior noise, as in ``runs/studies/spirals.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from flows import EVAL_TOL
from flows.data import IndexStream
from flows.latent_ode import LatentODE, evaluate_latent_ode
from flows.spirals import SpiralData, make_spirals
from infocnf_env.config import DataConfig
from infocnf_env.tasks import check_choice, check_options

#: ``head`` -> ``partitioned``.
HEADS = {"cnf": False, "infocnf": True}
#: Keywords of :class:`LatentODE` an env may override (``times`` comes from the data).
MODEL_OPTIONS = ("latent_dim", "sup_dim", "rnn_hidden", "dyn_hidden", "dec_hidden", "encoder", "obs_std",
                 "obs_scale", "beta", "solver", "adjoint", "adjoint_norm", "max_num_steps", "segments")
#: Keywords of :func:`make_spirals` an env may override, with their defaults (App. E.1,
#: ``runs/studies/spirals.py``).
DATA_OPTIONS = dict(num_train=5000, num_test=5000, length=1000, window=200, extrap=100, noise_std=0.3, data_seed=0)
DEFAULT_SEGMENTS = 2


class SpiralTask:
    """A (partitioned) LatentODE on spirals: a :class:`infocnf_env.tasks.Task`.

    Args:
        head: ``"cnf"`` (baseline) or ``"infocnf"`` (partitioned latent code).
        arch: ``"latent_ode"``.
        data: ``dataset`` must be ``"spirals"``; ``batch_size`` spirals per training step,
            ``eval_batch_size`` per evaluation solve (default 500). The spirals are generated,
            so ``data_root`` and ``download`` are unused.
        options: ``segments`` (default 2), the other :class:`LatentODE` keywords
            (``latent_dim``, ``rnn_hidden``, ``dyn_hidden``, ``dec_hidden``, ``beta``, ``adjoint``, ``adjoint_norm``,
            ``max_num_steps``, ...) and the data keywords ``num_train``, ``num_test``, ``length``,
            ``window``, ``extrap``, ``noise_std``, ``data_seed``.
        device: torch device of the model and batches.
        seed: seed of the initial weights and the batch order.
    """

    def __init__(
        self, head: str, arch: str, data: DataConfig, options: Mapping[str, Any], *,
        device: str = "cpu", seed: int = 0,
    ):
        check_options(options, (*MODEL_OPTIONS, *DATA_OPTIONS))
        if data.dataset != "spirals":
            raise ValueError(f"SpiralTask trains on 'spirals', got dataset {data.dataset!r}")
        check_choice("head", head, HEADS)
        if arch != "latent_ode":
            raise ValueError(f"dataset 'spirals' needs arch='latent_ode', got {arch!r}")
        options = dict(options)
        batch_size = data.batch_size
        data_cfg = {k: options.pop(k, v) for k, v in DATA_OPTIONS.items()}
        options.setdefault("segments", DEFAULT_SEGMENTS)
        self.device = torch.device(device)
        self.data_cfg = data_cfg
        self.train_data = self._make("train", data_cfg["num_train"])
        self._test_data: SpiralData | None = None
        self._x = self.train_data.obs.to(self.device)
        self._y = self.train_data.params.to(self.device)
        with torch.random.fork_rng(devices=[]):  # initial weights from `seed`, not the global RNG state
            torch.manual_seed(seed)
            model = LatentODE(self.train_data.times, partitioned=HEADS[head], **options)
        model.spec = {**model.spec, "data": {k: v for k, v in data_cfg.items() if k != "num_test"}}
        self.model = model.to(self.device)
        if batch_size > len(self.train_data):
            raise ValueError(f"batch_size {batch_size} exceeds the {len(self.train_data)} training spirals; "
                             f"use batch_size <= {len(self.train_data)}")
        self.stream = IndexStream(len(self.train_data), batch_size, seed)
        self.eval_batch_size = data.eval_batch_size or 500

    def _make(self, split: str, num: int) -> SpiralData:
        cfg = self.data_cfg
        return make_spirals(num, cfg["length"], cfg["window"], cfg["noise_std"], cfg["data_seed"],
                            extrap=cfg["extrap"], split=split)

    @property
    def batches_per_epoch(self) -> int:
        return len(self.train_data) // self.stream.size

    def reseed(self, seed: int) -> None:
        self.stream = IndexStream(len(self.train_data), self.stream.size, seed)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, window, 2)`` noisy windows and ``(B, 3)`` their ``(a, b, direction)``."""
        idx = self.stream.next()
        return self._x[idx], self._y[idx]

    def data(self, split: str) -> SpiralData:
        if split == "train":
            return self.train_data
        if split != "test":
            raise ValueError(f"unknown split {split!r}; valid splits: train, test")
        if self._test_data is None:
            self._test_data = self._make("test", self.data_cfg["num_test"])
        return self._test_data

    def evaluate(self, split: str = "test", tol: float = EVAL_TOL, max_batches: int | None = None) -> dict[str, float]:
        """Metrics of :func:`flows.latent_ode.evaluate_latent_ode` at ``tol`` plus the keys agents read.

        ``recon_mse``, ``recon_mse_noisy``, ``extrap_mse``, ``neg_elbo``, ``nfe`` (forward NFE of
        one window-plus-continuation solve, all segments), ``num_samples``; partitioned:
        ``direction_error``, ``ab_mae``, ``a_mae``, ``b_mae``. For the agents' run summary:
        ``bits_per_dim`` = ``neg_elbo / ln 2``; ``marginal_bits_per_dim`` the same for the
        baseline (its prior does not depend on y) and NaN for the partitioned model (no closed
        form over continuous y); ``error`` = ``direction_error``, NaN for the baseline (as a
        flow's ``error`` for the unconditional ``cnf`` head).
        """
        out = evaluate_latent_ode(self.model, self.data(split), tol=tol, batch_size=self.eval_batch_size,
                                  max_batches=max_batches)
        out["bits_per_dim"] = out["neg_elbo"] / math.log(2)
        partitioned = self.model.partitioned
        out["marginal_bits_per_dim"] = float("nan") if partitioned else out["bits_per_dim"]
        out["error"] = out["direction_error"] if partitioned else float("nan")
        return out

    def state_dict(self) -> dict:
        return {"stream": self.stream.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state["stream"])
