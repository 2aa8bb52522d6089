"""docs/reliability.md holds one row per fault test, in the words of its marker (the figures
come from the tests' own results: docs/reliability.py)."""

from __future__ import annotations

import re

import pytest

from docs import reliability

ROW = re.compile(r"^\| (?P<cells>.*) \|$")


def rows() -> dict[str, list[str]]:
    """The table of docs/reliability.md: test node id -> its cells."""
    found: dict[str, list[str]] = {}
    for line in reliability.OUTPUT.read_text().splitlines():
        match = ROW.match(line)
        if match is None:
            continue
        cells = [c.replace("\\|", "|") for c in re.split(r" (?<!\\)\| ", match["cells"])]
        if cells[-1].startswith("`"):
            found[cells[-1].strip("`")] = cells
    return found


@pytest.mark.timeout(120)
def test_every_fault_test_has_its_row_in_its_own_words() -> None:
    marked = reliability.manifest()
    assert len(marked) >= 20  # the suite's fault tests, not an empty collection
    table = rows()
    assert sorted(table) == sorted(marked), "run `make reliability` to regenerate the table"
    for node, words in marked.items():
        assert table[node][:3] == [words[name] for name in reliability.FIELDS], node


def test_a_row_of_a_passed_test_reads_what_it_found() -> None:
    marked = {"tests/t.py::test_x": {"fault": "f | g", "injected": "i", "checked": "c"}}
    passed = {"outcome": "passed", "runs": 2, "tried": 3, "events": 10, "seconds": 1.5}
    text = reliability.render(marked, {"tests/t.py::test_x": passed})
    assert (
        "| f \\| g | i | c | 2 | 3 | 10 | 0 | 0 | 0 | passed (1.5 s) | `tests/t.py::test_x` |"
        in text
    )
    failed = reliability.render(marked, {"tests/t.py::test_x": {**passed, "outcome": "failed"}})
    assert "| ? | ? | ? | failed (1.5 s) |" in failed
    assert "| not run |" in reliability.render(marked, {})
