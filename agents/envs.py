"""Building a run's environment: ids (with or without the ``infocnf_env:`` prefix), one clear error
for an unknown id or keyword, and the device it runs on."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch

import infocnf_env  # the registered ids
from infocnf_env.config import check_device

#: ``gymnasium.make``'s module prefix of the ids (``"infocnf_env:InfoCNF-Digits-v0"``).
ID_PREFIX = "infocnf_env:"


def env_id(name: str) -> str:
    """A registered id as the CLIs take it, with or without the ``infocnf_env:`` prefix."""
    return name.removeprefix(ID_PREFIX)


#: Every id this project registers: the training-step ids, the frozen flows, the ODE tasks.
PROJECT_IDS = (*infocnf_env.ENV_IDS, *infocnf_env.FROZEN_IDS, *infocnf_env.ODE_IDS)


def check_env_id(name: str) -> str:
    """``name`` without the ``infocnf_env:`` prefix if it is one of :data:`PROJECT_IDS`; one
    ``ValueError`` otherwise (an id of another package, such as Gymnasium's ``CartPole-v1``,
    is named as such)."""
    name = env_id(name)
    if name in PROJECT_IDS:
        return name
    ids = ", ".join(compact_ids(list(PROJECT_IDS)))
    if name in gym.registry:
        raise ValueError(f"{name!r} is not an InfoCNF id; the InfoCNF ids (README.md): {ids}")
    raise ValueError(f"unknown env id {name!r}; registered ids: {ids}")


def make_env(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    """``gymnasium.make`` of one of :data:`PROJECT_IDS`, with one clear error for another id or
    an unknown keyword."""
    env_id = check_env_id(env_id)
    try:
        return gym.make(env_id, **env_kwargs)
    except TypeError as err:
        if "unexpected keyword" in str(err):
            raise ValueError(f"unknown env kwarg for {env_id}: {err}") from None
        raise


def compact_ids(ids: list[str]) -> list[str]:
    """Ids that differ in one dash-separated part, written once: ``{InfoCNF,CCNF}-Digits-v0``,
    ``ODE-{Kepler,Lorenz}-v0``."""
    out: list[str] = []
    pending = list(ids)
    while pending:
        parts = pending[0].split("-")
        best: list[str] = [pending[0]]
        best_at = 0
        for at in range(len(parts)):
            same = [i for i in pending if len(i.split("-")) == len(parts)
                    and i.split("-")[:at] + i.split("-")[at + 1:] == parts[:at] + parts[at + 1:]]
            if len(same) > len(best):
                best, best_at = same, at
        if len(best) == 1:
            out.append(best[0])
        else:
            choices = "{" + ",".join(i.split("-")[best_at] for i in best) + "}"
            out.append("-".join(parts[:best_at] + [choices] + parts[best_at + 1:]))
        pending = [i for i in pending if i not in best]
    return out


def env_has_device(name: str) -> bool:
    """Whether the registered config of id ``name`` takes a ``device`` (``False`` for an unknown id)."""
    name = env_id(name)
    return name in gym.registry and hasattr(gym.spec(name).kwargs.get("config"), "device")



def resolve_device(flag: str | None, env_kwarg: Any = None) -> str:
    """The device of a run: ``--device``, else ``--env-kwargs device=...``, else CUDA when
    available, else CPU; one ``ValueError`` for an unknown or unavailable device."""
    if flag is not None and env_kwarg is not None and str(env_kwarg) != flag:
        raise ValueError(f"--device {flag} and --env-kwargs device={env_kwarg!r} disagree: give one of them")
    requested = flag if flag is not None else env_kwarg
    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return check_device(requested)
