"""The study registry (runs/studies/__init__.py): every study module registered once, and every
registered study holding what the driver, the tables and the results page need."""

from __future__ import annotations

import ast
import json
import sys
import textwrap
from pathlib import Path

import pytest

from runs import docs, reproduce
from runs.studies import MODULES, build, load_config, registry, study, study_table
from runs.study import Page, Study

ROOT = Path(__file__).resolve().parent.parent
STUDIES = ROOT / "runs" / "studies"


def _defines_study(path: Path) -> bool:
    """Whether a module assigns ``STUDY`` at its top level (read from the source, not imported)."""
    tree = ast.parse(path.read_text())
    return any(isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "STUDY" for t in node.targets)
               for node in tree.body)


def test_every_study_module_is_registered_exactly_once():
    files = {p.stem for p in STUDIES.glob("*.py") if p.stem != "__init__"}
    with_study = {name for name in files if _defines_study(STUDIES / f"{name}.py")}
    assert len(MODULES) == len(set(MODULES)), "a module is listed twice in runs.studies.MODULES"
    assert set(MODULES) == with_study, (f"defines STUDY but is not registered: {sorted(with_study - set(MODULES))}; "
                                        f"registered without a STUDY: {sorted(set(MODULES) - with_study)}")
    assert files - with_study == {"common", "__main__"}  # the helpers, and `python -m runs.studies` (the study table)
    assert len(registry()) == len(MODULES)


def test_names_result_files_and_page_orders_are_unique():
    studies = list(registry().values())
    for what in ("name", "stem"):
        values = [getattr(s, what) for s in studies]
        assert len(set(values)) == len(values), what
    orders = [s.page.order for s in studies]
    assert len(set(orders)) == len(orders), "two sections share a page order"
    assert [s.name for s in docs.sections()] == [s.name for s in sorted(studies, key=lambda s: s.page.order)]


@pytest.mark.parametrize("name", list(registry()))
def test_each_study_has_what_the_driver_tables_and_page_need(name):
    s = study(name)
    assert isinstance(s, Study) and s.name == name
    assert s.summary and "\n" not in s.summary and len(s.summary) <= 100, "one line, for the study tables"
    assert callable(s.run) and (s.plot is None or callable(s.plot))
    assert isinstance(s.page, Page) and s.page.title and callable(s.page.render) and isinstance(s.page.order, int)
    stems = {x.stem for x in registry().values()}
    assert set(s.page.needs) <= stems, f"needs result files no study writes: {set(s.page.needs) - stems}"
    assert s.stem in s.page.needs or not s.page.needs, "a section that reads results reads its own"
    assert set(s.quick) <= set(s.config), f"quick settings the config lacks: {sorted(set(s.quick) - set(s.config))}"
    assert s.load_config(False) == dict(s.config) and s.load_config(False) is not s.config
    assert all(len(c) == 3 and isinstance(c[0], str) and isinstance(c[1], str) and isinstance(c[2], int)
               for c in s.columns)
    assert not (s.table_extra or s.table_notes) or s.columns, "table extras and notes need a table"
    assert s.seeds >= 1


def test_the_drivers_study_table_is_the_registrys():
    table = study_table()
    assert table in reproduce.__doc__, "runs/reproduce.py's study table differs: paste `python -m runs.studies`"
    listed = [line.split("``")[1] for line in table.splitlines() if line.startswith("``")]
    assert listed == list(registry())
    assert all(s.summary in table for s in registry().values())


def test_the_results_page_lists_every_registered_study(tmp_path):
    (tmp_path / "uncond.json").write_text((ROOT / "runs" / "results" / "uncond.json").read_text())
    page = docs.render(tmp_path)
    index = [line for line in page.splitlines() if line.startswith(("| [", "| (no committed result)"))]
    listed = [line.split("|")[2].strip().strip("`") for line in index]
    assert sorted(listed) == sorted(registry()) and len(listed) == len(set(listed))
    assert "| [Unconditional CNF with vs without learned tolerances, Fig. 4 analogue](#uncond) | `uncond` |" in page
    assert "| (no committed result) | `digits-table` |" in page


