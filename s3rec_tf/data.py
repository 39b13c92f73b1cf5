"""tf.data input pipelines over the Beam job's output (the contract is `s3rec_tf.schema`).

Everything per example runs inside tf.data (no Python per example):
  TFRecordDataset -> parse -> cache -> shuffle -> bucket by length -> pad per batch -> prefetch.

Batches are LEFT-padded with 0 to the longest sequence of the batch (at most max_seq_length), the
padding the encoder expects (`keras_models.encoder`): the last item is always in the last column.
Bucketing by length keeps the padding small (most histories are far shorter than max_seq_length;
the figures on Beauty are in reports/pretrain_speed.json).
"""

from __future__ import annotations

import contextlib
import json
import logging
import numbers
import posixpath
from collections.abc import Mapping, Sequence
from typing import Optional, Union

import numpy as np
import tensorflow as tf

from s3rec_tf import schema

logger = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE

# Finetune / eval batch features (what the models consume).
INPUT_IDS = "input_ids"  # [B, W] left-padded input items
TARGET_IDS = "target_ids"  # [B, W] next item at each position (0 at padding)
NEGATIVE_IDS = "negative_ids"  # [B, W, k] sampled negatives per position (train only)
TARGET = schema.TARGET  # [B] the held-out item (valid/test)
NEGATIVES = schema.NEGATIVES  # [B, 99] the user's sampled negatives (valid/test)
HISTORY = schema.HISTORY  # [B, H] the user's whole input history, right-padded (valid/test)


ItemAttributes = Union[np.ndarray, Mapping, Sequence]


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and the problem."""


class DamagedDataError(DataError):
    """A shard that cannot be read to its end (truncated or corrupt): rebuild the data."""


# ---------------------------------------------------------------------------------------------
# Metadata and side tables
# ---------------------------------------------------------------------------------------------


def read_metadata(data_dir: str) -> dict:
    """Reads and checks metadata.json of a preprocessed data directory."""
    path = posixpath.join(data_dir, schema.METADATA_FILE)
    if not tf.io.gfile.exists(path):
        raise DataError(
            f"{path} not found: {data_dir!r} is not the output of beam_pipelines.preprocess "
            "(run `python -m beam_pipelines.preprocess --output DIR ...` first)."
        )
    with tf.io.gfile.GFile(path) as f:
        try:
            metadata = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e}).") from e
    return check_metadata(metadata, path)


def check_metadata(metadata: dict, source: str) -> dict:
    """Checks the keys and format version of a data directory's metadata (read from `source`)."""
    missing = [key for key in schema.METADATA_KEYS if key not in metadata]
    if missing:
        raise DataError(f"{source}: missing key(s) {missing}.")
    if metadata["format_version"] != schema.FORMAT_VERSION:
        raise DataError(
            f"{source}: data format version {metadata['format_version']} but this code reads "
            f"version {schema.FORMAT_VERSION}; rerun beam_pipelines.preprocess with this version."
        )
    num_items = metadata["num_items"]
    if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 1:
        raise DataError(f"{source}: num_items must be a positive integer, got {num_items!r}.")
    return metadata


def load_item_attributes(data_dir: str, num_items: int, num_attributes: int) -> list[list[int]]:
    """Attribute ids of every item id 0..num_items + 1 (padding and mask id have none)."""
    path = posixpath.join(data_dir, schema.ITEM2ATTRIBUTES_FILE)
    with tf.io.gfile.GFile(path) as f:
        raw = json.load(f)
    try:
        return item_attribute_rows(raw, num_items, num_attributes)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: {e}") from e


