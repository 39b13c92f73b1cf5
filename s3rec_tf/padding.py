"""Left padding, the encoder's padding contract (`keras_models.encoder`): a row's last item is in
its last column, zeros (schema.PAD_ID) before it. Used by the input pipelines (`s3rec_tf.data`)
and the serving signatures (`export.serving`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import tensorflow as tf

from s3rec_tf import schema


def left_pad(sequences: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
    """Right-padded [B, W] -> left-padded [B, W] (each row's items moved to the right end).

    The encoder's padding contract (`keras_models.encoder`): the last item in the last column.
    """
    return tf.reverse(tf.reverse_sequence(sequences, lengths, seq_axis=1, batch_axis=0), axis=[1])


def left_pad_ragged(rows: tf.RaggedTensor) -> tf.Tensor:
    """Ragged ids `[B, None]` -> `[B, W]` left-padded with PAD_ID, W = max(1, longest row)."""
    lengths = rows.row_lengths()
    width = tf.maximum(tf.reduce_max(lengths), 1)
    right_padded = rows.to_tensor(
        default_value=schema.PAD_ID, shape=tf.stack([rows.nrows(), width])
    )
    return left_pad(right_padded, lengths)


def left_aligned(length_of: str, names: Optional[Sequence[str]] = None):
    """A batch map moving the items of `names` (default: every feature) to the right end.

    A row's length is its number of non-padding entries in feature `length_of`.
    """

    def align(batch):
        lengths = tf.reduce_sum(tf.cast(batch[length_of] != schema.PAD_ID, tf.int32), axis=1)
        return {
            name: left_pad(value, lengths) if names is None or name in names else value
            for name, value in batch.items()
        }

    return align
