"""supo.jsonl.iter_jsonl: every object line with its number; a bad line named with its file and line."""

from __future__ import annotations

import pytest

from supo.errors import DataError
from supo.jsonl import iter_jsonl


def test_objects_with_their_line_numbers_and_blank_lines_skipped(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"b": 2}\n')
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (3, {"b": 2})]


@pytest.mark.parametrize(("text", "needle"), [('{"a": 1}\n{oops\n', "line 2: not valid JSON"),
                                              ("[1, 2]\n", "line 1: expected a JSON object, got list")])
def test_a_bad_line_is_named(tmp_path, text, needle):
    path = tmp_path / "rows.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match=f"rows.jsonl, {needle}"):
        list(iter_jsonl(path))
