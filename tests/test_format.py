"""runs.format: the numbers as the results page writes them, and the facts one study's section
reads from another's result, each checked against its docstring's definition."""

from __future__ import annotations

import math

import pytest

from runs import format as fmt


# ----------------------------------------------------------------------------- numbers as text
def test_percentages_keep_their_sign_and_digits() -> None:
    assert fmt.pct(0.0185) == "+1.85%" and fmt.pct(-0.0185) == "-1.85%"
    assert fmt.pct(0.12345, digits=1) == "+12.3%"
    assert fmt.pct(-0.00001) == "+0.00%"  # rounds to zero: no "-0.00%"
    assert fmt.rel_pct(-0.5) == "-50.00%" and fmt.rel_pct(0.25) == "+25.00%"
    assert fmt.rel_pct(None) == fmt.rel_pct(math.nan) == fmt.rel_pct(math.inf) == "nan"
    assert fmt.apct(-0.0013) == "0.13%" and fmt.apct(0.5, digits=0) == "50%"


def test_tolerances_in_short_scientific_notation() -> None:
    assert [fmt.sci(v) for v in (1e-2, 7e-3, 1e-5)] == ["1e-2", "7e-3", "1e-5"]
    assert fmt.sci(1.5e-3, digits=1) == "1.5e-3" and fmt.sci(250.0) == "2e2"
    assert fmt.tol10(-2.0) == "1e-2" and fmt.tol10(-5.5, digits=1) == "3.2e-6"


def test_lists_and_ranges_of_numbers() -> None:
    assert fmt.nums([-1.7, -2.054]) == "-1.70, -2.05" and fmt.nums([1.0], digits=0) == "1"
    assert fmt.xs([0.7, 0.812]) == "0.70x, 0.81x"
    assert fmt.rng([3.0, 1.0, 2.0], 1) == "1.0-3.0"  # lowest to highest, whatever the order
    assert fmt.rng([1.001, 1.004], 2) == "1.00"  # equal once rounded: one value
    assert fmt.rng([1.0, 2.0], 0, sep=" to ") == "1 to 2"


def test_words_and_markdown() -> None:
    assert fmt.share(0.5) == "half" and fmt.share(0.25) == "25%"
    assert fmt.verdict(True) == "**met**" and fmt.verdict(False) == "**not met**"
    assert fmt.bullets(["a", "", "b"]) == "- a\n- b"
    assert fmt.cell_text("a|b") == "a\\|b"
    assert fmt.figure("beta") == f"![beta]({fmt.IMAGES}/beta.png)"


# ----------------------------------------------------------------------------- rows
def test_row_finds_the_one_row_that_matches_every_field() -> None:
    rows = [{"a": 1, "b": 1}, {"a": 1, "b": 2}, {"a": 2, "b": 2}]
    assert fmt.row(rows, a=1, b=2) is rows[1]
    with pytest.raises(KeyError, match="2 rows match"):
        fmt.row(rows, a=1)
    with pytest.raises(KeyError, match="0 rows match"):
        fmt.row(rows, a=3)


def test_per_seed_values_in_seed_order() -> None:
    assert fmt.per_seed({"per_seed": [{"x": 3.0}, {"x": 1.0}]}, "x") == [3.0, 1.0]


def test_within_std_compares_the_gap_with_the_larger_std() -> None:
    wide, narrow = {"x_mean": 0.0, "x_std": 1.0}, {"x_mean": 0.5, "x_std": 0.1}
    assert fmt.within_std(wide, narrow, "x") and fmt.within_std(narrow, wide, "x")
    assert not fmt.within_std(wide, {"x_mean": 1.5, "x_std": 0.1}, "x")
    assert fmt.within_std(wide, {"x_mean": -1.0, "x_std": 0.0}, "x")  # a gap equal to the std is within it


# ----------------------------------------------------------------------------- facts several sections share
def test_facts_read_from_other_studies_results() -> None:
    res = {
        "reinforce-ablation": {"rows": [{"variant": "fixed 1e-2", "log10_tol_last_mean": -2.0},
                                        {"variant": "no baseline", "log10_tol_last_mean": -4.0}]},
        "eval-batch": {"reference": [{"tol": 1e-5}],
                       "rows": [{"split": "train", "batch_size": 100, "num_samples": 1400},
                                {"split": "train", "batch_size": 500, "num_samples": 1497},
                                {"split": "test", "batch_size": 500, "num_samples": 300}]},
        "tol-hist": {"rows": [{"block": 0}, {"block": 2}, {"block": 1}]},
        "samples": {"config": {"tol": 1e-4}, "grids": {"infocnf": list(range(30))}, "per_class": 3},
    }
    assert fmt.upper_bound(res) == -2.0
    assert fmt.eval_tol(res) == "1e-5"  # eval-batch's reference before samples' config
    assert fmt.eval_tol({"samples": res["samples"]}) == "1e-4"
    assert fmt.num_blocks(res) == 3  # blocks are numbered from 0
    assert fmt.num_train(res) == 1497  # the train split at the last row's batch size
    assert fmt.num_classes(res) == 10
    assert fmt.upper_bound({}) is None and fmt.num_blocks({}) is None and fmt.num_train({}) is None
    assert fmt.num_classes({}) is None and fmt.eval_tol({}) == "the evaluation tolerance"


def test_a_missing_result_is_one_clear_error() -> None:
    assert fmt.required(3, "beta") == 3 and fmt.required(0, "beta") == 0
    with pytest.raises(ValueError, match="needs beta.json"):
        fmt.required(None, "beta")


# ----------------------------------------------------------------------------- runs.tables
def test_a_table_cell_writes_tolerances_in_significant_digits_and_other_floats_in_fixed_point() -> None:
    from runs.tables import cell

    assert cell({"tol": 1e-5}, "tol", 2) == "1e-05" and cell({"nfe": 12.345}, "nfe", 2) == "12.35"
    assert cell({"x_mean": 1.234, "x_std": 0.05}, "x", 2) == "1.23 ± 0.05"
    assert cell({"x_mean": 1.234}, "x", 1) == "1.2"  # no std: the mean alone
    assert cell({"x_mean": None}, "x", 2) == "diverged" and cell({"x": None}, "x", 2) == "—"
    assert cell({"nfe_rel_diff": 0.1}, "nfe_rel_diff", 2) == "+10.00%" and cell({"name": "a"}, "name", 2) == "a"
