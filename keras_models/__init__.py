"""Keras layers and models of S3Rec-TF. No file I/O lives here.

Importing the package only selects Keras 2 (`_legacy_keras`: an environment variable, no
TensorFlow import), so that `import s3rec_tf` makes that choice on a Beam worker without loading
TensorFlow. The layers are loaded, with TensorFlow, when first named (PEP 562 `__getattr__`):
`from keras_models import S3RecEncoder` works as before.
"""

import importlib

from keras_models import _legacy_keras  # noqa: F401  (must run before TensorFlow builds tf.keras)

# {exported name: the module that defines it}
_EXPORTS = {
    "S3RecEncoder": "keras_models.encoder",
    "TransformerBlock": "keras_models.encoder",
    "LowRankAAP": "keras_models.heads",
    "S3RecPretrainHeads": "keras_models.heads",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
