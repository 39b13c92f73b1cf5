"""S3-Rec self-supervised pretraining: the four objectives and a distribution-ready train_step.

Objectives (Zhou et al., CIKM 2020), each computed as the reference code computes it:
  AAP  associated attribute prediction: every real, unmasked position of `masked_item_sequence`
       against every attribute row (BCE vs the multi-hot attributes of the item there);
  MIP  masked item prediction: f = σ(sum(mip_norm(h)·e_item)); BCE(σ(f_pos − f_neg), 1) at each
       masked position;
  MAP  masked attribute prediction: AAP's form with its own head, at the masked positions;
  SP   segment prediction: the last-position encodings of the segment-masked sequence (context) and
       of the positive / negative segments; BCE(σ(f_pos − f_neg), 1) per example.
Each objective is its sum over the batch divided by the GLOBAL batch size (all replicas), so the
summed gradient is that of the whole batch whatever the number of replicas, and the objective
weights mean what they mean in the reference.

Logits, objectives and logged losses are float32 whatever the Keras dtype policy (under a mixed
policy the encoder computes in 16 bits, its outputs are cast before the heads).

Every BCE is computed from logits: BCE(σ(z), y) = softplus(z) − y·z. PyTorch's BCELoss clamps
log(·) at −100, which only changes terms with |z| > ~17 in float32 (the multi-hot terms) or never
(the difference forms, where |z| <= 1); see tests/test_pretrain.py for the reference check.

Batches: dicts with the six `schema.PRETRAIN_SEQUENCES` keys, int tensors `[batch, W]` left-padded
with 0 (other keys, e.g. `user`, are ignored).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import numpy as np
import tensorflow as tf

from keras_models import S3RecEncoder, S3RecPretrainHeads
from s3rec_tf import schema
from s3rec_tf.data_files import ItemAttributes, item_attribute_rows
from s3rec_tf.runtime import global_sum

OBJECTIVES = ("aap", "mip", "map", "sp")
HEAD_POSITIONS = ("auto", "gather", "dense")


def attribute_id_table(
    item_attributes: ItemAttributes, num_items: int, num_attributes: int
) -> np.ndarray:
    """The item -> attributes lookup as a padded id table `[num_items + 2, K]` (0 = no attribute).

    `item_attributes`: any form `data_files.item_attribute_rows` accepts (a mapping, a sequence
    indexed by item id, a dense 0/1 matrix); K is the largest number of attributes of one item.
    """
    rows = item_attribute_rows(item_attributes, num_items, num_attributes)
    width = max(1, max(len(row) for row in rows))
    table = np.zeros([num_items + 2, width], np.int32)
    for item, row in enumerate(rows):
        table[item, : len(row)] = row
    return table


@tf.keras.utils.register_keras_serializable(package="S3Rec")
class S3RecPretrainer(tf.keras.Model):
    """The S3-Rec pretraining model: a backbone encoder, the pretraining heads, four objectives.

    Args:
      encoder: the `S3RecEncoder` backbone (checkpoint it alone for fine-tuning).
      heads: the `S3RecPretrainHeads` (attribute table, AAP/MAP/MIP/SP heads).
      item_attributes: the item -> attributes lookup (see `attribute_id_table`); it is held as a
        constant id table `[num_items + 2, K]` and the attribute targets of a position are looked
        up from `pos_items` inside the model.
      aap_weight, mip_weight, map_weight, sp_weight: total = Σ weight · objective.
      head_positions: "gather" computes AAP only at real unmasked positions and MIP/MAP only at
        masked ones (rows gathered with tf.where, so the shapes are data-dependent); "dense"
        scores every position and zeroes the unwanted ones (static shapes); "auto" (default) =
        "dense" when the model is compiled with jit_compile, "gather" otherwise. Under XLA,
        data-dependent shapes are padded to their upper bound, so gathering saves nothing and
        compiles slowly; without XLA, "gather" is the faster (reports/pretrain_speed.json).

    Call / `compute_losses(batch, training)`: dict {"aap", "mip", "map", "sp"} of scalars (each the
    objective's sum over the local batch divided by the global batch size).
    `fit()` / `evaluate()` log `aap_loss`, `mip_loss`, `map_loss`, `sp_loss` and `loss` (the
    weighted total) as means per example.
    """

    def __init__(
        self,
        encoder: S3RecEncoder,
        heads: S3RecPretrainHeads,
        item_attributes: ItemAttributes,
        aap_weight: float = 1.0,
        mip_weight: float = 0.2,
        map_weight: float = 1.0,
        sp_weight: float = 0.5,
        head_positions: str = "auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if heads.hidden_size != encoder.hidden_size:
            raise ValueError(
                f"S3RecPretrainer: heads.hidden_size ({heads.hidden_size}) differs from "
                f"encoder.hidden_size ({encoder.hidden_size})."
            )
        if head_positions not in HEAD_POSITIONS:
            raise ValueError(
                f"S3RecPretrainer: head_positions must be one of {HEAD_POSITIONS}, got "
                f"{head_positions!r}."
            )
        self.encoder = encoder
        self.heads = heads
        self.head_positions = head_positions
        self.objective_weights = {
            "aap": float(aap_weight),
            "mip": float(mip_weight),
            "map": float(map_weight),
            "sp": float(sp_weight),
        }
        self.item_attribute_ids = tf.constant(
            attribute_id_table(item_attributes, encoder.num_items, heads.num_attributes)
        )
        self._trackers = _LossTrackers()
        # Built now, in the constructor's (strategy) scope: the heads are used through their
        # per-objective methods, which do not build them on first use the way __call__ would.
        self.build()

    def get_config(self):
        # Model.get_config of a subclassed model is empty: name and trainable are added here.
        config = super().get_config()
        table = self.item_attribute_ids.numpy()
        config.update(
            name=self.name,
            trainable=self.trainable,
            encoder=tf.keras.layers.serialize(self.encoder),
            heads=tf.keras.layers.serialize(self.heads),
            # The table's rows without their padding: a sequence indexed by item id.
            item_attributes=[[int(a) for a in row if a] for row in table],
            aap_weight=self.objective_weights["aap"],
            mip_weight=self.objective_weights["mip"],
            map_weight=self.objective_weights["map"],
            sp_weight=self.objective_weights["sp"],
            head_positions=self.head_positions,
        )
        return config

    @classmethod
    def from_config(cls, config):
        layers = {name: tf.keras.layers.deserialize(config[name]) for name in ("encoder", "heads")}
        return cls(**{**config, **layers})

    def build(self, input_shape=None):
        # Every weight shape follows from the constructor arguments (Model.build would insist on
        # an input shape and trace call with placeholder inputs).
        for layer in (self.encoder, self.heads):
            if not layer.built:
                with tf.name_scope(layer.name):  # as the layer's first call would name its weights
                    layer.build(None)
        self.built = True

    @property
    def metrics(self):
        # Listed explicitly so that Keras resets them at each epoch.
        return [*self._trackers.objectives, self._trackers.total]

    def call(self, inputs, training=None):
        return self.compute_losses(inputs, training=training)

    def compute_losses(self, batch, training=None) -> dict:
        """The four objectives, each its local sum / the global batch size."""
        sums, local_batch = self._objective_sums(batch, training)
        global_batch = global_sum(tf.cast(local_batch, tf.float32))
        return {name: sums[name] / global_batch for name in OBJECTIVES}

    def total_loss(self, losses: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """Σ weight · objective."""
        return tf.add_n([self.objective_weights[name] * losses[name] for name in OBJECTIVES])

    def train_step(self, data):
        batch, _, _ = tf.keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            sums, local_batch = self._objective_sums(batch, training=True)
            global_batch = global_sum(tf.cast(local_batch, tf.float32))
            total = self.total_loss({name: sums[name] / global_batch for name in OBJECTIVES})
        # minimize() handles loss scaling under a mixed-precision LossScaleOptimizer; the
        # optimizer sums the gradients over replicas.
        self.optimizer.minimize(total, self.trainable_variables, tape=tape)
        return self._log(sums, local_batch)

    def test_step(self, data):
        batch, _, _ = tf.keras.utils.unpack_x_y_sample_weight(data)
        sums, local_batch = self._objective_sums(batch, training=False)
        return self._log(sums, local_batch)

    def _log(self, sums, local_batch):
        # Mean per example, weighted by the local batch size: the metric states are summed over
        # replicas, so the logged value is the global per-example mean, partial batches included.
        weight = tf.cast(local_batch, tf.float32)
        for name, tracker in zip(OBJECTIVES, self._trackers.objectives):
            tracker.update_state(tf.math.divide_no_nan(sums[name], weight), sample_weight=weight)
        total = self.total_loss(sums)
        self._trackers.total.update_state(
            tf.math.divide_no_nan(total, weight), sample_weight=weight
        )
        return {metric.name: metric.result() for metric in self.metrics}

    def _objective_sums(self, batch, training):
        """Each objective's sum over this replica's batch (float32), and the local batch size."""
        items, pos_items, neg_items, segments, pos_segments, neg_segments = _sequences(batch)
        local_batch = tf.shape(items)[0]
        hidden_size = self.encoder.hidden_size
        # [B·W, d]; float32 from here on (the heads compute in float32 under a mixed policy too).
        hidden = tf.reshape(self.encoder(items, training=training), [-1, hidden_size])
        hidden = tf.cast(hidden, tf.float32)
        # Right after the item pass, where it always ran: the seeded dropouts draw their masks in
        # call order, so moving it would change every seeded run.
        segment_logits, _ = self._segment_logits(segments, pos_segments, neg_segments, training)

        items = tf.reshape(items, [-1])
        pos_items = tf.reshape(pos_items, [-1])
        neg_items = tf.reshape(neg_items, [-1])
        is_masked = tf.equal(items, self.encoder.mask_id)
        is_item = tf.logical_and(tf.not_equal(items, schema.PAD_ID), tf.logical_not(is_masked))

        (aap_hidden, aap_items), aap_selected = self._rows(is_item, hidden, pos_items)
        aap = self._attribute_bce(self.heads.aap_logits(aap_hidden), aap_items)

        (masked_hidden, masked_pos, masked_neg), masked_selected = self._rows(
            is_masked, hidden, pos_items, neg_items
        )
        map_ = self._attribute_bce(self.heads.map_logits(masked_hidden), masked_pos)
        candidates = tf.gather(self.encoder.item_table(), tf.stack([masked_pos, masked_neg], -1))
        mip = _difference_bce(self.heads.mip_logits(masked_hidden, candidates))

        sp = _difference_bce(segment_logits)

        sums = {
            "aap": _selected_sum(aap, aap_selected),
            "mip": _selected_sum(mip, masked_selected),
            "map": _selected_sum(map_, masked_selected),
            "sp": tf.reduce_sum(sp),
        }
        return sums, local_batch

    def segment_logits(self, batch, training=None, return_encodings=False):
        """SP's logits `[B, 2]` (positive, negative segment) of a pretraining batch; the loss is
        `softplus(σ(z_neg) − σ(z_pos))`. With `return_encodings`, also the last-position
        encodings `[3, B, d]` they come from: segment-masked sequence, positive, negative segment.
        """
        logits, encodings = self._segment_logits(*_sequences(batch)[3:], training)
        return (logits, encodings) if return_encodings else logits

    def _segment_logits(self, segments, pos_segments, neg_segments, training):
        # SP needs only the last position of the three segment sequences: one encoder pass over
        # them stacked along the batch axis, whose last block runs on the last position only.
        last = self.encoder(
            tf.concat([segments, pos_segments, neg_segments], axis=0),
            training=training,
            last_position_only=True,
        )
        hidden_size = self.encoder.hidden_size
        last = tf.reshape(tf.cast(last, tf.float32), [3, -1, hidden_size])  # [3, B, d]
        return self.heads.sp_logits(last[0], tf.stack([last[1], last[2]], 1)), last

    def _rows(self, selected, *tensors):
        """The rows of `tensors` an objective needs: gathered (selector None), or all of them
        with the boolean selector of the needed ones."""
        gather = self.head_positions == "gather" or (
            self.head_positions == "auto" and not self.jit_compile
        )
        if gather:
            index = tf.where(selected)[:, 0]
            return [tf.gather(t, index) for t in tensors], None
        return list(tensors), selected

    def _attribute_bce(self, logits, items):
        """Σ_a BCE(σ(logits[., a]), multi-hot(items)[., a]) per row: `[P, A]`, `[P]` -> `[P]`.

        = Σ_a softplus(z_a) − Σ_{a in attributes(item)} z_a: the multi-hot targets are never
        materialised; the item's attribute ids (0 = none) pick the positive logits.
        """
        logits = tf.cast(logits, tf.float32)
        attribute_ids = tf.gather(self.item_attribute_ids, items)  # [P, K]
        positive = tf.gather(logits, attribute_ids, batch_dims=1)  # [P, K]
        positive = tf.where(attribute_ids > 0, positive, 0.0)
        return tf.reduce_sum(tf.nn.softplus(logits), -1) - tf.reduce_sum(positive, -1)


class _LossTrackers:
    """The loss metrics, in a holder Keras does not track: as attributes of the model they would
    count among its weights (get_weights, count_params, checkpoints), which are its parameters."""

    def __init__(self):
        self.objectives = [tf.keras.metrics.Mean(name=f"{name}_loss") for name in OBJECTIVES]
        self.total = tf.keras.metrics.Mean(name="loss")


def _difference_bce(logits):
    """BCE(σ(σ(z_pos) − σ(z_neg)), 1) = softplus(σ(z_neg) − σ(z_pos)) for `[..., 2]` logits."""
    scores = tf.sigmoid(tf.cast(logits, tf.float32))
    return tf.nn.softplus(scores[..., 1] - scores[..., 0])


def _selected_sum(values, selected: Optional[tf.Tensor]):
    if selected is None:
        return tf.reduce_sum(values)
    return tf.reduce_sum(tf.where(selected, values, 0.0))


def _sequences(batch):
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"S3RecPretrainer expects a dict batch with keys {schema.PRETRAIN_SEQUENCES}, got "
            f"{type(batch).__name__}."
        )
    missing = [name for name in schema.PRETRAIN_SEQUENCES if name not in batch]
    if missing:
        raise KeyError(
            f"S3RecPretrainer: the batch lacks {missing}; it has {sorted(batch)}, needs "
            f"{list(schema.PRETRAIN_SEQUENCES)}."
        )
    tensors = [tf.convert_to_tensor(batch[name]) for name in schema.PRETRAIN_SEQUENCES]
    first = tensors[0]
    for name, tensor in zip(schema.PRETRAIN_SEQUENCES, tensors):
        if not tensor.dtype.is_integer or tensor.shape.rank != 2:
            raise ValueError(
                f"S3RecPretrainer: {name!r} must be an int tensor [batch, W], got {tensor.dtype} "
                f"{tensor.shape}."
            )
        if not tensor.shape.is_compatible_with(first.shape):
            raise ValueError(
                f"S3RecPretrainer: {name!r} has shape {tensor.shape} but "
                f"{schema.PRETRAIN_SEQUENCES[0]!r} has {first.shape}; all six sequences of a "
                "batch share one padded width."
            )
    return tensors
