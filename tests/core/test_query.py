"""The query language of the experiments page: the Python implementation (the API) and its JavaScript twin
(the page) keep and refuse the same rows for the same queries (tests/core/query_cases.json)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mnist_lab.core.query import QueryError, compare, filter_rows, numeric_columns, parse_query, sort_key
from tests.helpers import REPO_ROOT

CASES = json.loads((Path(__file__).parent / "query_cases.json").read_text())
QUERY_JS = REPO_ROOT / "src" / "mnist_lab" / "board" / "static" / "query.js"


def _outcome(query: str) -> dict:
    try:
        keep = parse_query(query, CASES["columns"], numeric_columns(CASES["rows"]))
    except QueryError as exc:
        return {"error": str(exc)}
    return {"keeps": [row["commit"] for row in CASES["rows"] if keep(row)]}


@pytest.mark.parametrize("case", CASES["cases"], ids=lambda case: case["query"] or "(empty)")
def test_python_keeps_and_refuses_as_the_cases_say(case: dict) -> None:
    outcome = _outcome(case["query"])
    if "error" in case:
        assert case["error"] in outcome.get("error", ""), outcome
    else:
        assert outcome == {"keeps": case["keeps"]}


def test_javascript_gives_the_same_answers_and_messages_as_python() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the JavaScript twin is checked in the browser test instead")
    script = f"""
const q = require({json.dumps(str(QUERY_JS))});
const data = {json.dumps(CASES)};
const out = data.cases.map((c) => {{
  try {{
    const keep = q.parseQuery(c.query, data.columns, q.numericColumns(data.rows));
    return {{keeps: data.rows.filter(keep).map((r) => r.commit)}};
  }} catch (e) {{
    if (!(e instanceof q.QueryError)) throw e;
    return {{error: e.message}};
  }}
}});
console.log(JSON.stringify(out));
"""
    done = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    javascript = json.loads(done.stdout)
    python = [_outcome(case["query"]) for case in CASES["cases"]]
    assert javascript == python


@pytest.mark.parametrize("case", CASES["sorts"], ids=lambda case: repr(case["values"]))
def test_a_column_sorts_numbers_first_then_text(case: dict) -> None:
    """The API's sort= and the page's header sort alike: a column mixing numbers and words had no total
    order on the page (2 < 10 < "1a" < 2 by localeCompare)."""
    assert sorted(case["values"], key=sort_key) == case["sorted"]


def test_javascript_sorts_as_python() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    script = f"""
const q = require({json.dumps(str(QUERY_JS))});
const data = {json.dumps(CASES["sorts"])};
console.log(JSON.stringify(data.map((c) => c.values.slice().sort(q.sortOrder))));
"""
    done = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [case["sorted"] for case in CASES["sorts"]]


def test_missing_values_are_unknown_not_different() -> None:
    assert not compare(None, "!=", 1) and not compare(None, "<", 1) and compare(None, "=", None)
    assert not compare("cnn", ">", 5)  # a word is neither more nor less than a number


def test_filter_rows_resolves_fields_across_all_rows() -> None:
    rows = [{"commit": "a", "metrics.models.cnn.accuracy": 0.99}, {"commit": "b", "model": "mlp"}]
    assert filter_rows(rows, "accuracy > 0.9") == rows[:1]
    assert filter_rows(rows, "model = mlp or accuracy > 0.995") == rows[1:]
    with pytest.raises(QueryError, match="no column 'loss'"):
        filter_rows(rows, "loss < 1")


def test_an_integer_past_floats_range_is_infinity_not_a_crash() -> None:
    """A param of 10**400 (YAML reads it as a Python int) made every numeric comparison an OverflowError:
    a 500 from the API. JavaScript reads it as Infinity."""
    rows = [{"commit": "a", "n": 10**400}, {"commit": "b", "n": -(10**400)}, {"commit": "c", "n": 3}]
    assert [row["commit"] for row in filter_rows(rows, "n > 1")] == ["a", "c"]
    assert [row["commit"] for row in filter_rows(rows, "n < -1e308")] == ["b"]
