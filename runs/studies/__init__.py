"""The studies of ``python -m runs.reproduce STUDY``: the registry, built once from :data:`MODULES`.

A study is one module of this package that defines ``STUDY``, a :class:`runs.study.Study`
holding everything about it (config, quick overrides, row keys, ``run``, table columns, figure,
results-page section, seeds, ...). Adding a study is that module and its line in
:data:`MODULES`. :func:`registry` imports the listed modules by name, the first time it is
asked, and checks that each defines one study under a name and a result file no other study
has.

The shared pieces are imported by the studies, never the other way round: the digits run
matrix (environment ids, policies, training regimes) is :mod:`runs.matrix`, helpers of the
runs are :mod:`runs.studies.common`, the results page's formatters and the facts several
sections share are :mod:`runs.format`, the figures' helpers :mod:`runs.figures`, table cells
:mod:`runs.tables`. Those reach a study only through this registry, by name at call time, so
no import cycle runs through them; this module itself stays light (no torch) until asked.

``python -m runs.studies`` prints the study table of ``runs/reproduce.py``'s docstring, as the
registry gives it (a test checks the two agree).
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from runs.study import Study

#: The study modules of this package, in the order ``python -m runs.reproduce all`` runs them
#: (``digits_table`` first: the later digits studies reuse its runs). One line per study.
MODULES = (
    "digits_table",
    "uncond",
    "tol_integral",
    "tol_hist",
    "curves",
    "eval_batch",
    "policies",
    "frozen",
    "samples",
    "reinforce_ablation",
    "latent_probe",
    "speed",
    "speed_adjoint",
    "speed_classical",
    "beta",
    "tune",
    "tune_cnf",
    "benchmark",
    "scale",
    "scale_cnf",
    "threads",
    "learned_vs_fixed",
    "spirals",
    "spirals_ab_ceiling",
    "bench_env",
    "throughput",
    "bench_flow",
    "bench_backend",
    "bench_cifar",
    "bench_gpu",
)


def build(modules: tuple[str, ...], package: str = __name__) -> dict[str, Study]:
    """The studies of ``package``'s ``modules``, by name, in order: each module imported by name
    and its ``STUDY`` checked; one error for a module without one, or a name or result file that
    two studies share."""
    if len(set(modules)) != len(modules):
        raise ValueError(f"{package}: a module is listed twice: {sorted(m for m in modules if modules.count(m) > 1)}")
    studies: dict[str, Study] = {}
    stems: dict[str, str] = {}
    for module_name in modules:
        module = importlib.import_module(f"{package}.{module_name}")
        study = module.__dict__.get("STUDY")
        if not isinstance(study, Study):
            raise TypeError(f"{package}.{module_name} defines no STUDY = Study(...)")
        for kind, key, seen in (("name", study.name, studies), ("result file", study.stem, stems)):
            if key in seen:
                raise ValueError(f"{package}.{module_name}: study {kind} {key!r} is taken")
        studies[study.name] = study
        stems[study.stem] = study.name
    return studies


@functools.cache
def registry() -> dict[str, Study]:
    """Every study by name, in :data:`MODULES` order (built once, :func:`build`)."""
    return build(MODULES)


def names() -> tuple[str, ...]:
    """The studies' names, in :data:`MODULES` order."""
    return tuple(registry())


def study(name: str) -> Study:
    """The study ``name``; a ``ValueError`` naming the valid studies for an unknown one."""
    studies = registry()
    if name not in studies:
        raise ValueError(f"unknown study {name!r}; valid: {', '.join(studies)}")
    return studies[name]


def load_config(name: str, quick: bool, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of the study's config, with its quick overrides merged in for ``--quick``."""
    return study(name).load_config(quick, overrides)


def study_table() -> str:
    """The study table of ``runs/reproduce.py``'s docstring: name and one-line summary per study."""
    width = max(len(name) for name in names()) + 4
    rule = "=" * width + "  " + "=" * max(len(s.summary) for s in registry().values())
    lines = [rule] + [f"{'``' + s.name + '``':<{width}}  {s.summary}" for s in registry().values()] + [rule]
    return "\n".join(lines)
