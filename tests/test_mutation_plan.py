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


def test_the_whole_suite_option_runs_the_readmes_suite_for_every_mutant(monkeypatch) -> None:
    import mutation_check

    ran: list[list[str]] = []
    monkeypatch.setattr(mutation_check, "scratch_copy", lambda root: Path(mutation_check.tempfile.mkdtemp()))

    def run_tests(copy, tests, timeout):  # the baseline passes, the mutant fails
        ran.append(tests)
        return (0, "passed") if len(ran) == 1 else (1, "FAILED")

    monkeypatch.setattr(mutation_check, "run_tests", run_tests)
    mutant = mutation_check.Mutant("m", "f.py", "a", "b", ["tests/test_x.py"])
    monkeypatch.setattr(Path, "read_text", lambda self: "a")
    monkeypatch.setattr(Path, "write_text", lambda self, text: None)
    outcomes = mutation_check.check([mutant], baseline=True, timeout=1.0, whole_suite=True)
    assert ran == [mutation_check.WHOLE_SUITE] * 2 and outcomes[0].status == "caught"
    ran.clear()
    mutation_check.check([mutant], baseline=True, timeout=1.0)
    assert ran == [["tests/test_x.py"]] * 2


def test_a_failure_under_two_workers_counts_as_caught_and_a_collection_error_as_broken() -> None:
    from mutation_check import outcome

    xdist_stop = ("F\nFAILED tests/test_a.py::test_a - assert False\n"
                  "!! xdist.dsession.Interrupted: stopping after 1 failures !!")
    assert outcome(2, xdist_stop) == (1, "FAILED tests/test_a.py::test_a - assert False")
    assert outcome(1, "FAILED tests/test_a.py::test_a - x\n1 failed")[0] == 1
    assert outcome(2, "ERROR tests/test_b.py - ModuleNotFoundError\n1 error")[0] == 2
    assert outcome(0, "3 passed") == (0, "3 passed")
