"""tf.data input pipelines over the Beam job's output (the contract is `s3rec_tf.schema`): the
pretraining examples (`PretrainData`), next-item training with sampled negatives
(`finetune_train_dataset`, `sample_negatives`) and the valid / test users (`eval_dataset`).
Reading and checking the data directory itself (metadata, side tables, shards) is
`s3rec_tf.data_files`; the left padding is `s3rec_tf.padding`.

Everything per example runs inside tf.data (no Python per example):
  TFRecordDataset -> parse -> cache -> shuffle -> bucket by length -> pad per batch -> prefetch.

Batches are LEFT-padded with 0 to the longest sequence of the batch (at most max_seq_length), the
padding the encoder expects (`keras_models.encoder`): the last item is always in the last column.
Bucketing by length keeps the padding small (most histories are far shorter than max_seq_length;
the figures on Beauty are in reports/pretrain_speed.json).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from s3rec_tf import data_files, padding, schema

AUTOTUNE = tf.data.AUTOTUNE

# Finetune / eval batch features (what the models consume).
INPUT_IDS = "input_ids"  # [B, W] left-padded input items
TARGET_IDS = "target_ids"  # [B, W] next item at each position (0 at padding)
NEGATIVE_IDS = "negative_ids"  # [B, W, k] sampled negatives per position (train only)
TARGET = schema.TARGET  # [B] the held-out item (valid/test)
NEGATIVES = schema.NEGATIVES  # [B, 99] the user's sampled negatives (valid/test)
HISTORY = schema.HISTORY  # [B, H] the user's whole input history, right-padded (valid/test)


def _bucket_boundaries(max_len: int) -> list[int]:
    # Finer buckets for short sequences, where most examples are.
    bounds = [b for b in (2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40) if b < max_len + 1]
    return bounds + [max_len + 1]


def _bucketed(
    dataset: tf.data.Dataset,
    length_of,
    batch_size: int,
    max_len: int,
    padded_shapes,
    fixed_widths: bool = False,
) -> tf.data.Dataset:
    """Batches examples of similar length, each batch padded (on the right) to its longest.

    fixed_widths: pad every batch to its bucket's upper bound instead, so that an XLA-compiled
    step sees a handful of shapes and compiles once per bucket, not once per width.
    """
    boundaries = _bucket_boundaries(max_len)
    return dataset.bucket_by_sequence_length(
        element_length_func=length_of,
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        padded_shapes=padded_shapes,
        pad_to_bucket_boundary=fixed_widths,
    )


def _options(deterministic: bool = True) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    # Sharding by data is correct whatever the number of files per worker.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    # No autotuning: destroying an iterator waits for tf.data's autotune thread, which sleeps
    # through its optimisation period first. Every epoch makes new iterators (training, then
    # validation), and measured on the 2-core machine 2 of 4 pretraining epochs spent 20-32 s
    # idle in that teardown, against 0 s without autotune at the same steps' speed
    # (reports/pretrain_speed.md). AUTOTUNE parallelism then means one call per core.
    options.autotune.enabled = False
    return options


# ---------------------------------------------------------------------------------------------
# Pretraining
# ---------------------------------------------------------------------------------------------


# Pretraining examples are kept in memory when all of them (every duplicate, at full width) take
# at most this; a larger data set is read from its files every epoch, so that memory does not grow
# with the data. The batches are the same either way.
PRETRAIN_CACHE_BYTES = 1 << 30


class PretrainData:
    """The pretraining examples: duplicate k (its own masks) is read in epoch k mod dupe_factor.

    Each duplicate's parsed examples are cached in memory after their first full pass, so later
    epochs only shuffle and batch, unless the examples could take more than `cache_bytes`
    (num_pretrain_examples x 6 sequences x max_seq_length int32).
    """

    def __init__(
        self,
        data_dir: str,
        metadata: dict,
        batch_size: int,
        max_seq_length: int,
        seed: int,
        fixed_widths: bool = False,
        cache_bytes: int = PRETRAIN_CACHE_BYTES,
    ):
        self.data_dir = data_dir
        self.dupe_factor = int(metadata["dupe_factor"])
        self.num_examples = int(metadata["num_pretrain_examples"])
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.seed = seed
        self.fixed_widths = fixed_widths
        if max_seq_length < int(metadata["max_seq_length"]):
            raise data_files.DataError(
                f"model.max_seq_length = {max_seq_length} is shorter than the pretraining "
                f"examples of {data_dir} (max_seq_length {metadata['max_seq_length']})."
            )
        self.cache = (
            self.num_examples * len(schema.PRETRAIN_SEQUENCES) * int(metadata["max_seq_length"]) * 4
            <= cache_bytes
        )
        self._cached: dict[int, tf.data.Dataset] = {}

    def duplicate(self, epoch: int) -> int:
        return epoch % self.dupe_factor

    def _examples(self, duplicate: int) -> tf.data.Dataset:
        if duplicate not in self._cached:
            features = {name: schema.PRETRAIN_FEATURES[name] for name in schema.PRETRAIN_SEQUENCES}
            dataset = data_files.parsed(self.data_dir, schema.pretrain_prefix(duplicate), features)
            # int32 halves the cache; ids are far below 2**31.
            dataset = dataset.map(lambda x: {k: tf.cast(v, tf.int32) for k, v in x.items()})
            self._cached[duplicate] = dataset.cache() if self.cache else dataset
        return self._cached[duplicate]

    def dataset(self, epoch: int, shuffle: bool = True) -> tf.data.Dataset:
        """One epoch: dict of the six sequences, each [B, W] int32, left-padded."""
        dataset = self._examples(self.duplicate(epoch))
        if shuffle:
            dataset = dataset.shuffle(
                min(self.num_examples, 50_000),
                seed=self.seed + epoch,
                reshuffle_each_iteration=False,
            )
        dataset = _bucketed(
            dataset,
            lambda x: tf.shape(x[schema.POS_ITEMS])[0],
            self.batch_size,
            self.max_seq_length,
            padded_shapes={name: [None] for name in schema.PRETRAIN_SEQUENCES},
            fixed_widths=self.fixed_widths,
        )
        dataset = dataset.map(padding.left_aligned(schema.POS_ITEMS), num_parallel_calls=AUTOTUNE)
        return dataset.prefetch(AUTOTUNE).with_options(_options())


# ---------------------------------------------------------------------------------------------
# Fine-tuning and evaluation
# ---------------------------------------------------------------------------------------------


def sample_negatives(
    positives: tf.Tensor, exclude: tf.Tensor, num_items: int, k: int, seed: tf.Tensor
) -> tf.Tensor:
    """k uniform negatives in 1..num_items per position of `positives`, none in `exclude`.

    positives: [L] (only its length is used); exclude: [E] item ids; seed: [2] stateless seed.
    Returns [L, k] int64. Rejection sampling until no draw hits `exclude`: exact, and cheap
    because a user's items are a tiny part of the catalogue.
    """
    excluded = tf.sort(tf.unique(tf.cast(exclude, tf.int64))[0])
    shape = tf.stack([tf.size(positives), k])

    def draw(round_seed):
        return tf.random.stateless_uniform(
            shape, round_seed, minval=1, maxval=num_items + 1, dtype=tf.int64
        )

    def hits(samples):
        flat = tf.reshape(samples, [-1])
        where = tf.searchsorted(excluded, flat)
        found = tf.gather(excluded, tf.minimum(where, tf.size(excluded) - 1)) == flat
        return tf.reshape(found & (tf.size(excluded) > 0), shape)

    def body(i, samples):
        fresh = draw(tf.random.experimental.stateless_fold_in(seed, i))
        return i + 1, tf.where(hits(samples), fresh, samples)

    _, samples = tf.while_loop(
        lambda i, samples: tf.reduce_any(hits(samples)),
        body,
        (tf.constant(1, tf.int32), draw(seed)),
    )
    return samples


def finetune_train_dataset(
    data_dir: str,
    num_items: int,
    batch_size: int,
    max_seq_length: int,
    num_negatives: int,
    seed: int,
    shuffle: bool = True,
    fixed_widths: bool = False,
    epoch: Optional[int] = None,
) -> tf.data.Dataset:
    """Next-item training, as the reference: input = training part[:-1], target = training part[1:].

    Negatives never hit any item of the user (history or held-out targets). Without `epoch`,
    order and negatives are redrawn every time the dataset is iterated (each epoch of one
    `fit`). With `epoch`, the dataset is that one epoch: its order and negatives are a function
    of (seed, epoch) alone, so a run resumed at that epoch reads what an uninterrupted run reads.
    """
    examples = data_files.parsed(data_dir, schema.split_prefix("train"), schema.TRAIN_FEATURES)
    examples = examples.filter(lambda x: tf.size(x[schema.HISTORY]) >= 2).cache()
    redraw = epoch is None
    if not redraw:
        seed = seed + epoch
    if shuffle:
        examples = examples.shuffle(50_000, seed=seed, reshuffle_each_iteration=redraw)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=redraw).batch(2)

    def make(x, pair):
        history = x[schema.HISTORY][-(max_seq_length + 1) :]
        inputs, targets = history[:-1], history[1:]
        negatives = sample_negatives(
            targets,
            tf.concat([x[schema.HISTORY], x[schema.HELDOUT]], 0),
            num_items,
            num_negatives,
            pair,
        )
        return {INPUT_IDS: inputs, TARGET_IDS: targets, NEGATIVE_IDS: negatives}

    dataset = tf.data.Dataset.zip((examples, seeds)).map(make, num_parallel_calls=AUTOTUNE)
    dataset = _bucketed(
        dataset,
        lambda x: tf.shape(x[INPUT_IDS])[0],
        batch_size,
        max_seq_length,
        padded_shapes={INPUT_IDS: [None], TARGET_IDS: [None], NEGATIVE_IDS: [None, num_negatives]},
        fixed_widths=fixed_widths,
    )
    dataset = dataset.map(padding.left_aligned(INPUT_IDS), num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE).with_options(_options())


def eval_dataset(
    data_dir: str,
    split: str,
    batch_size: int,
    max_seq_length: int,
    users: Optional[np.ndarray] = None,
    cache: bool = True,
) -> tf.data.Dataset:
    """Valid or test users in a fixed order.

    Each batch: user [B], input_ids [B, W] (the last max_seq_length history items, left-padded),
    target [B], negatives [B, 99] (sampled protocol) and history [B, H] (every input item,
    right-padded with 0, for the full-ranking protocol's optional history exclusion).

    `users`: only these user ids (e.g. `user_sample`), in the split's order; None: all.
    `cache`: keep the batches in memory after the first pass (for a split read every epoch; its
    size grows with the users, so a split read once is better read from the files).
    """
    if split not in ("valid", "test"):
        raise ValueError(f"eval_dataset reads 'valid' or 'test', not {split!r}.")
    examples = data_files.parsed(data_dir, schema.split_prefix(split), schema.EVAL_FEATURES)
    if users is not None:
        wanted = tf.constant(np.unique(np.asarray(users, np.int64)))
        last = tf.size(wanted) - 1

        def chosen(x):  # membership by binary search in the sorted ids
            user = x[schema.USER]
            at = tf.minimum(tf.searchsorted(wanted, user[tf.newaxis])[0], last)
            return tf.equal(wanted[at], user)

        examples = examples.filter(chosen)

    def make(x):
        return {
            schema.USER: x[schema.USER],
            INPUT_IDS: x[schema.HISTORY][-max_seq_length:],
            TARGET: x[schema.TARGET],
            NEGATIVES: x[schema.NEGATIVES],
            HISTORY: x[schema.HISTORY],
        }

    dataset = examples.map(make, num_parallel_calls=AUTOTUNE).padded_batch(
        batch_size,
        padded_shapes={
            schema.USER: [],
            INPUT_IDS: [None],
            TARGET: [],
            NEGATIVES: [None],
            HISTORY: [None],
        },
    )
    dataset = dataset.map(padding.left_aligned(INPUT_IDS, [INPUT_IDS]), num_parallel_calls=AUTOTUNE)
    if cache:
        dataset = dataset.cache()
    return dataset.prefetch(AUTOTUNE).with_options(_options())


def user_sample(num_users: int, size: int, seed: int) -> Optional[np.ndarray]:
    """`size` of the user ids 1..num_users (schema.USER_VOCAB), drawn without replacement from
    `seed`, sorted; None (every user) when size is 0 or at least num_users."""
    if size <= 0 or size >= num_users:
        return None
    rng = np.random.default_rng([seed, 0x5A11D])  # its own stream: no other draw shifts it
    return np.sort(rng.choice(num_users, size=size, replace=False)) + 1
