"""Shared fixtures: where the real data lives, a switch for tests that need it, and the toy data
the training tests share."""

import os

import pytest

import keras_models  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tests that start Python subprocesses (distributed workers, a killed training run, a fresh
# serving process) must import this checkout's code, whether or not it is installed.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
SHARED = os.environ.get("S3REC_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
BEAUTY_DIR = os.path.join(SHARED, "data", "beauty")
REFERENCE_NPZ = os.path.join(SHARED, "reference", "s3rec_reference_beauty.npz")


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pytest.ini): one worker per core, at most 4. Each worker loads TensorFlow and
    some tests start training subprocesses, so more workers would trade memory for little time."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


def pytest_collection_modifyitems(items):
    """Slow tests first (a stable sort): the two workers then end the suite on short tests
    instead of one of them idling while the other runs a long one."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def beauty_dir():
    if not os.path.exists(os.path.join(BEAUTY_DIR, "Beauty.txt")):
        pytest.skip(f"Beauty benchmark data not found at {BEAUTY_DIR} (set S3REC_SHARED)")
    return BEAUTY_DIR


@pytest.fixture(scope="session")
def reference_npz():
    if not os.path.exists(REFERENCE_NPZ):
        pytest.skip(f"Reference vectors not found at {REFERENCE_NPZ} (set S3REC_SHARED)")
    import numpy as np

    return dict(np.load(REFERENCE_NPZ))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The toy dataset (60 users, 40 items, sequences of at most 10), written once per module."""
    from dataset_fixture import small_dataset

    out = str(tmp_path_factory.mktemp("data"))
    small_dataset(out)
    return out
