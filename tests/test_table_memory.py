"""The item table's memory: drawn with one table's worth of memory, and read whole without a copy
after training steps (fine-tuning with every loss, pretraining) and evaluation.

TensorFlow's CPU allocator (oneDNN's) counts the bytes of its large allocations, from 256 KB up
(`tf.config.experimental.get_memory_info`, chunk sizes rounded up), so the tables here are larger
than that and a copy of one shows as at least its size.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_models import S3RecEncoder, S3RecPretrainHeads
from s3rec_tf import data as data_lib
from s3rec_tf import finetune as finetune_lib
from s3rec_tf import runtime
from s3rec_tf.pretrain import S3RecPretrainer

from dataset_fixture import small_dataset
from synthetic_pretrain import item_attributes, make_examples, pad_batch


def _allocated_by(fn) -> int:
    """Bytes allocated at the peak of `fn()` above what was allocated before it."""
    try:
        before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    except ValueError as e:  # an allocator that keeps no statistics (TF_ENABLE_ONEDNN_OPTS=0)
        pytest.skip(f"TensorFlow's CPU allocator keeps no statistics here: {e}")
    tf.config.experimental.reset_memory_stats("CPU:0")
    fn()
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] - before


def _table_bytes(encoder) -> int:
    return encoder.item_embeddings.shape.num_elements() * 4


def _copies_on_read(encoder) -> bool:
    """Whether reading the table whole allocates (copy-on-read mode) or aliases it."""
    return _allocated_by(lambda: tf.convert_to_tensor(encoder.item_embeddings)) > 0


def test_the_table_is_drawn_with_one_tables_memory_from_the_seed():
    def build(seed):
        tf.keras.utils.set_random_seed(seed)
        encoder = S3RecEncoder(
            num_items=100_000, max_seq_length=4, hidden_size=16, num_layers=1, num_heads=1
        )
        encoder.build(None)
        return encoder

    holder = []
    allocated = _allocated_by(lambda: holder.append(build(1)))
    encoder = holder[0]
    table_bytes = _table_bytes(encoder)
    # Keras's RandomNormal, drawn eagerly, peaks at three tables (draw, scaled, shifted).
    assert table_bytes <= allocated < 2 * table_bytes, (allocated, table_bytes)
    table = encoder.item_embeddings.numpy()
    n = table.size
    assert abs(table.mean()) < 5 * 0.02 / np.sqrt(n)  # N(0, 0.02²): mean within 5 standard errors
    assert abs(table.std() / 0.02 - 1) < 5 / np.sqrt(2 * n)
    np.testing.assert_array_equal(build(1).item_embeddings.numpy(), table)  # the seed fixes it
    assert not np.array_equal(build(2).item_embeddings.numpy(), table)
    tf.keras.utils.set_random_seed(1)
    first, second = (
        S3RecEncoder(num_items=50, max_seq_length=4, hidden_size=8, num_layers=1, num_heads=1)
        for _ in range(2)
    )
    first.build(None)
    second.build(None)
    assert not np.array_equal(first.item_embeddings.numpy(), second.item_embeddings.numpy())


@pytest.mark.parametrize(
    "loss, loss_config",
    [
        ("bce", {}),
        ("ce", {}),
        ("sampled_softmax", {"num_samples": 16, "seed": 3}),
    ],
)
def test_fine_tuning_and_evaluation_leave_the_table_readable_without_a_copy(
    tmp_path, loss, loss_config
):
    """A gather from the variable (ResourceGather) would switch it to copy-on-read mode for good:
    every later whole read and every in-place optimizer update would copy the table."""
    num_items = 20_000  # a 640 KB table
    small_dataset(str(tmp_path), num_users=16, num_items=num_items, max_seq_length=6)
    tf.keras.utils.set_random_seed(0)
    encoder = S3RecEncoder(num_items, max_seq_length=6, hidden_size=8, num_layers=1, num_heads=1)
    model = finetune_lib.S3RecRecommender(
        encoder, loss=loss, loss_config=loss_config, eval_item_chunk=1_024
    )
    model(tf.zeros([1, 1], tf.int32))
    runtime.compile_for_training(model, 1e-3)
    assert not _copies_on_read(encoder)
    before = encoder.item_embeddings.numpy()
    model.fit(data_lib.finetune_train_dataset(str(tmp_path), num_items, 8, 6, 2, seed=0), verbose=0)
    assert not np.array_equal(encoder.item_embeddings.numpy(), before)  # the steps trained it
    assert not _copies_on_read(encoder)
    model.evaluate(data_lib.eval_dataset(str(tmp_path), "test", 8, 6), verbose=0)
    assert not _copies_on_read(encoder)
    # A gather from the variable itself does switch the mode: the check can fail.
    tf.gather(encoder.item_embeddings, [1, 2])
    assert _copies_on_read(encoder)


def test_pretraining_leaves_the_table_readable_without_a_copy():
    num_items, num_attributes = 20_000, 7
    tf.keras.utils.set_random_seed(0)
    encoder = S3RecEncoder(num_items, max_seq_length=8, hidden_size=8, num_layers=1, num_heads=1)
    heads = S3RecPretrainHeads(num_attributes, hidden_size=8, aap_rank=2)
    model = S3RecPretrainer(encoder, heads, item_attributes(num_items, num_attributes))
    runtime.compile_for_training(model, 1e-3)
    batch = pad_batch(make_examples(6, num_items, 8, seed=1))
    model.fit(tf.data.Dataset.from_tensors(batch), verbose=0)
    assert not _copies_on_read(encoder)
