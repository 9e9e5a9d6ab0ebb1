"""The documentation: docs/results.md is what its JSON gives, and every link points somewhere."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runs import docs

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _links(page: Path) -> list[str]:
    """Relative link targets of a markdown page (no URLs, no same-page anchors), anchors cut."""
    targets = [m.group(1) for m in LINK.finditer(page.read_text())]
    return [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def test_results_page_is_generated_from_the_committed_json():
    committed = (ROOT / docs.OUT).read_text()
    generated = docs.render(ROOT / docs.RESULTS)
    assert generated == committed, (
        "docs/results.md differs from what runs/results/*.json give: run `python -m runs.docs` "
        "and commit docs/results.md (edit the prose in the study's module in runs/studies/ or in runs/docs.py, "
        "not in the page)")


def test_check_mode_reports_a_stale_page(tmp_path, capsys):
    stale = tmp_path / "results.md"
    stale.write_text("old\n")
    assert docs.main(["--results", str(ROOT / docs.RESULTS), "--out", str(stale), "--check"]) == 1
    assert "python -m runs.docs" in capsys.readouterr().err
    assert docs.main(["--results", str(ROOT / docs.RESULTS), "--out", str(stale)]) == 0
    assert docs.main(["--results", str(ROOT / docs.RESULTS), "--out", str(stale), "--check"]) == 0


def test_results_page_follows_its_json(tmp_path):
    """A changed number in a JSON file changes the page: the prose is not typed."""
    results = tmp_path / "results"
    results.mkdir()
    for path in (ROOT / docs.RESULTS).glob("*.json"):
        (results / path.name).write_text(path.read_text())
    uncond = json.loads((results / "uncond.json").read_text())
    uncond["nfe_ratio"] = 0.123456
    (results / "uncond.json").write_text(json.dumps(uncond))
    page = docs.render(results)
    assert "0.12x the NFE of fixed" in page
    assert page != docs.render(ROOT / docs.RESULTS)


def test_every_study_has_one_section_in_page_order():
    from runs.studies import registry

    anchors = [s.name for s in docs.sections()]
    assert sorted(anchors) == sorted(registry()), anchors
    assert anchors[0] == "digits-table"
    performance = [a for a in anchors if registry()[a].summary.startswith("performance:")]
    assert performance and anchors[-len(performance):] == performance  # the performance sections close the page


def test_a_missing_study_drops_its_section(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for path in (ROOT / docs.RESULTS).glob("*.json"):
        if path.stem != "samples":
            (results / path.name).write_text(path.read_text())
    page = docs.render(results)
    assert '<a id="samples"></a>' not in page and '<a id="uncond"></a>' in page


def test_readme_links_to_docs_that_exist():
    targets = _links(ROOT / "README.md")
    doc_links = [t for t in targets if t.startswith("docs/")]
    assert doc_links, "README links to no page under docs/"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")}
    assert pages <= set(doc_links), f"docs pages the README does not link to: {sorted(pages - set(doc_links))}"


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "docs").glob("*.md")))
def test_docs_links_resolve(page):
    path = ROOT / "docs" / page
    missing = [t for t in _links(path) if not (path.parent / t).exists()]
    assert not missing, f"docs/{page} links to missing files: {missing}"


def test_results_page_anchors_exist():
    page = (ROOT / docs.OUT).read_text()
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', page))
    used = set(re.findall(r"\]\(#([^)]+)\)", page))
    assert used <= anchors, f"links to missing anchors: {sorted(used - anchors)}"


def test_readme_leaderboard_is_the_benchmark_result():
    from runs.studies.benchmark import readme_table

    result = json.loads((ROOT / docs.RESULTS / "benchmark.json").read_text())
    assert readme_table(result) in (ROOT / "README.md").read_text(), (
        "README's leaderboard table differs from runs/results/benchmark.json: paste the output of "
        "`python -m runs.studies.benchmark` into README.md")


def test_readme_fits_two_screens():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to a page under docs/"
