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


def test_check_mode_reports_a_stale_page_and_a_stale_readme(tmp_path, capsys):
    stale, readme = tmp_path / "results.md", tmp_path / "README.md"
    stale.write_text("old\n")
    readme.write_text((ROOT / "README.md").read_text().replace("| question | study | in short |", "| old |"))
    args = ["--results", str(ROOT / docs.RESULTS), "--out", str(stale), "--readme", str(readme)]
    assert docs.main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    assert "python -m runs.docs" in err and str(stale) in err and str(readme) in err
    assert docs.main(args) == 0
    assert docs.main([*args, "--check"]) == 0
    assert readme.read_text() == (ROOT / "README.md").read_text()


def test_readmes_generated_blocks_are_the_committed_json():
    committed = (ROOT / "README.md").read_text()
    assert docs.fill_readme(committed, docs.readme_blocks(docs.load(ROOT / docs.RESULTS))) == committed, (
        "README.md's generated blocks differ from runs/results/*.json: run `python -m runs.docs` (edit the "
        "study's Finding or readme in runs/studies/, not README.md's blocks)")


def test_readme_blocks_follow_their_json_and_need_their_markers(tmp_path):
    res = docs.load(ROOT / docs.RESULTS)
    res["throughput"] = {**res["throughput"], "native_ratio_ode": 123.0}
    blocks = docs.readme_blocks(res)
    assert "runs 123x the single env's" in blocks[docs.FINDINGS]
    assert set(blocks) == {docs.FINDINGS, "benchmark"}
    text = "a\n<!-- runs.docs:findings -->\nold\n<!-- /runs.docs:findings -->\nb\n"
    assert docs.fill_readme(text, {"findings": "new"}) == text.replace("old", "new")
    with pytest.raises(ValueError, match="README.md needs one block <!-- runs.docs:benchmark -->"):
        docs.fill_readme(text, {"benchmark": "x"})


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


def test_readme_fits_two_screens():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to a page under docs/"


def test_a_stated_finding_cannot_type_a_number():
    from runs.study import stated

    assert stated("little: per-block constants")({}) == "little: per-block constants"
    with pytest.raises(ValueError, match="holds no number"):
        stated("REINFORCE trains with 0.76x the NFE")