def item_attribute_rows(
    item_attributes: ItemAttributes, num_items: int, num_attributes: int
) -> list[list[int]]:
    """The item -> attributes lookup, checked: the sorted attribute ids of item ids 0..N + 1.

    `item_attributes` may be:
      * a mapping {item id: [attribute ids]} (keys int or decimal strings, as in the data's
        item2attributes.json); items absent from it have no attributes;
      * a sequence indexed by item id (length num_items + 2) of attribute-id lists;
      * a dense 0/1 matrix `[num_items + 2, num_attributes + 1]` (the reference's multi-hot).
    Item ids must be in 1..num_items, attribute ids in 1..num_attributes; duplicates count once
    (the targets are multi-hot).
    """
    rows: list = [[] for _ in range(num_items + 2)]
    if isinstance(item_attributes, np.ndarray) and item_attributes.ndim == 2:
        expected = (num_items + 2, num_attributes + 1)
        if item_attributes.shape != expected:
            raise ValueError(
                f"item_attributes: a dense matrix must have shape {expected} "
                f"(num_items + 2, num_attributes + 1), got {item_attributes.shape}."
            )
        bad = ~np.isin(item_attributes, (0, 1))
        if bad.any():
            item, attribute = np.argwhere(bad)[0]
            raise ValueError(
                f"item_attributes: a dense matrix must be 0/1; item {item}, attribute {attribute} "
                f"is {item_attributes[item, attribute]!r}."
            )
        for item, attribute in np.argwhere(item_attributes):
            rows[item].append(int(attribute))
    elif isinstance(item_attributes, Mapping):
        for key, attributes in item_attributes.items():
            rows[_item_id(key, num_items)] = _attribute_ids(key, attributes, num_attributes)
    elif isinstance(item_attributes, Sequence) and not isinstance(item_attributes, str):
        if len(item_attributes) != num_items + 2:
            raise ValueError(
                f"item_attributes: a sequence indexed by item id needs num_items + 2 = "
                f"{num_items + 2} entries, got {len(item_attributes)}."
            )
        for item, attributes in enumerate(item_attributes):
            rows[item] = _attribute_ids(item, attributes or (), num_attributes)
    else:
        raise TypeError(
            "item_attributes must be a mapping {item id: [attribute ids]}, a sequence indexed by "
            f"item id, or a dense 0/1 matrix; got {type(item_attributes).__name__}."
        )
    for item in (schema.PAD_ID, num_items + 1):
        if rows[item]:
            raise ValueError(
                f"item_attributes: item id {item} is padding/mask and cannot have attributes "
                f"({rows[item]})."
            )
    if any(0 in row for row in rows):
        item = next(i for i, row in enumerate(rows) if 0 in row)
        raise ValueError(f"item_attributes: item {item} has attribute 0, which is unused.")
    return rows


def _item_id(key, num_items: int) -> int:
    try:
        item = int(key)
    except (TypeError, ValueError):
        raise ValueError(f"item_attributes: item key {key!r} is not an integer id.") from None
    if isinstance(key, float) or not 1 <= item <= num_items:
        raise ValueError(f"item_attributes: item id {key!r} is outside 1..{num_items}.")
    return item


def _attribute_ids(item, attributes, num_attributes: int) -> list:
    ids = []
    for attribute in attributes:
        if not isinstance(attribute, numbers.Integral) or not 1 <= attribute <= num_attributes:
            raise ValueError(
                f"item_attributes: item {item} has attribute {attribute!r}; attribute ids must be "
                f"integers in 1..{num_attributes}."
            )
        ids.append(int(attribute))
    return sorted(set(ids))


def item_popularity(data_dir: str, num_items: int) -> np.ndarray:
    """Interaction counts of item ids 0..num_items + 1 in the training parts (train split)."""
    counts = np.zeros(num_items + 2, np.int64)
    for batch in _parsed(data_dir, schema.split_prefix("train"), schema.TRAIN_FEATURES).batch(4096):
        np.add.at(counts, batch[schema.HISTORY].flat_values.numpy(), 1)
    return counts


def _files(data_dir: str, prefix: str) -> list[str]:
    pattern = schema.shard_glob(data_dir, prefix)
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise DataError(f"No TFRecord shards match {pattern}.")
    return files


def _parsed(data_dir: str, prefix: str, features: dict) -> tf.data.Dataset:
    """Parsed examples in file order, one dict of tensors per example."""
    files = _files(data_dir, prefix)
    # Files in a fixed order, records in file order: the same epoch for the same seed.
    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=None)
    # Parsing batches of records is several times faster than one at a time.
    return (
        dataset.batch(1024)
        .map(lambda records: tf.io.parse_example(records, features), num_parallel_calls=AUTOTUNE)
        .unbatch()
    )


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


def _left_aligned(length_of: str, names: Optional[Sequence[str]] = None):
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


