"""The scale benchmark's own logic: the output comparison and the numbers its report states."""

import json

from benchmarks import preprocess_scale as ps


def _tree(root, files):
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return str(root)


def _metadata(output, **extra):
    return json.dumps({"num_users": 3, "config": {"output": output, **extra}}).encode()


def test_compare_outputs_ignores_only_the_config_of_metadata(tmp_path):
    common = {"train/part-0.tfrecord": b"abc", "vocab/items.txt": b"x\ny\n"}
    after = _tree(tmp_path / "a", {**common, "metadata.json": _metadata("/a", new_flag=1)})
    before = _tree(tmp_path / "b", {**common, "metadata.json": _metadata("/b")})
    assert ps.compare_outputs(after, before) == {"files": 3, "differing": []}

    changed = _tree(
        tmp_path / "c",
        {
            "train/part-0.tfrecord": b"abd",
            "vocab/items.txt": b"x\ny\n",
            "extra.txt": b"",
            "metadata.json": json.dumps({"num_users": 4, "config": {}}).encode(),
        },
    )
    assert ps.compare_outputs(changed, before) == {
        "files": 4,
        "differing": ["extra.txt", "metadata.json", "train/part-0.tfrecord"],
    }


def test_report_states_the_memory_ratio_and_the_comparison(tmp_path):
    report = {
        "rows": [
            {
                "interactions": 1000,
                "wall_seconds": 10.0,
                "records_per_second": 100.0,
                "peak_worker_rss_mb": 200.0,
            },
            {
                "interactions": 5000,
                "wall_seconds": 30.0,
                "records_per_second": 166.7,
                "peak_worker_rss_mb": 260.0,
            },
        ],
        "before": [
            {
                "interactions": 5000,
                "wall_seconds": 12.0,
                "records_per_second": 416.7,
                "peak_worker_rss_mb": 520.0,
            },
        ],
    }
    details = {
        "after-1000": {"commit": "a" * 40, "command": "job", "peak_controller_rss_mb": 1.0},
        "after-5000": {"commit": "a" * 40, "command": "job", "peak_controller_rss_mb": 2.0},
        "before-5000": {"commit": "b" * 40, "command": "old job"},
        "compare-5000": {"files": 7, "differing": ["sequences.txt"]},
    }
    path = tmp_path / "report.md"
    ps.write_markdown(report, details, path=str(path), notes=["one run failed"])
    text = path.read_text()
    assert "260.0 MB at 5,000 interactions vs 200.0 MB at 1,000: 1.30x for 5x the data" in text
    assert "after / before wall time 2.50x, peak worker memory 0.50x" in text
    assert "7 files, byte for byte different in ['sequences.txt']" in text
    assert "(commit aaaaaaa)" in text and "(commit bbbbbbb)" in text
    assert "- one run failed" in text
    assert "compare-5000" not in text  # comparisons are not listed as runs
