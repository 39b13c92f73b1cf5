"""Keras layers and models of S3Rec-TF. No file I/O lives here."""

from keras_models import _legacy_keras  # noqa: F401  (must run before TensorFlow builds tf.keras)
