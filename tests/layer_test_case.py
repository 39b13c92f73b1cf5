"""Shared checks for our Keras layers: config round-trip, weight count, one fit step, SavedModel.

`check_layer(layer, inputs, ...)` wraps the layer in a small model (`LayerHarness`) and asserts:
  * `from_config(get_config())` gives a layer with the same config, which computes the same
    outputs once it holds the same weights;
  * the number of weights and of parameters;
  * one `fit()` step (squared error of every output against fixed noise) runs and changes every
    trainable weight (so gradients reach all of them);
  * a Keras SavedModel of the wrapper loads back (through the layer's config) and computes the
    same outputs.
"""

import numpy as np
import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="S3RecTests")
class LayerHarness(tf.keras.Model):
    """Calls `layer(inputs, *constants, **call_kwargs)`; fit() regresses the outputs on noise."""

    def __init__(self, layer, constants=(), call_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(layer, dict):
            layer = tf.keras.layers.deserialize(layer)
        self.layer = layer
        self.constants = [np.asarray(c) for c in constants]
        self.call_kwargs = dict(call_kwargs or {})

    def call(self, inputs, training=None):
        return self.layer(inputs, *self.constants, training=training, **self.call_kwargs)

    def train_step(self, data):
        with tf.GradientTape() as tape:
            outputs = tf.nest.flatten(self(data, training=True))
            # Squared distance to a fixed random target: unlike the outputs' own square, it is
            # not invariant under a final LayerNorm, so every weight gets a gradient.
            loss = tf.add_n(
                [
                    tf.reduce_mean(
                        tf.square(
                            tf.cast(o, tf.float32)
                            - tf.random.stateless_normal(tf.shape(o), seed=[1, i])
                        )
                    )
                    for i, o in enumerate(outputs)
                ]
            )
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        return {"loss": loss}

    def get_config(self):
        return {
            "layer": tf.keras.layers.serialize(self.layer),
            "constants": [c.tolist() for c in self.constants],
            "call_kwargs": self.call_kwargs,
            "name": self.name,
        }


def _assert_outputs_close(actual, expected, atol=1e-6):
    for a, e in zip(tf.nest.flatten(actual), tf.nest.flatten(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-5, atol=atol)


def check_layer(
    layer,
    inputs,
    tmp_path,
    constants=(),
    call_kwargs=None,
    expected_output_shapes=None,  # a list of shapes, or a dict for dict outputs
    expected_num_weights=None,
    expected_num_params=None,
    learning_rate=0.1,
):
    """Runs every shared check on `layer` (not yet built) with a batch `inputs`."""
    harness = LayerHarness(layer, constants, call_kwargs)
    outputs = harness(inputs, training=False)
    if expected_output_shapes is not None:
        shapes = [tuple(o.shape) for o in tf.nest.flatten(outputs)]
        if isinstance(expected_output_shapes, dict):  # tf.nest orders dicts by key
            expected = [expected_output_shapes[key] for key in sorted(expected_output_shapes)]
        else:
            expected = list(expected_output_shapes)
        assert shapes == [tuple(s) for s in expected], shapes
    if expected_num_weights is not None:
        assert len(layer.weights) == expected_num_weights, [w.name for w in layer.weights]
    if expected_num_params is not None:
        assert layer.count_params() == expected_num_params, layer.count_params()

    # Config round-trip: same config, and the same function once the weights are copied.
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone_harness = LayerHarness(clone, constants, call_kwargs)
    clone_harness(inputs, training=False)
    clone.set_weights(layer.get_weights())
    _assert_outputs_close(clone_harness(inputs, training=False), outputs)

    # One fit step reaches every trainable weight.
    before = [w.numpy().copy() for w in layer.trainable_weights]
    harness.compile(optimizer=tf.keras.optimizers.SGD(learning_rate))
    batch_size = len(tf.nest.flatten(inputs)[0])
    history = harness.fit(inputs, batch_size=batch_size, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    unchanged = [
        w.name for w, b in zip(layer.trainable_weights, before) if np.array_equal(w.numpy(), b)
    ]
    assert not unchanged, f"one fit step left these weights unchanged: {unchanged}"

    # SavedModel round-trip (the layer is rebuilt from its config, weights from the checkpoint).
    outputs = harness(inputs, training=False)
    path = str(tmp_path / "saved_layer")
    harness.save(path, save_format="tf")
    restored = tf.keras.models.load_model(path)
    assert type(restored.layer) is type(layer)
    assert restored.layer.get_config() == layer.get_config()
    _assert_outputs_close(restored(inputs, training=False), outputs)
    return layer
