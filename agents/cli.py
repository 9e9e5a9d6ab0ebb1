"""Command-line arguments from documented dataclasses (cleanrl's ``Args`` style).

Each agent script declares ``@dataclass class Args(CommonArgs)``; every field carries a
``help`` string in its metadata, so ``--help`` documents every flag.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import re
import sys
import typing
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

#: Where run directories go by default, relative to the working directory: a plain folder, not
#: the ``runs`` package (a run directory elsewhere, given to ``--out`` or ``--resume``, works as well).
RUNS_ROOT = "logs"


def arg(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a help text."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help, **kwargs})
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


@dataclasses.dataclass
class CommonArgs:
    """Flags shared by every agent CLI."""

    env: str = arg("InfoCNF-Digits-v0", "registered environment id: a key of infocnf_env.ENV_IDS (the training-step "
                   "ids) or of infocnf_env.FROZEN_IDS (CNF-Frozen-*-v0); README.md lists them; the "
                   "'infocnf_env:' prefix is accepted")
    seed: int = arg(0, "seed (0 <= seed < 2**32) of the run: the flow's initial weights (unless --env-kwargs "
                    "seed=... is given), the first reset (data order, noise) and the agent")
    device: str | None = arg(None, "torch device of the environment's model and of an SB3 policy: cpu, cuda, "
                             "cuda:1 (default: cuda when available, else cpu); a resumed run may change it")
    threads: int | None = arg(None, "CPU threads of torch and of NumPy's BLAS, set before the env is built "
                              "(default: 1 for the bundled ids, whose tensors are too small to share; torch's own, "
                              "one per core, for the CIFAR10 and MNIST ids; infocnf_env.threads); a resumed run "
                              "may change it")
    iterations: int = arg(300, "flow training iterations (= episodes), at least 1")
    eval_every: int = arg(100, "evaluate on the test set at tol 1e-5 every N iterations (0: only at the end)")
    eval_batches: int | None = arg(None, "limit periodic evaluations to this many test batches (default: all; "
                                   "the final evaluation is always full)")
    checkpoint_every: int = arg(50, "write a checkpoint every N iterations (0: only at the end)")
    out: str | None = arg(None, f"run directory (default: {RUNS_ROOT}/<env>__<agent>__<seed>__<time>/)")
    resume: str | None = arg(None, "continue the run in this directory from its last checkpoint, with its own "
                             "settings (only --iterations, --progress, --device and --threads may change)")
    env_kwargs: list[str] = arg([], "environment overrides as key=value, values parsed as Python literals "
                                "(e.g. batch_size=32 hidden=8)", nargs="*")
    progress: bool = arg(True, "show a progress bar")
    tensorboard: bool = arg(True, "write TensorBoard scalars to the run directory")
    #: The flags given on the command line (``--resume`` refuses those that would change the run).
    explicit: frozenset[str] = dataclasses.field(default=frozenset(), repr=False, compare=False,
                                                 metadata={"cli": False})


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written (its example commands keep their lines) and each option's
    default once: appended as ``(default: X)`` unless the help text already states a default.

    Nothing is appended for a default that says nothing (``None``, an empty list or string, a
    switch that is off); such a help text says what happens without the option where it matters.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        default = action.default
        plain_switch = default is False and action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)
        if "default" in help_text.lower() or default is argparse.SUPPRESS or default in (None, "", []) or plain_switch:
            return help_text
        return help_text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse with the project's conventions for a command line:

    * a usage error is one line, ``error: ...`` (exit 2), naming the valid choices where there
      are some and pointing at ``--help``, not the usage text;
    * a negative number in any notation (``-1e-5``, ``-.5``, ``-inf``) is a value, not a flag
      (argparse alone reads ``--tol -1e-5`` as a missing value followed by an unknown flag).
    """

    #: What argparse reads as a negative number (it would take only ``-1`` and ``-1.5``).
    NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = self.NEGATIVE_NUMBER

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        self.exit(2, f"error: {message} ({self.prog} --help lists every option)\n")


def command_parser(module: str, description: str | None = None, **kwargs: Any) -> Parser:
    """The :class:`Parser` of ``python -m MODULE``, its description shown as written."""
    return Parser(prog=f"python -m {module}", description=description,
                  formatter_class=kwargs.pop("formatter_class", argparse.RawDescriptionHelpFormatter), **kwargs)


def parse_args(cls: type[T], argv: list[str] | None = None, description: str | None = None) -> T:
    """Parse ``argv`` into ``cls``: one ``--flag`` per field (``positional=True`` in a field's
    metadata: a positional argument, optional, that may come before or after the flags).

    A ``cls`` with an ``explicit`` field (:class:`CommonArgs`) gets there the names of the
    flags given on the command line.
    """
    args = cls(**vars(_parser(cls, description).parse_args(argv)))
    given = _parser(cls, description, argparse.SUPPRESS).parse_args(argv)
    if any(f.name == "explicit" for f in dataclasses.fields(cls)):
        args = dataclasses.replace(args, explicit=frozenset(vars(given)))
    return args


def _parser(cls: type, description: str | None, argument_default: Any = None) -> argparse.ArgumentParser:
    """The parser of ``cls``'s fields; ``argument_default=SUPPRESS`` leaves out flags not given."""
    parser = Parser(prog=_program(cls), description=description, formatter_class=HelpFormatter)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        name = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if argument_default is argparse.SUPPRESS:
            default = argparse.SUPPRESS
        kind = hints[f.name]
        if f.metadata.get("positional"):
            parser.add_argument(f.name, nargs="?", default=default, help=help_text, type=_scalar_type(kind),
                                metavar=f.name.upper())
        elif kind is bool and (f.name.startswith("no_") or default is False):
            # a plain switch (off unless given): BooleanOptionalAction would read "--no-x" as "x off",
            # i.e. no_x=False, and print an "(default: False)" that says nothing
            parser.add_argument(name, default=default, help=help_text, action="store_true")
        elif kind is bool:
            parser.add_argument(name, default=default, help=help_text, action=argparse.BooleanOptionalAction)
        elif "nargs" in f.metadata:
            parser.add_argument(name, default=default, help=help_text, nargs=f.metadata["nargs"],
                                type=_scalar_type(kind))
        else:
            parser.add_argument(name, default=default, help=help_text, type=_scalar_type(kind),
                                **({"choices": f.metadata["choices"]} if "choices" in f.metadata else {}))
    return parser


def _program(cls: type) -> str:
    """``python -m PACKAGE.NAME`` for the usage line (``NAME.py`` is what argparse would show)."""
    module = cls.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else module
    return f"python -m {module}" if module.startswith(("agents.", "runs.")) else os.path.basename(sys.argv[0])


def _scalar_type(kind: Any) -> Any:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) is list:
        return args[0]
    if args:
        return args[0]
    return kind


def parse_env_kwargs(pairs: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "obs_mode=features"]`` -> ``{"lr": 0.001, "obs_mode": "features"}``."""
    return parse_kwargs(pairs, "env kwarg")


def parse_kwargs(pairs: list[str], what: str = "kwarg") -> dict[str, Any]:
    """``key=value`` pairs to a dict; values are Python literals where they parse as one."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"{what} {pair!r} is not of the form key=value")
        key, value = pair.split("=", 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out
