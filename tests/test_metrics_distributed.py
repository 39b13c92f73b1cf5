"""Ranking metrics under tf.distribute.MirroredStrategy on 2 logical CPUs equal the oracle.

Logical devices can only be configured before TensorFlow initialises its runtime, which other test
modules of the same pytest process may already have done; so the distributed part runs this file as
a script in a fresh process, and the test compares what it prints with the NumPy oracle.
"""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf  # noqa: E402  (after s3rec_tf selected Keras 2)

from s3rec_tf import metrics

import ranking_oracle as oracle

SEED = 11
BATCH = 45  # batches of 8: the last one (5 users) splits unevenly over the 2 replicas
GLOBAL_BATCH_SIZE = 8


def _dataset(case):
    return tf.data.Dataset.from_tensor_slices(
        {
            "user": list(range(BATCH)),
            "target": case["targets"],
            "history": case["history"],
            "negative_scores": case["negative_scores"],
        }
    ).batch(GLOBAL_BATCH_SIZE)


def _run_on_two_replicas() -> dict:
    """Metric results from a custom distributed loop and from model.evaluate, on 2 replicas."""
    from test_metrics import ScoreTable

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    case = oracle.random_case(SEED, batch=BATCH)
    scores = tf.constant(case["scores"])

    with strategy.scope():
        loop_metrics = metrics.ranking_metrics("sampled") + metrics.ranking_metrics("full")

    def replica_step(batch):
        user_scores = tf.gather(scores, batch["user"])
        target_scores = tf.gather(user_scores, batch["target"], batch_dims=1)
        ranks = {
            "sampled": metrics.sampled_ranks(target_scores, batch["negative_scores"]),
            "full": metrics.full_ranking_ranks(
                user_scores, batch["target"], batch["history"], exclude_history=True
            ),
        }
        for m in loop_metrics:
            m.update_state(ranks[m.protocol])
        return tf.shape(batch["user"])[0]

    @tf.function
    def distributed_step(batch):
        return strategy.experimental_local_results(strategy.run(replica_step, args=(batch,)))

    replica_sizes = []
    for batch in strategy.experimental_distribute_dataset(_dataset(case)):
        replica_sizes.append([int(n) for n in distributed_step(batch)])

    with strategy.scope():
        model = ScoreTable(case["scores"], exclude_history=True)
        model.compile()
    evaluated = model.evaluate(_dataset(case), return_dict=True, verbose=0)
    return {
        "num_replicas": strategy.num_replicas_in_sync,
        "replica_sizes": replica_sizes,
        "loop": {m.name: float(m.result()) for m in loop_metrics},
        "evaluate": {k: float(v) for k, v in evaluated.items()},
    }


def test_mirrored_strategy_gives_the_single_device_results():
    here = os.path.dirname(os.path.abspath(__file__))
    completed = subprocess.run(
        [sys.executable, os.path.abspath(__file__)],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])

    case = oracle.random_case(SEED, batch=BATCH)
    expected = {
        **oracle.metric_values(
            oracle.sampled_ranks(case["target_scores"], case["negative_scores"]), "sampled"
        ),
        **oracle.metric_values(
            oracle.full_ranks(case["scores"], case["targets"], case["history"], True), "full"
        ),
    }
    assert result["num_replicas"] == 2
    assert [3, 2] in result["replica_sizes"], result["replica_sizes"]  # the uneven last batch
    assert sum(map(sum, result["replica_sizes"])) == BATCH
    for source in ("loop", "evaluate"):
        assert result[source].keys() == expected.keys(), source
        for name, value in expected.items():
            assert result[source][name] == pytest.approx(value, abs=1e-6), (source, name)


if __name__ == "__main__":
    print(json.dumps(_run_on_two_replicas()))
