"""The suite's own settings (pytest.ini) end a run that loses a worker or hangs, instead of leaving
it waiting until CI's time limit: a worker that dies ends the run with the test it died in named,
and a test that hangs is stopped by the per-test timeout. Each case runs a small pytest session in
a subprocess with the repository's pytest.ini on toy test files."""

import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Grouped tests (as the suite's expensive fixtures are) beside ungrouped ones, so that the
# loadgroup scheduler has work left on the surviving worker when the other one dies.
GROUPED = """
import os, time, pytest
pytestmark = pytest.mark.xdist_group("shared_fixture")
def test_before():
    time.sleep(1)
def test_dies():
    time.sleep(2)
    os.abort()
def test_after():
    pass
"""
UNGROUPED = "".join(f"def test_quick_{i}():\n    pass\n" for i in range(6))
HANGS = """
import time
def test_hangs():
    time.sleep(3600)
"""


def _run(tmp_path, files, *options):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    start = time.monotonic()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            os.path.join(REPO, "pytest.ini"),
            "--rootdir",
            str(tmp_path),
            "-p",
            "no:cacheprovider",
            "-n",
            "2",
            *options,
            *sorted(files),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        # Without the settings under test, both cases wait here until this limit.
        timeout=240,
    )
    return out, time.monotonic() - start


def test_a_worker_that_dies_ends_the_run_naming_its_test(tmp_path):
    out, seconds = _run(tmp_path, {"test_grouped.py": GROUPED, "test_ungrouped.py": UNGROUPED})
    assert out.returncode == 1, out.stdout[-3000:]
    assert "crashed while running 'test_grouped.py::test_dies" in out.stdout, out.stdout[-3000:]
    assert "worker restarting disabled" in out.stdout
    assert seconds < 120


def test_a_hanging_test_is_stopped_by_the_timeout(tmp_path):
    out, seconds = _run(tmp_path, {"test_hangs.py": HANGS}, "-o", "faulthandler_timeout=5")
    assert out.returncode != 0, out.stdout[-3000:]
    assert "crashed while running 'test_hangs.py::test_hangs'" in out.stdout, out.stdout[-3000:]
    assert "Timeout (0:00:05)!" in out.stderr, out.stderr[-3000:]
    assert "in test_hangs" in out.stderr  # the hanging frame is in the dump
    assert seconds < 120


ONE_GROUP = """
import os
import pytest

@pytest.mark.xdist_group("one")
@pytest.mark.parametrize("i", range(6))
def test_grouped(i):
    with open(f"worker-{i}", "w") as f:
        f.write(os.environ["PYTEST_XDIST_WORKER"])
"""


def test_tests_of_one_xdist_group_run_on_one_worker(tmp_path):
    """The suite's shared module fixtures are built once only if loadgroup keeps a group on one
    worker. pytest 9.2 broke that silently (pytest-xdist#1386: the group travels in the node id,
    which xdist 3.8 can no longer change), and every fixture was built once per worker."""
    out, _ = _run(tmp_path, {"test_one_group.py": ONE_GROUP, "test_ungrouped.py": UNGROUPED})
    assert out.returncode == 0, out.stdout[-3000:]
    workers = {(tmp_path / f"worker-{i}").read_text() for i in range(6)}
    assert len(workers) == 1, workers
