"""The plan of planted bugs (tests/mutants.toml) stays applicable: every mutant's ``old`` text is
where it says, its test files exist, and it changes the code, so a refactor cannot leave the
mutation check running on code that is gone (docs/design.md, "Planting bugs")."""

from __future__ import annotations

from pathlib import Path

import pytest
from mutation_check import load_plan, mutate

REPO = Path(__file__).resolve().parents[1]
PLAN = load_plan(REPO / "tests" / "mutants.toml")


@pytest.mark.parametrize("mutant", PLAN, ids=lambda m: m.name)
def test_every_planted_bug_applies_to_the_code_as_it_is(mutant) -> None:
    text = (REPO / mutant.file).read_text()
    assert mutate(text, mutant) != text  # raises if ``old`` is missing or ambiguous
    assert mutant.tests and all((REPO / t).is_file() for t in mutant.tests), mutant.tests
