"""Apache Beam jobs: raw Amazon reviews (or the S3-Rec format) to TFRecords."""

import keras_models  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
