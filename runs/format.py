"""The results page's text: numbers as the page writes them, and facts several sections read.

Every study's page section (:class:`runs.study.Page`) builds its markdown from result files
with these helpers; ``res`` is every result file of the results folder by stem
(:data:`runs.study.Res`). The facts read one study's result for another study's section
(the evaluation tolerance, the upper action bound, the number of blocks, ...) and are
``None`` where that result is absent.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

from runs.study import Res

#: Where the generated page's image links point to, relative to docs/results.md.
IMAGES = "../runs/results"

T = TypeVar("T")


# ----------------------------------------------------------------------------- numbers as text


def pct(value: float, digits: int = 2) -> str:
    """A relative difference in percent, with its sign: ``+1.85%`` (``+0.00%`` where it rounds to zero)."""
    percent = 100 * value
    return f"{percent if round(percent, digits) else 0.0:+.{digits}f}%"


def rel_pct(value: float | None) -> str:
    """A relative difference as a table cell: ``+1.85%``, ``nan`` for a missing or non-finite one."""
    return "nan" if value is None or not math.isfinite(value) else f"{100 * value:+.2f}%"


def apct(value: float, digits: int = 2) -> str:
    """An unsigned percentage: ``0.13%``."""
    return f"{100 * abs(value):.{digits}f}%"


def sci(value: float, digits: int = 0) -> str:
    """A tolerance in short scientific notation: ``1e-2``, ``7e-3``, ``1.5e-3``."""
    mantissa, exponent = f"{value:.{digits}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def tol10(log10_tol: float, digits: int = 0) -> str:
    """A tolerance given by its log10: ``tol10(-2.0) == "1e-2"``."""
    return sci(10.0 ** log10_tol, digits)


def nums(values: list[float], digits: int = 2) -> str:
    """Plain numbers as ``-1.70, -2.05``."""
    return ", ".join(f"{v:.{digits}f}" for v in values)


def xs(values: list[float], digits: int = 2) -> str:
    """Ratios as ``0.70x, 0.81x, 0.70x``."""
    return ", ".join(f"{v:.{digits}f}x" for v in values)


def rng(values: list[float], digits: int, sep: str = "-") -> str:
    """``lo-hi`` of the values (one value if they round equal)."""
    lo, hi = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return lo if lo == hi else f"{lo}{sep}{hi}"


def share(ratio: float) -> str:
    """A fraction in words: ``half``, else a percentage."""
    return "half" if ratio == 0.5 else f"{ratio:.0%}"


def verdict(met: bool) -> str:
    """A target's verdict, in bold."""
    return "**met**" if met else "**not met**"


def bullets(items: list[str]) -> str:
    """A markdown list of the non-empty items."""
    return "\n".join(f"- {item}" for item in items if item)


def cell_text(text: str) -> str:
    """Text for a markdown table cell (its ``|`` escaped)."""
    return text.replace("|", "\\|")


def figure(stem: str) -> str:
    """The markdown image of a result's figure, ``STEM.png``."""
    return f"![{stem}]({IMAGES}/{stem}.png)"


# ----------------------------------------------------------------------------- rows


def row(rows: list[dict], **match: Any) -> dict:
    """The one row whose fields equal ``match``."""
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    if len(found) != 1:
        raise KeyError(f"{len(found)} rows match {match}")
    return found[0]


def per_seed(r: dict, key: str) -> list[float]:
    """A row's per-seed values of ``key``."""
    return [s[key] for s in r["per_seed"]]


def within_std(a: dict, b: dict, key: str) -> bool:
    """Whether two rows' means differ by less than the larger of their stds."""
    return abs(a[f"{key}_mean"] - b[f"{key}_mean"]) <= max(a[f"{key}_std"], b[f"{key}_std"])


# ----------------------------------------------------------------------------- facts several sections share


def required(value: T | None, study: str) -> T:
    """``value``, read from ``study``'s results: one clear error where the page lacks them."""
    if value is None:
        raise ValueError(f"this section of the results page needs {study}.json")
    return value


def upper_bound(res: Res) -> float | None:
    """log10 of the default action bound: where the ``fixed 1e-2`` ablation arm sits."""
    if "reinforce-ablation" not in res:
        return None
    return row(res["reinforce-ablation"]["rows"], variant="fixed 1e-2")["log10_tol_last_mean"]


def eval_tol(res: Res) -> str:
    """The evaluation tolerance, from eval-batch's reference rows (or samples' config)."""
    if "eval-batch" in res:
        return sci(res["eval-batch"]["reference"][0]["tol"])
    return sci(res["samples"]["config"]["tol"]) if "samples" in res else "the evaluation tolerance"


def num_blocks(res: Res) -> int | None:
    """The digits flows' number of CNF blocks (from tol-hist)."""
    if "tol-hist" not in res:
        return None
    return 1 + max(r["block"] for r in res["tol-hist"]["rows"])


def num_train(res: Res) -> int | None:
    """The digits training set's size (from eval-batch)."""
    if "eval-batch" not in res:
        return None
    return row(res["eval-batch"]["rows"], split="train", batch_size=res["eval-batch"]["rows"][-1]["batch_size"])[
        "num_samples"]


def num_classes(res: Res) -> int | None:
    """The digits' number of classes (from samples)."""
    if "samples" not in res:
        return None
    s = res["samples"]
    return len(next(iter(s["grids"].values()))) // s["per_class"]
