"""Selects Keras 2 (tf-keras) for TensorFlow, before TensorFlow builds `tf.keras`.

TensorFlow Recommenders 0.7.x is written against Keras 2. Since TF 2.16 `tf.keras` is Keras 3
unless `TF_USE_LEGACY_KERAS=1` is set before `tf.keras` is first touched. Every package of this
project imports this module first, so this is the one place where that choice is made.
"""

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ INFO lines (e.g. an iterator's "End of sequence" at every epoch end) drown the
# training log; an explicit setting by the user wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

if "tensorflow" in sys.modules:
    # TensorFlow was imported earlier. `tf.keras` is loaded lazily, so the variable above still
    # takes effect unless somebody already touched `tf.keras` with Keras 3.
    _keras_name = getattr(sys.modules["tensorflow"].keras, "__name__", "")
    if not _keras_name.startswith("tf_keras"):
        raise ImportError(
            "S3Rec-TF needs Keras 2 (tf-keras), but `tf.keras` was already loaded as "
            f"{_keras_name or 'Keras 3'!r} before this package was imported. Set "
            "TF_USE_LEGACY_KERAS=1 in the environment, or import s3rec_tf / keras_models before "
            "using tf.keras."
        )
