"""Export of a trained run to a SavedModel for serving."""

import keras_models  # noqa: F401  (selects Keras 2 before TensorFlow is imported)
