"""The studies of ``python -m runs.reproduce STUDY``, one module each.

Each module holds its study's settings and code:

* ``CONFIG``: the full, CPU-sized setting (about an hour per study on 2 cores);
* ``QUICK``: overrides for ``--quick``, the smoke-test setting used by
  ``tests/test_reproduce.py``, merged into ``CONFIG`` key by key (nested dicts recursively);
* ``ROW_KEYS``: the keys every row of the study's ``rows`` holds (``*_mean`` keys come with
  ``*_std``);
* ``run(ctx) -> dict``: runs the study for a :class:`runs.run_cache.Context` and returns
  ``rows`` plus any study-specific entries; the driver adds the common ones.

A study that does not train digits flows sets ``USES_DIGITS_REGIMES = False`` so its JSON
leaves the digits regimes out. The digits training regimes (``small`` / ``large`` batch) live
in :mod:`runs.studies.digits_table` and are shared by every study that trains a digits flow,
so their runs are cached once. Helpers shared by the studies are in
:mod:`runs.studies.common`. This package module stays light (no torch): it only names the
studies and loads their configs.
"""

from __future__ import annotations

import copy
import importlib
from types import ModuleType

#: study name (the CLI argument) -> module in this package.
MODULES = {
    "digits-table": "digits_table",
    "uncond": "uncond",
    "tol-integral": "tol_integral",
    "tol-hist": "tol_hist",
    "curves": "curves",
    "eval-batch": "eval_batch",
    "policies": "policies",
    "frozen": "frozen",
    "samples": "samples",
    "reinforce-ablation": "reinforce_ablation",
    "latent-probe": "latent_probe",
    "speed": "speed",
    "benchmark": "benchmark",
    "beta": "beta",
    "leaderboard": "leaderboard",
    "leaderboard-cnf": "leaderboard_cnf",
}


def study_module(study: str) -> ModuleType:
    """The module of ``study``; a ``ValueError`` naming the valid studies for an unknown one."""
    if study not in MODULES:
        raise ValueError(f"unknown study {study!r}; valid: {', '.join(MODULES)}")
    return importlib.import_module(f"{__name__}.{MODULES[study]}")


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(study: str, quick: bool) -> dict:
    """A copy of the study's ``CONFIG``, with ``QUICK`` merged in for ``--quick``."""
    module = study_module(study)
    return _merge(module.CONFIG, module.QUICK) if quick else copy.deepcopy(module.CONFIG)


def digits_regimes(quick: bool) -> dict:
    """A copy of the digits training regimes (``--quick`` ones with ``quick``)."""
    from runs.studies import digits_table

    return copy.deepcopy(digits_table.QUICK_REGIMES if quick else digits_table.REGIMES)
