"""Step 8 of the job: the leave-one-out splits, evaluation negatives and pretraining examples of
every shard (users with id % num_shards == s), written as TFRecord files.

What a user contributes is decided by pure functions (`records.shard_examples`, over
`pretrain_examples`); this module only groups users by shard, serializes what they return and
writes it. It is the one step that imports TensorFlow (tf.train.Example).
"""

from __future__ import annotations

import contextlib
import posixpath

import apache_beam as beam
import numpy as np
from apache_beam.io.tfrecordio import _TFRecordUtil
from apache_beam.metrics import Metrics

from beam_pipelines import pretrain_examples as pe
from beam_pipelines import records
from beam_pipelines.stats import METRICS_NAMESPACE
from beam_pipelines.writers import AtomicFile
from s3rec_tf import schema  # selects Keras 2 (no TensorFlow import) before the line below

import tensorflow as tf  # isort: skip

HISTORY_TAG, SEGMENT_TAG, SHARD_TAG = "h", "s", "e"


def shard_path(output: str, prefix: str, shard: int, num_shards: int) -> str:
    """Path of one shard; matches `schema.shard_glob(output, prefix)`."""
    name = f"{prefix}-{shard:05d}-of-{num_shards:05d}{schema.TFRECORD_SUFFIX}"
    return posixpath.join(output, name)


def serialize_example(features: dict) -> bytes:
    """{name: list of ints} -> a serialized tf.train.Example (map keys in sorted order)."""
    example = tf.train.Example()
    feature_map = example.features.feature
    for name, values in features.items():
        feature_map[name].int64_list.value.extend(values)
    return example.SerializeToString(deterministic=True)


@beam.typehints.with_output_types(tuple[str, int])
class WriteShardFn(beam.DoFn):
    """(shard, tagged values) -> the shard's train/valid/test and pretraining files.

    The values are (HISTORY_TAG, (user, items)) of the shard's users, (SEGMENT_TAG, (positions,
    items)) pieces of the long sequence that their negative segments read, and one SHARD_TAG
    marker, so that every shard file exists, empty or not. Users are written in id order; a
    retried call rewrites the same bytes. Yields (prefix or 'users', count).
    """

    def __init__(self, output, dupe_factor, max_seq_length, mask_prob, num_negatives, seed):
        self._output = output
        self._dupe_factor = dupe_factor
        self._max_seq_length = max_seq_length
        self._mask_prob = mask_prob
        self._num_negatives = num_negatives
        self._seed = seed
        self._pretrain_examples = Metrics.counter(METRICS_NAMESPACE, "pretrain_examples")
        self._users = Metrics.counter(METRICS_NAMESPACE, "users_written")
        self._shards = Metrics.counter(METRICS_NAMESPACE, "shards_written")

    def process(self, element, num_items, num_shards, total_length):
        shard, values = element
        users, positions, items = [], [], []
        for tag, value in values:
            if tag == HISTORY_TAG:
                users.append(value)
            elif tag == SEGMENT_TAG:
                positions.append(value[0])
                items.append(value[1])
        users.sort(key=lambda u: u[0])
        long_sequence = pe.SparseSequence(
            total_length,
            np.concatenate(positions) if positions else np.zeros(0, np.int64),
            np.concatenate(items) if items else np.zeros(0, np.int64),
        )
        prefixes = [schema.split_prefix(s) for s in schema.SPLITS]
        prefixes += [schema.pretrain_prefix(k) for k in range(self._dupe_factor)]
        counts = dict.fromkeys(prefixes, 0)
        # Every file is opened first, so that a shard without users still writes its empty files;
        # a failure deletes them all (AtomicFile), a retry rewrites them.
        with contextlib.ExitStack() as stack:
            files = {
                prefix: stack.enter_context(
                    AtomicFile(shard_path(self._output, prefix, shard, num_shards))
                )
                for prefix in prefixes
            }
            for prefix, features in records.shard_examples(
                users,
                seed=self._seed,
                num_items=num_items,
                num_negatives=self._num_negatives,
                dupe_factor=self._dupe_factor,
                max_seq_length=self._max_seq_length,
                mask_prob=self._mask_prob,
                long_sequence=long_sequence,
            ):
                _TFRecordUtil.write_record(files[prefix], serialize_example(features))
                counts[prefix] += 1
        self._shards.inc()
        self._users.inc(len(users))
        self._pretrain_examples.inc(sum(counts[p] for p in prefixes[len(schema.SPLITS) :]))
        yield ("users", len(users))
        yield from counts.items()


class WriteExamples(beam.PTransform):
    """{histories: (user id, items), segments: (shard, (positions, items))} -> TFRecord shards;
    returns (prefix or 'users', count) pairs.

    Writes, for every shard s (users with id % num_shards == s), the train/valid/test examples
    (`schema.TRAIN_FEATURES` / `EVAL_FEATURES`) and one pretraining file per duplicate
    (`schema.PRETRAIN_FEATURES`). Every shard file exists, empty or not. `num_items`,
    `num_shards` and `num_interactions` are singletons.
    """

    def __init__(
        self,
        output,
        *,
        num_items,
        num_shards,
        num_interactions,
        dupe_factor,
        max_seq_length,
        mask_prob,
        num_negatives,
        seed,
    ):
        super().__init__()
        self._num_items = num_items
        self._num_shards = num_shards
        self._num_interactions = num_interactions
        self._fn = WriteShardFn(output, dupe_factor, max_seq_length, mask_prob, num_negatives, seed)

    def expand(self, inputs):
        num_shards = beam.pvalue.AsSingleton(self._num_shards)
        histories = inputs["histories"] | "ToShard" >> beam.Map(
            lambda h, n: (int(h[0]) % n, (HISTORY_TAG, h)), num_shards
        )
        segments = inputs["segments"] | "TagSegments" >> beam.MapTuple(
            lambda shard, value: (shard, (SEGMENT_TAG, value))
        )
        every_shard = self._num_shards | "EveryShard" >> beam.FlatMap(
            lambda n: [(s, (SHARD_TAG, None)) for s in range(n)]
        )
        return (
            (histories, segments, every_shard)
            | "Flatten" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "Write"
            >> beam.ParDo(
                self._fn,
                beam.pvalue.AsSingleton(self._num_items),
                num_shards,
                beam.pvalue.AsSingleton(self._num_interactions),
            )
            | "Sum" >> beam.CombinePerKey(sum)
        )
