"""Markers: every test that reads the Beauty data or the reference vectors is `real_data`, so
`-m "not real_data"` leaves all of them out."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_DATA_FIXTURES = {"beauty_dir", "reference_npz"}


def test_tests_that_read_real_data_are_marked(request):
    items = request.session.items
    unmarked = [
        item.nodeid
        for item in items
        if REAL_DATA_FIXTURES & set(item.fixturenames) and not item.get_closest_marker("real_data")
    ]
    assert unmarked == []


def test_not_real_data_deselects_every_beauty_scale_test():
    files = [
        "tests/test_beam_beauty.py",
        "tests/test_beam_pretrain_examples.py",
        "tests/test_encoder.py",
    ]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "not real_data",
            *files,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    kept = {line for line in out.stdout.splitlines() if "::" in line}
    assert len(kept) > 10  # the other tests of these files stay
    assert not any("test_beam_beauty.py" in t for t in kept)
    assert not any("beauty" in t.split("::")[-1] for t in kept)
    assert not any(t.endswith("_matches_the_reference") for t in kept)
