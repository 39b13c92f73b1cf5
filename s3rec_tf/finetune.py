"""Fine-tuning: the encoder in causal mode as a next-item recommender.

`S3RecRecommender` scores every item by the dot product of the last position's encoding with the
item embedding table (shared with the input embeddings, as the reference). The training loss is
one of `s3rec_tf.losses` (bce, gbce, ce, sampled_softmax), computed per position from logits.

Each loss is a sum over target positions divided by the number of target positions in the
GLOBAL batch (all replicas), so the gradient is the same whatever the number of replicas: the
batch's own count, or (`targets_per_example` given) the global batch size times the data's mean
targets per example. The latter is the reference's objective: its batches are random users, whose
count is about that, so every target position weighs the same. Our batches are bucketed by length,
and dividing by their own count would weigh a position of a batch of short histories (2 targets
per user) 20 times one of long histories (40 per user).
`test_step` updates the ranking metrics of `s3rec_tf.metrics` under both protocols. Scores,
losses and metrics are float32 whatever the Keras dtype policy.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from s3rec_tf import data as data_lib
from s3rec_tf import losses as losses_lib
from s3rec_tf import metrics as metrics_lib
from s3rec_tf.runtime import global_sum


@tf.keras.utils.register_keras_serializable(package="S3Rec")
class S3RecRecommender(tf.keras.Model):
    """Next-item recommender on a (pretrained) encoder.

    Args:
      encoder: a `keras_models.S3RecEncoder`; called with causal=True.
      loss: a `s3rec_tf.losses.NextItemLoss`, or a registered loss name (built with
        `loss_config`).
      loss_config: the settings of a loss given by name (its `get_config()`).
      exclude_history: full-ranking protocol leaves out the user's history items when True.
      history_zero_metrics: also rank under the "full_history_zero" protocol (history items'
        scores set to 0, as BSARec / WEARec evaluate), metrics named `full_history_zero_*`.
      targets_per_example: the training data's mean number of target positions per example
        (`data.mean_finetune_targets`); None divides each batch's loss by its own count.
      eval_item_chunk: evaluation scores this many items at a time
        (`metrics.ranks_by_item_chunks`); None: the whole catalogue at once.

    Batches (see `s3rec_tf.data`): training {input_ids [B, W], target_ids [B, W],
    negative_ids [B, W, k]}; evaluation {input_ids [B, W], target [B], negatives [B, 99],
    history [B, H]}.
    """

    def __init__(
        self,
        encoder,
        loss="bce",
        loss_config: Optional[dict] = None,
        exclude_history: bool = False,
        history_zero_metrics: bool = False,
        targets_per_example: Optional[float] = None,
        eval_item_chunk: Optional[int] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.encoder = encoder
        if isinstance(loss, str):
            loss = losses_lib.make(loss, encoder.num_items, **(loss_config or {}))
        self.next_item_loss = loss
        self.exclude_history = exclude_history
        self.history_zero_metrics = history_zero_metrics
        if targets_per_example is not None and not targets_per_example > 0:
            raise ValueError(f"targets_per_example must be positive, not {targets_per_example!r}.")
        self.targets_per_example = targets_per_example
        self.eval_item_chunk = eval_item_chunk
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        protocols = ("sampled", "full") + (("full_history_zero",) if history_zero_metrics else ())
        self.ranking_metrics = [m for p in protocols for m in metrics_lib.ranking_metrics(p)]

    @property
    def metrics(self):
        return [self.loss_tracker] + self.ranking_metrics

    @property
    def num_items(self) -> int:
        return self.encoder.num_items

    def call(self, input_ids, training=None):
        """User representations: the last position's causal encoding, [batch, hidden]."""
        # Only the last position is needed: its final block skips the other queries.
        return self.encoder(input_ids, causal=True, training=training, last_position_only=True)

    def score_all(self, input_ids, training=None):
        """Next-item scores over every id 0..num_items + 1, [batch, num_items + 2]."""
        user = tf.cast(self(input_ids, training=training), tf.float32)
        table = self.encoder.item_table()
        return tf.matmul(user, table, transpose_b=True)

    # ------------------------------------------------------------------------------- training

    def compute_loss_terms(self, batch, training=True):
        """Sum of the per-position losses and the number of target positions (this replica)."""
        inputs, targets = batch[data_lib.INPUT_IDS], batch[data_lib.TARGET_IDS]
        states = self.encoder(inputs, causal=True, training=training)  # [B, W, d]
        states = tf.cast(states, tf.float32)  # logits and losses in float32 under any policy
        is_target = targets > 0
        table = self.encoder.item_table()
        # Every position is computed and padding is masked out afterwards: fixed shapes keep the
        # step XLA-compilable, and bucketing keeps the padding small.
        step = self.optimizer.iterations if self.optimizer is not None else 0
        per_position = self.next_item_loss(states, targets, table, batch, step)
        per_position = tf.where(is_target, per_position, tf.zeros_like(per_position))
        count = tf.reduce_sum(tf.cast(is_target, per_position.dtype))
        return tf.reduce_sum(per_position), count

    def train_step(self, batch):
        with tf.GradientTape() as tape:
            loss_sum, count = self.compute_loss_terms(batch, training=True)
            loss = loss_sum / tf.maximum(self._normalizer(batch, count), 1.0)
        # minimize() scales the loss under a mixed-precision LossScaleOptimizer; the optimizer
        # sums the gradients over replicas.
        self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
        # Mean over all positions seen, weighted by this replica's count.
        self.loss_tracker.update_state(loss_sum / tf.maximum(count, 1.0), sample_weight=count)
        return {"loss": self.loss_tracker.result()}

    def _normalizer(self, batch, count):
        """The global batch's number of target positions: counted, or expected (see above)."""
        if self.targets_per_example is None:
            return global_sum(count)
        examples = tf.cast(tf.shape(batch[data_lib.INPUT_IDS])[0], count.dtype)
        return global_sum(examples) * self.targets_per_example

    # ----------------------------------------------------------------------------- evaluation

    def test_step(self, batch):
        # Scored item chunk by item chunk: no [B, N + 2] matrix, whatever the catalogue.
        ranks = metrics_lib.ranks_by_item_chunks(
            tf.cast(self(batch[data_lib.INPUT_IDS], training=False), tf.float32),
            self.encoder.item_table(),
            batch[data_lib.TARGET],
            batch[data_lib.NEGATIVES],  # 0 pads a user with fewer negatives: not a candidate
            batch[data_lib.HISTORY],
            exclude_history=self.exclude_history,
            history_zero=self.history_zero_metrics,
            chunk_size=self.eval_item_chunk,
        )
        for metric in self.ranking_metrics:
            metric.update_state(ranks[metric.protocol])
        return {m.name: m.result() for m in self.ranking_metrics}

    def get_config(self):
        # Model.get_config of a subclassed model is empty: name and trainable are added here.
        config = super().get_config()
        config.update(
            name=self.name,
            trainable=self.trainable,
            encoder=tf.keras.layers.serialize(self.encoder),
            loss=self.next_item_loss.name,
            loss_config=self.next_item_loss.get_config(),
            exclude_history=self.exclude_history,
            history_zero_metrics=self.history_zero_metrics,
            targets_per_example=self.targets_per_example,
            eval_item_chunk=self.eval_item_chunk,
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "encoder": tf.keras.layers.deserialize(config["encoder"])})


def evaluate(model: S3RecRecommender, dataset, prefix: Optional[str] = None) -> dict:
    """Runs model.evaluate and returns the metrics as Python floats."""
    results = model.evaluate(dataset, return_dict=True, verbose=0)
    results = {k: float(v) for k, v in results.items() if k != "loss"}
    return {f"{prefix}{k}" if prefix else k: v for k, v in results.items()}
