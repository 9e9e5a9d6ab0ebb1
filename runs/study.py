"""What a study is: the one way a committed result of ``runs/results/`` is produced.

A study is a :class:`Study`, defined once as ``STUDY`` in its module of ``runs/studies/`` and
registered there (:mod:`runs.studies`). ``python -m runs.reproduce NAME`` runs it
(:func:`runs.reproduce.run_study`): the study's :attr:`Study.run` gets a
:class:`runs.run_cache.Context` (its merged config, seeds, jobs, threads, folders) and returns
a JSON-shaped dict; the driver adds the :class:`CommonFields` and writes
``runs/results/STEM.json`` and the figure :attr:`Study.plot` draws from that dict alone.
:mod:`runs.tables` prints its :attr:`Study.columns`, and ``python -m runs.docs`` puts its
:class:`Page` section on docs/results.md, and its :class:`Finding` and :attr:`Study.readme` block
on README.md.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from runs.run_cache import Context

#: A study's result: a JSON-shaped dict (:class:`CommonFields` and the study's own entries).
Result = dict[str, Any]
#: Every result file of the results folder, by file stem: what a page section reads.
Res = dict[str, Result]
#: A table column: (header, row key or ``key_mean`` stem, digits); a stem with ``_mean`` /
#: ``_std`` in the row prints as ``mean ± std`` (:func:`runs.tables.cell`).
Column = tuple[str, str, int]


class CommonFields(TypedDict, total=False):
    """What the driver writes into every result beside the study's own entries."""

    study: str  #: the study's name
    quick: bool  #: ``--quick``: the smoke-test settings
    seeds: list[int]
    config: dict[str, Any]  #: the merged config (a study may return its own, completed one)
    regimes: dict[str, Any]  #: the digits training regimes (``{}`` for a study that trains no digits flow)
    workdir: str
    rows: list[dict[str, Any]]  #: one dict per table row, with the study's row keys
    plots: list[str]  #: the figures' file names, beside the JSON
    wall_s: float  #: what the whole study took


@dataclass(frozen=True)
class Page:
    """A study's section of docs/results.md.

    Attributes:
        title: the section's heading (anchored at the study's name).
        order: its place on the page, unique, sections in ascending order.
        render: the markdown under the heading, from ``res`` (every result file by stem).
        needs: the result files (stems) it reads; the section is left out without any of them.
    """

    title: str
    order: int
    render: Callable[[Res], str]
    needs: tuple[str, ...]


@dataclass(frozen=True)
class Finding:
    """A study's row of the README's table "What the studies found" (``python -m runs.docs``
    writes the table).

    Attributes:
        question: the question the row answers.
        order: its place in the table, unique, rows in ascending order.
        answer: the row's "in short" cell, from ``res`` (every result file by stem): a number in
            it is formatted from a result's field, never typed in.
        also: other studies whose sections the row links after its own.
    """

    question: str
    order: int
    answer: Callable[[Res], str]
    also: tuple[str, ...] = ()


def stated(text: str) -> Callable[[Res], str]:
    """A :attr:`Finding.answer` in words alone, whatever the results; one ``ValueError`` for a
    text with a digit in it (a number comes from a result: write the answer as a function)."""
    if re.search(r"\d", text):
        raise ValueError(f"a stated answer holds no number (write a function of the results): {text!r}")
    return lambda res: text


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``override`` merged in key by key (nested dicts recursively)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        out[key] = (merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
                    else copy.deepcopy(value))
    return out


@dataclass(frozen=True)
class Study:
    """One study: its settings, its code, its table, its figure and its section of the page.

    Attributes:
        name: the CLI argument (``python -m runs.reproduce NAME``) and the page anchor.
        summary: one line: what it runs, for the study tables (:mod:`runs.reproduce`'s docstring,
            docs/results.md).
        config: the full, CPU-sized setting (the module docstring says what it runs).
        run: runs the study for a context; returns ``rows`` (where it has a table) and its own
            entries, JSON-shaped; the driver adds the :class:`CommonFields`.
        page: its section of docs/results.md.
        quick: overrides for ``--quick`` (the smoke test of ``tests/test_reproduce.py``), merged
            into ``config`` key by key (:func:`merge`).
        row_keys: the keys every row of ``rows`` holds (``*_mean`` keys come with ``*_std``);
            empty for a study without rows.
        columns: its table for :mod:`runs.tables`; empty: no table.
        plot: draws its figure from its result dict alone (``None``: the driver draws none; a study
            that draws its figure in :attr:`run` lists it in its result's ``plots``).
        seeds: its number of seeds when ``--seeds`` is not given.
        nullable_keys: result keys that may be ``null``.
        table_extra: result lists printed below ``rows`` in the table.
        table_notes: the lines :mod:`runs.tables` prints under the table.
        uses_digits_regimes: whether it trains digits flows (otherwise its JSON leaves the
            digits regimes out).
        stem: its result file's stem, ``STEM.json`` (default: its name).
        in_all: whether ``python -m runs.reproduce all`` runs it (``False``: run it by name).
        finding: its row of the README's findings table (``None``: none).
        readme: a block of the README from its result (the benchmark's tables), which
            ``python -m runs.docs`` writes between the markers ``<!-- runs.docs:NAME -->`` and
            ``<!-- /runs.docs:NAME -->`` (``None``: none).
    """

    name: str
    summary: str
    config: Mapping[str, Any]
    run: Callable[[Context], Result]
    page: Page
    quick: Mapping[str, Any] = field(default_factory=dict)
    row_keys: tuple[str, ...] = ()
    columns: Sequence[Column] = ()
    plot: Callable[[Result, Path], None] | None = None
    seeds: int = 3
    nullable_keys: tuple[str, ...] = ()
    table_extra: tuple[str, ...] = ()
    table_notes: Callable[[Result], str] | None = None
    uses_digits_regimes: bool = True
    stem: str = ""
    in_all: bool = True
    finding: Finding | None = None
    readme: Callable[[Result], str] | None = None

    def __post_init__(self) -> None:
        if not self.stem:
            object.__setattr__(self, "stem", self.name)

    def load_config(self, quick: bool, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A copy of :attr:`config`, with :attr:`quick` merged in for ``--quick`` and ``overrides`` on top."""
        config = merge(self.config, self.quick) if quick else copy.deepcopy(dict(self.config))
        return merge(config, overrides or {})
