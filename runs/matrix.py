"""The digits run matrix shared by the studies, :mod:`runs.run_cache` and :mod:`runs.aggregate`.

Environment ids per model head, tolerance policies (agent and flags) and the digits
training regimes (``small`` / ``large`` batch, set out in :mod:`runs.studies.digits_table`).
Every study that trains a digits flow draws its runs from here, so a run is cached once and
reused by all of them. This module imports no study (and nothing of torch: the agent registry
names the agents' code without importing it), so the driver, the run cache and the
aggregation can use it without loading a study.
"""

from __future__ import annotations

import copy

from agents import registry

#: Training examples of the bundled digits split (the epoch length of the learning-rate schedule).
DIGITS_TRAIN_SIZE = 1497

#: Registered environment id of each model head.
ENVS = {"cnf": "CNF-Digits-v0", "ccnf": "CCNF-Digits-v0", "infocnf": "InfoCNF-Digits-v0"}

#: Training regimes; ``env_kwargs`` go to the environment, ``lr_decay_at`` is the fraction of
#: the iterations after which the learning rate is multiplied by ``lr_decay``.
REGIMES = {
    "small": {"batch_size": 128, "lr": 2e-3, "iterations": 300, "eval_every": 30,
              "lr_decay_at": 0.625, "lr_decay": 0.1, "env_kwargs": {}},
    "large": {"batch_size": 499, "lr": 7.8e-3, "iterations": 77, "eval_every": 8,
              "lr_decay_at": 0.3, "lr_decay": 0.1, "env_kwargs": {}},
    # ``large`` for twice the epochs (51 instead of 25.7); used by ``latent-probe`` only.
    "large-long": {"batch_size": 499, "lr": 7.8e-3, "iterations": 154, "eval_every": 14,
                   "lr_decay_at": 0.3, "lr_decay": 0.1, "env_kwargs": {}},
}

#: Tolerance policies: name -> (agent of :mod:`agents.registry`, the policy's flags beyond those
#: that select the agent on its trainer's CLI). ``fixed`` is the paper's 1e-5 baseline.
POLICIES: dict[str, tuple[str, list[str]]] = {
    "fixed": ("fixed", ["--tol", "1e-5"]),
    "reinforce": ("reinforce", []),
    "ppo": ("ppo", ["--init-std", "0.5"]),
    "sac": ("sac", []),
    # A2C updating after every episode on raw returns (it drifts to tight tolerances) and with
    # 4 episodes per update and normalised advantages (the ``agents.sb3`` default); the flags
    # pin both, 3 blocks per episode on digits.
    "a2c": ("a2c", ["--init-std", "0.5", "--algo-kwargs", "n_steps=3", "normalize_advantage=False"]),
    "a2c-normadv": ("a2c", ["--init-std", "0.5", "--algo-kwargs", "n_steps=12", "normalize_advantage=True"]),
    "td3": ("td3", []),
}


def policy_agent_args(policy: str, flags: list[str] | None = None) -> tuple[str, list[str]]:
    """The trainer module and the flags of a run of ``policy``: the agent's selector, then the
    policy's flags (or ``flags`` in their place)."""
    agent_name, own = POLICIES[policy]
    agent = registry.get(agent_name)
    return agent.trainer, [*agent.selector, *(own if flags is None else flags)]


def with_paper_gates(module: str, flags: tuple[str, ...] | list[str]) -> list[str]:
    """``flags`` of an ``agents.<module>`` run as the studies run it: with its agent's study flags
    (:func:`agents.registry.study_flags_for`; for REINFORCE the paper's Gaussian gates of
    Section 3, g_i ~ N(mu_i, sigma_i^2) clipped to the bounds by the env, unless the run chooses
    its gates itself), so the studies reproduce their committed results whatever the CLI's
    default. Not part of a run's cache key (:mod:`runs.run_cache`): a run without
    ``--gate-dist`` has always meant these gates."""
    return registry.study_flags_for(module, flags)


#: ``--quick``: 4-filter dynamics, a few iterations, small batches, the 300 test digits in one
#: evaluation batch.
QUICK_REGIMES = {
    "small": {"batch_size": 32, "lr": 2e-3, "iterations": 4, "eval_every": 2,
              "lr_decay_at": 0.625, "lr_decay": 0.1, "env_kwargs": {"hidden": 4, "eval_batch_size": 300}},
    "large": {"batch_size": 128, "lr": 8e-3, "iterations": 2, "eval_every": 1,
              "lr_decay_at": 0.3, "lr_decay": 0.1, "env_kwargs": {"hidden": 4, "eval_batch_size": 300}},
    "large-long": {"batch_size": 128, "lr": 8e-3, "iterations": 3, "eval_every": 1,
                   "lr_decay_at": 0.3, "lr_decay": 0.1, "env_kwargs": {"hidden": 4, "eval_batch_size": 300}},
}


def digits_regimes(quick: bool) -> dict:
    """A copy of the digits training regimes (``--quick`` ones with ``quick``)."""
    return copy.deepcopy(QUICK_REGIMES if quick else REGIMES)
