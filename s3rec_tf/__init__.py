"""S3Rec-TF: self-supervised sequential recommendation (S3-Rec) on TensorFlow."""

import keras_models  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

__version__ = "0.1.0"
