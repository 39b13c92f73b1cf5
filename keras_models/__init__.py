"""Keras layers and models of S3Rec-TF. No file I/O lives here."""

from keras_models import _legacy_keras  # noqa: F401  (must run before TensorFlow builds tf.keras)
from keras_models.encoder import S3RecEncoder, TransformerBlock
from keras_models.heads import LowRankAAP, S3RecPretrainHeads

__all__ = ["LowRankAAP", "S3RecEncoder", "S3RecPretrainHeads", "TransformerBlock"]
