"""runtime.InPlaceAdam: Keras's Adam below its size threshold, the same update from one in-place
kernel above it (sparse and dense gradients)."""

import numpy as np
import pytest
import tensorflow as tf

from s3rec_tf import runtime


def _steps(optimizer, sparse: bool, steps: int = 6) -> np.ndarray:
    rng = np.random.default_rng(0)
    table = tf.Variable(rng.normal(size=(40, 8)).astype(np.float32))
    optimizer.build([table])
    for step in range(steps):
        ids = tf.constant(rng.integers(0, 40, size=(12,)), tf.int32)  # repeats included
        with tf.GradientTape() as tape:
            rows = tf.gather(table, ids) if sparse else table * 1.0
            loss = tf.reduce_sum(tf.sin(rows) * (step + 1.0))
        gradient = tape.gradient(loss, table)
        assert isinstance(gradient, tf.IndexedSlices) == sparse
        optimizer.apply_gradients([(gradient, table)])
    return table.numpy()


@pytest.mark.parametrize("sparse", [True, False])
def test_the_in_place_update_is_keras_adams(sparse):
    keras = _steps(tf.keras.optimizers.Adam(0.01), sparse)
    fused = _steps(runtime.InPlaceAdam(0.01, min_elements=0), sparse)
    start = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    assert np.abs(keras - start).max() > 0.01  # the steps moved the table
    np.testing.assert_allclose(fused, keras, rtol=0, atol=1.5e-6)  # float rounding of 6 steps


def test_small_variables_take_keras_adams_own_path_bit_for_bit():
    keras = _steps(tf.keras.optimizers.Adam(0.01), sparse=True)
    small = _steps(runtime.InPlaceAdam(0.01, min_elements=41 * 8), sparse=True)
    np.testing.assert_array_equal(small, keras)


def test_training_uses_it_and_its_config_round_trips():
    optimizer = runtime.adam(1e-3)
    assert isinstance(optimizer, runtime.InPlaceAdam)
    assert optimizer.min_elements == runtime.IN_PLACE_ADAM_MIN_ELEMENTS
    again = runtime.InPlaceAdam.from_config(optimizer.get_config())
    assert again.min_elements == optimizer.min_elements
    with pytest.raises(ValueError, match="amsgrad"):
        runtime.InPlaceAdam(amsgrad=True)
