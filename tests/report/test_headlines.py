"""Headline numbers: compared number by number, each within its own tolerance, every difference listed."""
import json
import math
from pathlib import Path

import pytest

from l3d.report import headlines
from l3d.report.headlines import (
    check_headlines,
    check_reference,
    comparison_rows,
    flatten,
    headline_numbers,
    tolerance_for,
)
from l3d.report.tolerances import TOLERANCES, Tolerance, exact, recorded

ROOT = Path(__file__).resolve().parents[2]
TOL = {
    "median/error": Tolerance(abs=0.01, reason="noise"),
    "summary/*/ml2r": Tolerance(rel=0.1, reason="a ratio"),
    "count": exact("a count"),
    "live": recorded("flips"),
}
METRICS = {"median": {"error": 0.30, "other": 1.0},
           "summary": {"5-2": {"ml2r": 2.0, "x": 3}, "40-10 refit": {"ml2r": 0.5}},
           "count": 3, "live": 7, "name": "text", "settings": {"lr": 0.01}}


def test_flatten_names_every_number_by_its_key_path():
    flat = flatten({"a": {"b": 1.5, "c": [2, {"d": None}], "s": "x"}, "t": True})
    assert flat == {"a/b": 1.5, "a/c/0": 2, "a/c/1/d": None, "t": True}
    assert flatten(flat) == flat                               # a flat reference stays as it is


def test_patterns_match_one_key_per_star_and_the_first_pattern_wins():
    assert headline_numbers(METRICS, TOL) == {"median/error": 0.30, "summary/5-2/ml2r": 2.0,
                                              "summary/40-10 refit/ml2r": 0.5, "count": 3, "live": 7}
    assert tolerance_for("summary/a/b/ml2r", TOL) is None      # "*" never spans a "/"
    first = {"median/*": Tolerance(abs=1.0), "median/error": Tolerance(abs=0.0)}
    assert tolerance_for("median/error", first).abs == 1.0


def test_tolerance_allows_abs_or_rel_whichever_is_larger():
    t = Tolerance(abs=0.01, rel=0.1)
    assert t.allows(0.05, 0.059) and not t.allows(0.05, 0.061)   # 0.01 > 10 % of 0.05
    assert t.allows(2.0, 2.19) and not t.allows(2.0, 2.21)       # 10 % of 2 > 0.01
    assert exact("").allows(3, 3) and not exact("").allows(3, 4)
    assert t.allows(None, math.nan) and not t.allows(None, 0.1) and not t.allows(0.1, None)
    assert exact("").allows(True, True) and not Tolerance(abs=5).allows(True, False)
    assert recorded("").allows(1, 100)
    assert (str(t), str(exact("")), str(recorded("")), str(Tolerance(rel=0.15))) == (
        "±0.01 or ±10%", "exact", "not compared", "±15%")


def test_check_reference_lists_every_differing_number_with_reference_now_and_tolerance():
    reference = headline_numbers(METRICS, TOL)
    assert check_reference(METRICS, reference, TOL) == 4        # "live" recorded, not compared
    moved = json.loads(json.dumps(METRICS))
    moved["median"]["error"] = 0.32                              # beyond 0.01
    moved["summary"]["5-2"]["ml2r"] = 2.15                       # within 10 %
    moved["summary"]["40-10 refit"]["ml2r"] = 0.6                # beyond 10 %
    moved["count"] = 2
    moved["live"] = 9                                            # not compared
    del moved["summary"]["5-2"]
    with pytest.raises(AssertionError) as err:
        check_reference(moved, {**reference, "gone": 1.0}, {**TOL, "gone": exact("x"), "new": exact("y")}, "(ref.json)")
    message = str(err.value)
    assert message.startswith("5 of 6 headline numbers differ from the reference (ref.json):")
    assert "  median/error: reference 0.3, now 0.32, tolerance ±0.01 (noise)" in message
    assert "  summary/40-10 refit/ml2r: reference 0.5, now 0.6, tolerance ±10% (a ratio)" in message
    assert "  count: reference 3, now 2, tolerance exact (a count)" in message
    assert "  summary/5-2/ml2r: reference 2, now missing" in message
    assert "  gone: reference 1, now missing" in message
    assert "live" not in message
    moved["new"] = 4
    with pytest.raises(AssertionError, match=r"new: no reference \(now 4\); run `make test-references`"):
        check_reference(moved, reference, {**TOL, "new": exact("y")})


