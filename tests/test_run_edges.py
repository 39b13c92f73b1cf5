"""Edges that must explain themselves instead of crashing: damaged data, two processes on one
run directory (the second is refused at once; a directory left by a killed process resumes), and
runs started together on a machine without the bundled sample's cache."""

import glob
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from s3rec_tf import run_dir as run_dir_lib
from s3rec_tf import schema, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command(data_dir, run, *extra):
    """The CLI on the small data, with a small model; `[3:]` are its arguments."""
    flags = ["--data", str(data_dir), "--output", str(run), "--hidden_size", "16"]
    flags += ["--pretrain_batch_size", "32", "--finetune_batch_size", "32", *extra]
    return [sys.executable, "-m", "s3rec_tf.train", *flags]


@pytest.mark.slow
def test_a_truncated_shard_stops_with_the_file_and_how_to_rebuild(data_dir, tmp_path):
    damaged = tmp_path / "data"
    subprocess.run(["cp", "-r", data_dir, str(damaged)], check=True)
    pattern = schema.shard_glob(str(damaged), schema.pretrain_prefix(0))
    shard = sorted(glob.glob(pattern))[0]
    content = open(shard, "rb").read()
    with open(shard, "wb") as f:
        f.write(content[: len(content) // 2])  # cut in the middle of a record

    run = tmp_path / "run"
    out = subprocess.run(
        _command(damaged, run, "--pretrain_epochs", "1", "--finetune_epochs", "1"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    error = out.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and shard in error, error
    assert "damaged" in error and "preprocess" in error, error
    assert not os.path.exists(run / run_dir_lib.LOCK_FILE)  # released on the way out


def test_lock_refuses_a_live_process_and_takes_over_a_dead_ones(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / run_dir_lib.LOCK_FILE).write_text(f"{sleeper.pid} {os.uname().nodename}\n")
        with pytest.raises(run_dir_lib.RunDirError, match=f"in use by process {sleeper.pid}"):
            with run_dir_lib.lock(str(tmp_path)):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    # The same lock file, its process gone: taken over, then released.
    with run_dir_lib.lock(str(tmp_path)):
        held = (tmp_path / run_dir_lib.LOCK_FILE).read_text().split()
        assert int(held[0]) == os.getpid()
    assert not (tmp_path / run_dir_lib.LOCK_FILE).exists()


def _epochs_checkpointed(run):
    state = run / "pretrain" / "checkpoints" / "checkpoint"
    found = (
        re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', state.read_text(), re.M)
        if state.exists()
        else None
    )
    return int(found.group(1)) if found else 0


def _wait_for(condition, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_second_process_is_refused_and_a_killed_run_still_resumes(data_dir, tmp_path):
    run = tmp_path / "run"
    args = ["--pretrain_epochs", "30", "--finetune_epochs", "1", "--verbose", "0"]
    first = subprocess.Popen(
        _command(data_dir, run, *args),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lock_file = run / run_dir_lib.LOCK_FILE
    try:

        def first_holds_the_lock():
            return lock_file.exists() and lock_file.read_text().split()[:1] == [str(first.pid)]

        _wait_for(first_holds_the_lock, 300, "the first process to hold the lock")
        start = time.time()
        second = subprocess.run(
            _command(data_dir, run, *args), cwd=REPO, capture_output=True, text=True, timeout=300
        )
        assert second.returncode == 1, second.stderr[-3000:]
        assert f"in use by process {first.pid}" in second.stderr, second.stderr[-3000:]
        assert "Traceback" not in second.stderr
        # Refused before any work: the time is the interpreter's and TensorFlow's start-up.
        assert time.time() - start < 120
        assert first.poll() is None, "the first process must be untouched"
        _wait_for(lambda: _epochs_checkpointed(run) >= 1, 300, "a finished epoch")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert lock_file.exists()  # left behind by the killed process
    done = _epochs_checkpointed(run)
    status = run_dir_lib.run_status(str(run))
    assert status["state"] == "pretraining" and status["pretrain"]["epochs"] == 30
    assert status["pretrain"]["epochs_done"] == done and status["pretrain"]["seconds"] > 0
    assert status["finetune"]["epochs_done"] == 0
    results = train.main(
        [*_command(data_dir, run)[3:], "--pretrain_epochs", str(done + 1), "--verbose", "0"]
        + ["--finetune_epochs", "1"]
    )
    assert results["pretrain"]["resumed_at_epoch"] >= done >= 1
    assert not lock_file.exists()


def test_runs_started_together_preprocess_the_bundled_sample_once(tmp_path, monkeypatch):
    """A sweep's first runs, or parallel tests, on a cold cache: one builds it, the others wait
    and read the finished directory (the job removes earlier outputs, so two builds would clash)."""
    from beam_pipelines import preprocess

    monkeypatch.setenv("S3REC_CACHE", str(tmp_path / "cache"))
    builds = []

    def slow_job(argv):
        out = argv[argv.index("--output") + 1]
        builds.append(out)
        time.sleep(1.0)  # long enough for every caller to arrive while the build runs
        os.makedirs(out)
        with open(os.path.join(out, schema.METADATA_FILE), "w") as f:
            f.write("{}")

    monkeypatch.setattr(preprocess, "run", slow_job)
    with ThreadPoolExecutor(3) as pool:
        found = list(pool.map(lambda _: train.sample_data_dir(), range(3)))
    assert len(builds) == 1 and found == builds * 3
    assert train.sample_data_dir() == builds[0] and len(builds) == 1
