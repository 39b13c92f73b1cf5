"""train_step under tf.distribute: same update on 2 replicas as on 1; two workers stay in sync.

Each case runs in fresh subprocesses (tests/distributed_worker.py), because logical devices and
TF_CONFIG must be set before TensorFlow initialises, and this pytest process has done so already.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(TESTS, "distributed_worker.py")


def _run(args, env=None, timeout=300):
    return subprocess.Popen(
        [sys.executable, WORKER, *args],
        cwd=os.path.dirname(TESTS),
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(process, timeout):
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"worker did not finish within {timeout} s:\n{output[-3000:]}")
    assert process.returncode == 0, output[-3000:]


def _weights(path, prefix):
    data = np.load(path)
    count = len([key for key in data.files if key.startswith(prefix)])
    return [data[f"{prefix}{i}"] for i in range(count)]


@pytest.mark.slow
def test_two_replicas_update_like_one_replica_on_the_same_global_batch(tmp_path):
    out = str(tmp_path / "mirrored.npz")
    _wait(_run(["mirrored", out]), timeout=300)
    initial, single, mirrored = (_weights(out, p) for p in ("initial_", "single_", "mirrored_"))
    assert len(single) == len(mirrored) == len(initial) > 40
    moved = max(np.abs(s - i).max() for s, i in zip(single, initial))
    assert moved > 1e-2  # the steps did something the comparison below can see
    for s, m in zip(single, mirrored):
        np.testing.assert_allclose(m, s, rtol=0, atol=1e-5)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_end_with_identical_weights(tmp_path):
    workers = [f"localhost:{port}" for port in _free_ports(2)]
    processes, outputs = [], []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        outputs.append(str(tmp_path / f"worker{index}.npz"))
        processes.append(
            _run(["multi_worker", outputs[-1]], env={"TF_CONFIG": json.dumps(tf_config)})
        )
    try:
        for process in processes:
            _wait(process, timeout=300)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    first, second = (_weights(path, "final_") for path in outputs)
    initial = _weights(outputs[0], "initial_")
    assert max(np.abs(f - i).max() for f, i in zip(first, initial)) > 1e-3
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    for path in outputs:
        assert int(np.load(path)["num_replicas"]) == 2
        assert np.isfinite(np.load(path)["loss"]).all()
