"""Subprocess side of tests/test_distributed_pretrain.py (device setup must precede TensorFlow).

python tests/distributed_worker.py mirrored OUT.npz
    Two logical CPU devices. Trains the same tiny S3RecPretrainer from the same initial weights
    on the same batches (a global batch of 9, split 5 + 4, then one of 1, split 1 + 0) once
    with the default strategy and once with MirroredStrategy over both devices; writes both
    final weights and the initial ones.

TF_CONFIG=... python tests/distributed_worker.py multi_worker OUT.npz
    One worker of a MultiWorkerMirroredStrategy cluster: a few steps, then its final weights.
"""

import sys

import numpy as np
import tensorflow as tf

import keras_models  # noqa: F401  (Keras 2 first)
from keras_models import S3RecEncoder, S3RecPretrainHeads
from s3rec_tf import schema
from s3rec_tf.pretrain import S3RecPretrainer

from synthetic_pretrain import item_attributes, make_examples, pad_batch

NUM_ITEMS, NUM_ATTRIBUTES = 20, 6


def build_model():
    # Dropout 0: both runs must compute the same function. SGD: its step is proportional to the
    # gradient, so a wrong loss scale under a strategy would show (Adam's first step would not).
    encoder = S3RecEncoder(
        num_items=NUM_ITEMS,
        max_seq_length=8,
        hidden_size=8,
        num_layers=2,
        num_heads=2,
        dropout=0.0,
        attention_dropout=0.0,
    )
    heads = S3RecPretrainHeads(NUM_ATTRIBUTES, hidden_size=8, aap_rank=2)
    model = S3RecPretrainer(encoder, heads, item_attributes(NUM_ITEMS, NUM_ATTRIBUTES))
    model.compile(optimizer=tf.keras.optimizers.SGD(0.5))
    return model


def dataset(batches):
    def generate():
        yield from batches

    spec = {key: tf.TensorSpec([None, None], tf.int64) for key in schema.PRETRAIN_SEQUENCES}
    data = tf.data.Dataset.from_generator(generate, output_signature=spec)
    options = tf.data.Options()
    # Every worker generates the same batches; DATA sharding splits each global batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)


def mirrored(out):
    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    examples = make_examples(10, NUM_ITEMS, 8, seed=1)
    batches = [pad_batch(examples[:9]), pad_batch(examples[9:])]

    tf.keras.utils.set_random_seed(0)
    single = build_model()
    initial = single.get_weights()
    single.fit(dataset(batches), epochs=1, verbose=0)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        replicated = build_model()
    replicated.set_weights(initial)
    replicated.fit(dataset(batches), epochs=1, verbose=0)

    arrays = {}
    for i, (a, b, c) in enumerate(zip(initial, single.get_weights(), replicated.get_weights())):
        arrays[f"initial_{i}"], arrays[f"single_{i}"], arrays[f"mirrored_{i}"] = a, b, c
    np.savez(out, **arrays)


def multi_worker(out):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    # Without a 2-worker cluster, each process would train alone on the same data and end equal.
    assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_model()
    initial = model.get_weights()
    examples = make_examples(48, NUM_ITEMS, 8, seed=2)
    batches = [pad_batch(examples[i : i + 16]) for i in range(0, 48, 16)]
    history = model.fit(dataset(batches), epochs=1, verbose=0)
    arrays = {f"initial_{i}": w for i, w in enumerate(initial)}
    arrays.update({f"final_{i}": w for i, w in enumerate(model.get_weights())})
    arrays["loss"] = np.array(history.history["loss"])
    arrays["num_replicas"] = np.array(strategy.num_replicas_in_sync)
    np.savez(out, **arrays)


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    {"mirrored": mirrored, "multi_worker": multi_worker}[mode](out)
