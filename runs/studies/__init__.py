"""The studies of ``python -m runs.reproduce STUDY``, one module each.

A study is one module: everything about it lives in ``runs/studies/<name>.py``, and adding a
study is that file plus its line in :data:`MODULES`. The module holds

* ``CONFIG``: the full, CPU-sized setting (the docstring's "Cost" says what it runs);
* ``QUICK``: overrides for ``--quick``, the smoke-test setting used by
  ``tests/test_reproduce.py``, merged into ``CONFIG`` key by key (nested dicts recursively);
* ``ROW_KEYS``: the keys every row of the study's ``rows`` holds (``*_mean`` keys come with
  ``*_std``);
* ``run(ctx) -> dict``: runs the study for a :class:`runs.run_cache.Context` and returns
  ``rows`` plus any study-specific entries; the driver adds the common ones;
* ``COLUMNS``: its table, ``(header, row key or key_mean stem, digits)`` per column, printed by
  :mod:`runs.tables` (``curves`` has none: its rows are series);
* ``plot(result, path)``: its figure, drawn from the result dict alone (:mod:`runs.plots`);
* ``TITLE``, ``NEEDS``, ``PAGE_ORDER`` and ``section(res) -> str``: its section of
  docs/results.md (:mod:`runs.docs`): the heading, the result files the section needs (it is
  left out without them), its place on the page (sections in ascending ``PAGE_ORDER``; the
  page order is not the order of :data:`MODULES`) and the markdown under the heading, built
  from ``res``, every result file by stem.

Optional: ``SEEDS``, the study's number of seeds when ``--seeds`` is not given (3 otherwise);
``USES_DIGITS_REGIMES = False`` for a study that trains no digits flow (its JSON
leaves the digits regimes out); ``NULLABLE_KEYS``, result keys that may be ``null``;
``TABLE_EXTRA``, result lists printed below ``rows`` in the table; ``table_notes(result)``,
lines :mod:`runs.tables` prints under the table.

The shared pieces are imported by the studies, never the other way round: the digits run
matrix (environment ids, policies, training regimes) is :mod:`runs.matrix`, helpers of the
runs are :mod:`runs.studies.common`, formatters and facts shared by several sections are in
:mod:`runs.docs`, plot helpers in :mod:`runs.plots`, table cells in :mod:`runs.tables`. Those
modules reach a study through :func:`study_module` (by name, at call time), so no import
cycle runs through them. This package module stays light (no torch): it only names the
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
    "speed-adjoint": "speed_adjoint",
    "speed-classical": "speed_classical",
    "beta": "beta",
    "tune": "tune",
    "tune-cnf": "tune_cnf",
    "benchmark": "benchmark",
    "threads": "threads",
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

