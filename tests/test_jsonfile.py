"""s3rec_tf.jsonfile: the JSON files of run, sweep and export directories."""

import json

import pytest

from s3rec_tf import jsonfile


def test_written_whole_with_sorted_keys_and_read_back(tmp_path):
    path = str(tmp_path / "a.json")
    assert jsonfile.read(path) is None  # no file yet
    jsonfile.write(path, {"b": 1, "a": [1, 2]})
    assert open(path).read() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}'
    jsonfile.write(path, {"b": 2}, indent=1, end="\n")  # sweep.json's format
    assert open(path).read() == '{\n "b": 2\n}\n'
    assert jsonfile.read(path) == {"b": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temporary file left


def test_a_value_that_is_not_json_is_not_written_over_the_old_file(tmp_path):
    path = str(tmp_path / "a.json")
    jsonfile.write(path, {"a": 1})
    with pytest.raises(TypeError):
        jsonfile.write(path, {"a": object()})
    assert jsonfile.read(path) == {"a": 1}
    (tmp_path / "b.json").write_text("{")
    with pytest.raises(json.JSONDecodeError):
        jsonfile.read(str(tmp_path / "b.json"))
