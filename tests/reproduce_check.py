"""What every study's quick run is checked for (``tests/test_reproduce*.py``): its JSON has the
documented schema and finite numbers, its figure exists, and its page section reads it.

The studies of one test file share one workdir (module-scoped), so a study reuses the runs of
the studies before it, as in a real reproduction.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from runs import reproduce
from runs.studies import study


def _numbers(obj, path=""):
    """Every leaf of a JSON value with its path."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _numbers(value, f"{path}.{key}")
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _numbers(value, f"{path}[{i}]")
    else:
        yield path, obj


def quick_result(name: str, dirs) -> dict:
    """Study ``name``'s quick result in the module's folder (run here if the smoke test has not)."""
    workdir, out = dirs
    path = out / f"{study(name).stem}.json"
    if not path.exists():
        reproduce.run_study(name, quick=True, workdir=workdir, out=out)
    return json.loads(path.read_text())


def check_quick_study(name: str, dirs) -> None:
    """Run study ``name`` in quick mode into ``dirs`` and check what it wrote."""
    workdir, out = dirs
    s = study(name)
    reproduce.run_study(name, quick=True, workdir=workdir, out=out)
    result = json.loads((out / f"{s.stem}.json").read_text())
    for key in ("study", "quick", "seeds", "config", "regimes", "workdir", "rows", "plots", "wall_s"):
        assert key in result, key
    assert result["study"] == name and result["quick"] is True and result["seeds"] == [0]
    assert bool(result["regimes"]) == s.uses_digits_regimes
    if s.row_keys:
        assert result["rows"], "no rows"
        for row in result["rows"]:
            missing = [k for k in s.row_keys if k not in row]
            assert not missing, f"row {row.get('policy', row.get('split'))} lacks {missing}"
            assert all(f"{k[:-5]}_std" in row for k in row if k.endswith("_mean"))
    for path, value in _numbers({k: v for k, v in result.items() if k != "config"}):
        assert value is not None or path.rsplit(".", 1)[-1] in s.nullable_keys, f"null at {path}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert math.isfinite(value), f"non-finite {value} at {path}"
    assert bool(result["plots"]) == (s.plot is not None or name == "spirals")  # spirals draws from its models
    for png_name in result["plots"]:
        png = out / png_name
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert s.page.render({**_committed(s.page.needs), s.stem: result})  # its section reads what its run writes


def _committed(stems: tuple[str, ...]) -> dict:
    """The committed results a section reads beside its own."""
    root = Path(__file__).resolve().parents[1] / "runs" / "results"
    return {stem: json.loads((root / f"{stem}.json").read_text()) for stem in stems if (root / f"{stem}.json").exists()}


def check_tables(out: Path) -> int:
    """Every tabled study's quick result in ``out`` prints a table of one line per row (and per
    extra entry) with the study's columns and no NaN; returns how many it checked."""
    from runs import tables

    checked = 0
    for name in tables.tabled():
        s = study(name)
        if not (out / f"{s.stem}.json").exists():
            continue
        result = json.loads((out / f"{s.stem}.json").read_text())
        text = tables.table(result, name)
        lines = text.splitlines()
        assert len(lines) == 2 + len(result["rows"]) + sum(len(result.get(k, [])) for k in s.table_extra), name
        assert all(line.count("|") == len(s.columns) + 1 for line in lines), name
        assert "nan" not in text.lower(), name
        checked += 1
    return checked