class PretrainData:
    """The pretraining examples: duplicate k (its own masks) is read in epoch k mod dupe_factor.

    Each duplicate's parsed examples are cached in memory after their first full pass, so later
    epochs only shuffle and batch.
    """

    def __init__(
        self,
        data_dir: str,
        metadata: dict,
        batch_size: int,
        max_seq_length: int,
        seed: int,
        fixed_widths: bool = False,
    ):
        self.data_dir = data_dir
        self.dupe_factor = int(metadata["dupe_factor"])
        self.num_examples = int(metadata["num_pretrain_examples"])
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.seed = seed
        self.fixed_widths = fixed_widths
        if max_seq_length < int(metadata["max_seq_length"]):
            raise DataError(
                f"model.max_seq_length = {max_seq_length} is shorter than the pretraining "
                f"examples of {data_dir} (max_seq_length {metadata['max_seq_length']})."
            )
        self._cached: dict[int, tf.data.Dataset] = {}

    def duplicate(self, epoch: int) -> int:
        return epoch % self.dupe_factor

    def _examples(self, duplicate: int) -> tf.data.Dataset:
        if duplicate not in self._cached:
            features = {name: schema.PRETRAIN_FEATURES[name] for name in schema.PRETRAIN_SEQUENCES}
            dataset = _parsed(self.data_dir, schema.pretrain_prefix(duplicate), features)
            # int32 halves the cache; ids are far below 2**31.
            dataset = dataset.map(lambda x: {k: tf.cast(v, tf.int32) for k, v in x.items()})
            self._cached[duplicate] = dataset.cache()
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
        dataset = dataset.map(_left_aligned(schema.POS_ITEMS), num_parallel_calls=AUTOTUNE)
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


def mean_finetune_targets(data_dir: str, max_seq_length: int) -> float:
    """Mean number of target positions per fine-tuning example (see `finetune_train_dataset`).

    A batch of B random users holds about B times this many targets: the normalizer that gives
    length-bucketed batches the reference's per-position weighting.
    """
    examples = _parsed(data_dir, schema.split_prefix("train"), schema.TRAIN_FEATURES)
    total = users = 0
    for batch in examples.batch(8192):
        lengths = batch[schema.HISTORY].row_lengths().numpy()
        lengths = lengths[lengths >= 2]  # as finetune_train_dataset: one target at least
        total += int(np.minimum(lengths, max_seq_length + 1).sum() - len(lengths))
        users += len(lengths)
    if not users:
        raise DataError(f"{data_dir}: no training user has two or more items to fine-tune on.")
    return total / users


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
    examples = _parsed(data_dir, schema.split_prefix("train"), schema.TRAIN_FEATURES)
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
    dataset = dataset.map(_left_aligned(INPUT_IDS), num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE).with_options(_options())


def eval_dataset(
    data_dir: str, split: str, batch_size: int, max_seq_length: int
) -> tf.data.Dataset:
    """Valid or test users in a fixed order.

    Each batch: user [B], input_ids [B, W] (the last max_seq_length history items, left-padded),
    target [B], negatives [B, 99] (sampled protocol) and history [B, H] (every input item,
    right-padded with 0, for the full-ranking protocol's optional history exclusion).
    """
    if split not in ("valid", "test"):
        raise ValueError(f"eval_dataset reads 'valid' or 'test', not {split!r}.")
    examples = _parsed(data_dir, schema.split_prefix(split), schema.EVAL_FEATURES)

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
    return (
        dataset.map(_left_aligned(INPUT_IDS, [INPUT_IDS]), num_parallel_calls=AUTOTUNE)
        .cache()
        .prefetch(AUTOTUNE)
        .with_options(_options())
    )


def check_files(
    data_dir: str, splits: Sequence[str] = schema.SPLITS, dupe_factor: Optional[int] = None
) -> None:
    """Fails before any work if a shard set the run needs is missing."""
    for split in splits:
        _files(data_dir, schema.split_prefix(split))
    for duplicate in range(dupe_factor or 0):
        _files(data_dir, schema.pretrain_prefix(duplicate))


def find_damaged_shards(data_dir: str) -> list[str]:
    """The TFRecord shards under `data_dir` that cannot be read to their end."""
    shards = "*" + schema.TFRECORD_SUFFIX
    files = tf.io.gfile.glob(posixpath.join(data_dir, "*", shards))  # the splits
    files += tf.io.gfile.glob(posixpath.join(data_dir, schema.PRETRAIN_DIR, "*", shards))
    damaged = []
    for file in sorted(files):
        try:
            for _ in tf.data.TFRecordDataset(file).batch(4096):
                pass
        except tf.errors.DataLossError:
            damaged.append(file)
    return damaged


@contextlib.contextmanager
def explain_damaged_data(data_dir: str):
    """Turns TensorFlow's DataLossError (which names no file) into a DamagedDataError that names
    the damaged shards of `data_dir` and says how to rebuild them."""
    try:
        yield
    except tf.errors.DataLossError as e:
        files = find_damaged_shards(data_dir) or [f"a TFRecord shard under {data_dir}"]
        detail = (e.message.strip().splitlines() or ["unreadable"])[0]  # TF adds op details
        raise DamagedDataError(
            f"{', '.join(files)}: the data is damaged (a truncated or corrupt TFRecord file: "
            f"{detail}). Rebuild {data_dir} by rerunning the preprocessing job "
            "(python -m beam_pipelines.preprocess ... --output DIR) and train on its output."
        ) from None