def test_an_unknown_study_is_one_error_naming_the_valid_ones():
    with pytest.raises(ValueError, match=r"^unknown study 'table-9'; valid: digits-table, uncond, "):
        study("table-9")


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package ``fakestudies`` of modules written by the test, importable by name."""
    root = tmp_path / "fakestudies"
    root.mkdir()
    (root / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, study_name: str | None, stem: str = "") -> None:
        body = "" if study_name is None else textwrap.dedent(f"""\
            from runs.study import Page, Study
            STUDY = Study(name={study_name!r}, summary="s", config={{}}, run=lambda ctx: {{}},
                          page=Page("t", 1, lambda res: "", ()), stem={stem!r})
            """)
        (root / f"{name}.py").write_text(body)

    yield write
    for name in [m for m in sys.modules if m.startswith("fakestudies")]:
        del sys.modules[name]


def test_the_registry_refuses_a_module_without_a_study_or_a_name_taken_twice(package):
    package("a", "one")
    package("b", "two")
    package("c", None)
    package("d", "one")
    package("e", "three", stem="two")
    assert list(build(("a", "b"), "fakestudies")) == ["one", "two"]
    with pytest.raises(TypeError, match=r"^fakestudies\.c defines no STUDY"):
        build(("a", "c"), "fakestudies")
    with pytest.raises(ValueError, match=r"^fakestudies\.d: study name 'one' is taken"):
        build(("a", "d"), "fakestudies")
    with pytest.raises(ValueError, match=r"^fakestudies\.e: study result file 'two' is taken"):
        build(("b", "e"), "fakestudies")
    with pytest.raises(ValueError, match="listed twice"):
        build(("a", "a"), "fakestudies")


def test_set_overrides_a_config_entry_and_refuses_one_the_study_lacks():
    assert reproduce.parse_overrides("bench-cifar", ["device=cuda", "batch=900"]) == {"device": "cuda", "batch": 900}
    assert reproduce.parse_overrides("benchmark", ["tasks.ODE-Mixed-v0.task_kwargs.train_pool_size=8"]) == {
        "tasks": {"ODE-Mixed-v0": {"task_kwargs": {"train_pool_size": 8}}}}
    config = study("bench-cifar").load_config(False, {"batch": 900})
    assert config["batch"] == 900 and study("bench-cifar").config["batch"] == 4
    with pytest.raises(ValueError, match=r"^--set batchsize: study bench-cifar has no config entry 'batchsize'; "
                                         r"valid: device, batch, "):
        reproduce.parse_overrides("bench-cifar", ["batchsize=9"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        reproduce.parse_overrides("bench-cifar", ["batch"])


def test_quick_settings_are_merged_key_by_key_and_never_drop_a_nested_setting():
    """runs.study.merge: an override replaces the values it names, at any depth, and keeps the
    rest; so every study's ``--quick`` config holds every setting of its full one."""
    from collections.abc import Mapping

    from runs.study import merge

    base = {"tasks": {"A": {"x": 1, "y": {"p": 1, "q": 2}}, "B": {"x": 3}}, "n": 3}
    merged = merge(base, {"tasks": {"A": {"y": {"q": 5}}}, "m": 4})
    assert merged == {"tasks": {"A": {"x": 1, "y": {"p": 1, "q": 5}}, "B": {"x": 3}}, "n": 3, "m": 4}
    assert base["tasks"]["A"]["y"]["q"] == 2  # a copy: the study's own config is left as it was

    def paths(config: Mapping, prefix: tuple = ()) -> set[tuple]:
        out = set()
        for key, value in config.items():
            out.add((*prefix, key))
            if isinstance(value, Mapping):
                out |= paths(value, (*prefix, key))
        return out

    for name, s in registry().items():
        assert paths(s.config) <= paths(s.load_config(True)), name


def test_every_amount_of_work_a_quick_config_sets_is_smaller_than_the_full_ones() -> None:
    """A quick setting of episodes, iterations, trials, rounds, seconds or pool sizes that reads
    the full value (the full config's constant in place of the quick one) would make the quick
    run as long as the full one, which no schema check notices."""
    import re
    from collections.abc import Mapping

    work = re.compile(r"episodes|iterations|trials|rounds|seconds|pool_size")

    def leaves(config: Mapping, prefix: tuple = ()):
        for key, value in config.items():
            if isinstance(value, Mapping):
                yield from leaves(value, (*prefix, key))
            else:
                yield (*prefix, key), value

    checked = 0
    for name, s in registry().items():
        full = dict(leaves(s.config))
        for path, value in leaves(s.quick):
            if work.search(str(path[-1])) and isinstance(full.get(path), (int, float)):
                assert value < full[path], (name, path)
                checked += 1
    assert checked >= 20


#: Committed results run with other settings than their study's full config, each documented
#: beside its figures (docs/limitations.md): speed-classical on the direct path over 2 seeds.
PARTIAL_RUNS: dict[str, tuple[dict, list[int]]] = {
    "speed-classical": ({"paths": ["direct"]}, [0, 1]),
}


def test_every_committed_result_was_run_with_its_studys_full_config():
    """A default changed without the study run again (or a full config that reads a quick
    setting) leaves a committed figure that the documented command no longer writes."""
    checked = 0
    for name, s in registry().items():
        path = ROOT / "runs" / "results" / f"{s.stem}.json"
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        if "config" not in result:  # the performance scripts' results record their settings flat
            continue
        overrides, seeds = PARTIAL_RUNS.get(name, ({}, list(range(s.seeds))))
        config = json.loads(json.dumps({**load_config(name, False, {}), **overrides}, default=str))
        assert result.get("quick", False) is False, name
        assert {k: result["config"].get(k) for k in config} == config, name
        assert result.get("seeds", seeds) == seeds, name
        checked += 1
    assert checked >= 20
