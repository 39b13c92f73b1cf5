"""The job's pure pieces on their own (no pipeline): output text, the SP look-up, the writers'
temporary files and ordered joins, and which modules load TensorFlow."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from beam_pipelines import algorithms
from beam_pipelines import pretrain_examples as pe


@pytest.mark.parametrize("table", [{}, {1: []}, {3: [2, 7], 1: [], 12: [1]}])
def test_item2attributes_entries_join_to_the_json_dump(table):
    entries = [algorithms.item2attributes_entry(k, table[k]) for k in sorted(table)]
    assert "{" + ", ".join(entries) + "}" == algorithms.item2attributes_text(table)
    assert json.loads(algorithms.item2attributes_text(table)) == {
        str(k): v for k, v in table.items()
    }


def test_sequence_lines_and_dead_letter_order():
    assert algorithms.sequences_text([(1, (5, 6)), (2, (7,))]) == "1 5 6\n2 7\n"
    letters = [
        {"file": "b", "line": 1, "reason": "x", "record": "r"},
        {"file": "a", "line": None, "reason": "x", "record": "r"},
        {"file": "a", "line": 3, "reason": "x", "record": "r"},
    ]
    ordered = sorted(letters, key=algorithms.dead_letter_key)
    assert [(d["file"], d["line"]) for d in ordered] == [("a", None), ("a", 3), ("b", 1)]
    assert algorithms.count_kinds({"b": 2}, ["c", "a"]) == {"a": 0, "b": 2, "c": 0}


@pytest.mark.parametrize("users,expected", [(0, 4), (399_999, 4), (400_001, 5), (10**6, 10)])
def test_auto_num_shards_grows_with_the_users(users, expected):
    assert algorithms.auto_num_shards(users, 100_000) == expected


def _histories(seed, num_users=80, num_items=40):
    rng = np.random.default_rng(seed)
    return [
        (u, rng.integers(1, num_items + 1, size=rng.integers(1, 30)).tolist())
        for u in range(1, num_users + 1)
    ], num_items


@pytest.mark.parametrize("seed", range(3))
def test_looked_up_positions_give_the_examples_of_the_whole_long_sequence(seed):
    """`negative_segment_positions` names exactly what `make_pretrain_examples` reads: the
    examples from a SparseSequence of those positions equal those from the whole sequence, and
    leaving out any one position fails loudly."""
    histories, num_items = _histories(seed)
    long_sequence = algorithms.long_sequence(histories)
    for duplicate in range(2):
        args = dict(seed=seed, duplicate=duplicate, max_seq_length=10)
        whole = pe.make_pretrain_examples(
            histories, mask_prob=0.2, num_items=num_items, long_sequence=long_sequence, **args
        )
        positions = pe.negative_segment_positions(
            histories, total_length=len(long_sequence), **args
        )
        assert len(positions) > 100
        sparse = pe.SparseSequence(len(long_sequence), positions, long_sequence[positions])
        looked_up = pe.make_pretrain_examples(
            histories, mask_prob=0.2, num_items=num_items, long_sequence=sparse, **args
        )
        for name, expected in whole._asdict().items():
            np.testing.assert_array_equal(getattr(looked_up, name), expected, err_msg=name)
        missing = positions[positions != positions[len(positions) // 2]]
        with pytest.raises(KeyError):
            pe.make_pretrain_examples(
                histories,
                mask_prob=0.2,
                num_items=num_items,
                long_sequence=pe.SparseSequence(
                    len(long_sequence), missing, long_sequence[missing]
                ),
                **args,
            )


def test_sparse_sequence():
    s = pe.SparseSequence(100, [7, 3, 7], [70, 30, 70])
    assert len(s) == 100
    np.testing.assert_array_equal(s[np.array([3, 7, 3])], [30, 70, 30])
    assert s[np.zeros(0, np.int64)].shape == (0,)
    with pytest.raises(KeyError):
        s[np.array([4])]
    with pytest.raises(KeyError):
        pe.SparseSequence(10, [], [])[np.array([0])]


def test_join_parts_in_order_and_atomic_files(tmp_path):
    from beam_pipelines import writers

    out = str(tmp_path)
    parts = [
        writers.write_part(out, "x/f.json", key, texts, ", ")
        for key, texts in ((2, ['"3": []']), (0, ['"1": [1]', '"2": [2]']))
    ]
    writers.join_parts(out, "x/f.json", parts, prefix="{", separator=", ", suffix="}")
    assert json.loads((tmp_path / "x" / "f.json").read_text()) == {"1": [1], "2": [2], "3": []}
    assert not any(os.path.exists(path) for _, path in parts)  # parts are deleted
    writers.join_parts(out, "empty.txt", [])
    assert (tmp_path / "empty.txt").read_bytes() == b""
    with pytest.raises(RuntimeError):
        with writers.AtomicFile(str(tmp_path / "broken.txt")) as f:
            f.write(b"half")
            raise RuntimeError("the bundle fails")
    assert sorted(os.listdir(tmp_path)) == [".parts", "empty.txt", "x"]  # nothing half-written
    writers.write_file(str(tmp_path / "x" / "f.json"), "again")  # a retry replaces the file
    assert (tmp_path / "x" / "f.json").read_text() == "again"
    assert os.listdir(tmp_path / "x") == ["f.json"]


def test_parsing_and_algorithms_do_not_load_tensorflow():
    code = (
        "import sys\n"
        "import beam_pipelines, beam_pipelines.preprocess, beam_pipelines.parse\n"
        "import beam_pipelines.algorithms, beam_pipelines.pretrain_examples\n"
        "import beam_pipelines.config, beam_pipelines.raw_format, beam_pipelines.sample_data\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras',"
        " 'tf_keras', 'keras_models', 's3rec_tf')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