def test_comparison_rows_say_within_or_not_per_number():
    committed = {"median": {"error": 0.30}, "count": 3, "live": 7}
    now = {"median": {"error": 0.305}, "count": 2, "live": 8, "summary": {"5-2": {"ml2r": 1.0}}}
    rows = {r["number"]: r for r in comparison_rows(committed, now, TOL)}
    assert [(n, r["reference"], r["now"], r["within"]) for n, r in rows.items()] == [
        ("count", 3, 2, False), ("live", 7, 8, True), ("median/error", 0.30, 0.305, True),
        ("summary/5-2/ml2r", None, 1.0, False)]
    assert rows["summary/5-2/ml2r"]["missing"] == "reference" and rows["count"]["tolerance"] == "exact"


def test_a_metrics_file_from_before_a_key_was_renamed_is_read_under_the_new_name():
    old = {"median": {"min_purity": 0.8, "mmcs": 0.9}, "per_seed": [{"purity": [0.7, 0.9], "min_input_purity": 1.0}]}
    new = headlines.current_keys(old, "02_circuit_superposition")
    assert new == {"median": {"min_impact_share": 0.8, "mmcs": 0.9},
                   "per_seed": [{"impact_share": [0.7, 0.9], "min_input_purity": 1.0}]}
    assert headlines.current_keys({"mean_purity": 0.5, "best_purity": {"animal": 1.0}}, "05_transformer") == {
        "mean_pattern_purity": 0.5, "best_pattern_purity": {"animal": 1.0}}
    assert headlines.current_keys(old, "01_toy_model_of_superposition") == old
    rows = comparison_rows(new, {"median": {"min_impact_share": 0.81}},
                           {"median/min_impact_share": Tolerance(abs=0.02, reason="noise")})
    assert [(r["number"], r["reference"], r["now"], r["within"]) for r in rows] == [
        ("median/min_impact_share", 0.8, 0.81, True)]


def test_check_headlines_reads_the_reference_file_and_says_when_it_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(TOLERANCES, "99_test", {"test": TOL, "paper": {}})
    file = tmp_path / "99_test.json"
    file.write_text(json.dumps(headline_numbers(METRICS, TOL)))
    assert check_headlines("99_test", METRICS, file) == 4
    assert capsys.readouterr().out == "headline numbers: 4 within tolerance of 99_test.json\n"
    with pytest.raises(AssertionError, match=r"differ from the reference \(99_test.json\)"):
        check_headlines("99_test", {**METRICS, "count": 4}, file)
    with pytest.raises(FileNotFoundError, match="run `make test-references` \\(NB=99\\)"):
        check_headlines("99_test", METRICS, tmp_path / "none.json")
    with pytest.raises(ValueError, match="no headline numbers for notebook '98_x'"):
        check_headlines("98_x", METRICS, file)
    with pytest.raises(ValueError, match="scale must be one of"):
        headlines.tolerances("99_test", "huge")


def test_every_tolerance_has_a_reason_and_every_pattern_names_a_number_of_its_notebook():
    """Each paper pattern matches a number of the committed figures/<nb>/metrics.json, each test pattern one of the
    reference tests/notebooks/<nb>.json: a misspelt key path would otherwise compare nothing."""
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(TOLERANCES) == notebooks
    for name, scales in TOLERANCES.items():
        for scale, tolerances in scales.items():
            assert tolerances, (name, scale)
            source = (ROOT / "figures" / name / "metrics.json" if scale == "paper"
                      else ROOT / "tests" / "notebooks" / f"{name}.json")
            numbers = flatten(headlines.current_keys(json.loads(source.read_text()), name))
            for pattern, tolerance in tolerances.items():
                assert len(tolerance.reason) > 20, (name, scale, pattern)
                assert tolerance.abs >= 0 and tolerance.rel >= 0
                assert any(headlines._regex(pattern).match(p) for p in numbers), (name, scale, pattern, source)
