"""A data directory (the Beam job's output; its contract is `s3rec_tf.schema`), read and checked:
its metadata, the item -> attributes table, the shards (present, readable to their end) and the
training split's statistics (item popularity, targets per fine-tuning example).

The tf.data pipelines over it are `s3rec_tf.data`.
"""

from __future__ import annotations

import contextlib
import json
import numbers
import posixpath
from collections.abc import Mapping, Sequence
from typing import Optional, Union

import numpy as np
import tensorflow as tf

from s3rec_tf import schema

ItemAttributes = Union[np.ndarray, Mapping, Sequence]


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and the problem."""


class DamagedDataError(DataError):
    """A shard that cannot be read to its end (truncated or corrupt): rebuild the data."""


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
    for batch in parsed(data_dir, schema.split_prefix("train"), schema.TRAIN_FEATURES).batch(4096):
        np.add.at(counts, batch[schema.HISTORY].flat_values.numpy(), 1)
    return counts


def mean_finetune_targets(data_dir: str, max_seq_length: int) -> float:
    """Mean number of target positions per fine-tuning example (`data.finetune_train_dataset`).

    A batch of B random users holds about B times this many targets: the normalizer that gives
    length-bucketed batches the reference's per-position weighting.
    """
    examples = parsed(data_dir, schema.split_prefix("train"), schema.TRAIN_FEATURES)
    total = users = 0
    for batch in examples.batch(8192):
        lengths = batch[schema.HISTORY].row_lengths().numpy()
        lengths = lengths[lengths >= 2]  # as data.finetune_train_dataset: one target at least
        total += int(np.minimum(lengths, max_seq_length + 1).sum() - len(lengths))
        users += len(lengths)
    if not users:
        raise DataError(f"{data_dir}: no training user has two or more items to fine-tune on.")
    return total / users


def shard_files(data_dir: str, prefix: str) -> list[str]:
    """The TFRecord shards of one part (a split or a pretraining duplicate), sorted."""
    pattern = schema.shard_glob(data_dir, prefix)
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise DataError(f"No TFRecord shards match {pattern}.")
    return files


def parsed(data_dir: str, prefix: str, features: dict) -> tf.data.Dataset:
    """Parsed examples in file order, one dict of tensors per example."""
    files = shard_files(data_dir, prefix)
    # Files in a fixed order, records in file order: the same epoch for the same seed.
    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=None)
    # Parsing batches of records is several times faster than one at a time.
    return (
        dataset.batch(1024)
        .map(
            lambda records: tf.io.parse_example(records, features),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .unbatch()
    )


def check_files(
    data_dir: str, splits: Sequence[str] = schema.SPLITS, dupe_factor: Optional[int] = None
) -> None:
    """Fails before any work if a shard set the run needs is missing."""
    for split in splits:
        shard_files(data_dir, schema.split_prefix(split))
    for duplicate in range(dupe_factor or 0):
        shard_files(data_dir, schema.pretrain_prefix(duplicate))


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
