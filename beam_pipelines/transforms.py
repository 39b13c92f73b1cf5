"""The preprocessing job's steps, one composite PTransform each, and the job that chains them.

    Amazon reviews + metadata                 S3-Rec sequences + item2attributes
      ParseReviews, ParseMetadata               ParseS3RecSequences, ParseS3RecItemAttributes
      FilterRatings                             |
      BuildHistories (drops exact duplicates)   S3RecHistories (one line per user)
                      \\                        /
                       KCore -> AssignIds -> BuildItemAttributes
                       WriteExamples (split, negatives, pretraining; one DoFn per shard)
                       WriteDeadLetters, WriteFiles (vocab, sequences.txt, item2attributes.json)
                       metadata.json (last)

Each step returns a dict of PCollections. Besides its main output a step may return `stats`,
(name, count) pairs that end up in metadata.json, and `dead_letters` (see `parse`).

Determinism: all random choices are made per user (`pretrain_examples`), and every file is written
by exactly one DoFn call that orders its contents itself, so the bytes written do not depend on the
runner, the number of workers or the order of elements. Shards are assigned by user id
(user % num_shards), so the large pretraining data is generated where it is written and never
shuffled.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import posixpath
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil
from apache_beam.metrics import Metrics

from beam_pipelines import parse
from beam_pipelines import pretrain_examples as pe
from s3rec_tf import schema

import tensorflow as tf  # after s3rec_tf, which selects Keras 2  # isort: skip

_LOG = logging.getLogger(__name__)
METRICS_NAMESPACE = "s3rec.preprocess"
# Users whose pretraining examples are generated in one vectorized call (bounds memory).
_USERS_PER_CHUNK = 2000
DEAD_LETTER_FILE = schema.DEAD_LETTER_PREFIX + "-00000-of-00001.jsonl"

# Names of the `stats` entries in metadata.json.
DROPPED_BELOW_MIN_RATING = "dropped_below_min_rating"
DROPPED_WITHOUT_RATING = "dropped_without_rating"
DROPPED_DUPLICATE_EVENTS = "dropped_duplicate_events"
DROPPED_BY_KCORE_USERS = "dropped_by_kcore_users"
DROPPED_BY_KCORE_INTERACTIONS = "dropped_by_kcore_interactions"
KCORE_ROUNDS = "kcore_rounds"
STATS = (
    DROPPED_BELOW_MIN_RATING,
    DROPPED_WITHOUT_RATING,
    DROPPED_DUPLICATE_EVENTS,
    DROPPED_BY_KCORE_USERS,
    DROPPED_BY_KCORE_INTERACTIONS,
    KCORE_ROUNDS,
)


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """The job's options (see `beam_pipelines.preprocess` for their command-line help)."""

    output: str
    reviews: tuple[str, ...] = ()
    metadata: tuple[str, ...] = ()
    sequences: tuple[str, ...] = ()
    item2attributes: tuple[str, ...] = ()
    max_seq_length: int = 50
    mask_prob: float = 0.2
    dupe_factor: int = 1
    num_negatives: int = 99
    seed: int = 42
    user_core: int = 5
    item_core: int = 5
    min_rating: Optional[float] = None
    attribute_min_count: int = 1
    num_shards: int = 4

    @property
    def input_format(self) -> str:
        """'amazon' (raw reviews and metadata) or 's3rec' (the benchmark format, ids kept)."""
        return "s3rec" if self.sequences else "amazon"

    def validate(self) -> PreprocessConfig:
        """Returns self, or raises ValueError naming the option and the problem."""
        amazon = bool(self.reviews or self.metadata)
        s3rec = bool(self.sequences or self.item2attributes)
        if amazon == s3rec:
            raise ValueError(
                "Give either --reviews and --metadata (Amazon files) or --sequences and "
                "--item2attributes (S3-Rec format), not both and not neither."
            )
        if amazon and not (self.reviews and self.metadata):
            raise ValueError("--reviews and --metadata must be given together.")
        if s3rec and not (self.sequences and self.item2attributes):
            raise ValueError("--sequences and --item2attributes must be given together.")
        if s3rec and self.min_rating is not None:
            raise ValueError("--min_rating needs ratings; the S3-Rec format has none.")
        if not self.output:
            raise ValueError("--output must name a directory.")
        checks = (
            ("max_seq_length", self.max_seq_length >= 1, "must be >= 1"),
            ("mask_prob", 0.0 <= self.mask_prob <= 1.0, "must be in [0, 1]"),
            ("dupe_factor", self.dupe_factor >= 1, "must be >= 1"),
            ("num_negatives", self.num_negatives >= 1, "must be >= 1"),
            ("seed", self.seed >= 0, "must be >= 0"),
            (
                "user_core",
                self.user_core >= 3,
                "must be >= 3 (leave-one-out holds out two items and trains on the rest)",
            ),
            ("item_core", self.item_core >= 1, "must be >= 1"),
            ("attribute_min_count", self.attribute_min_count >= 1, "must be >= 1"),
            ("num_shards", self.num_shards >= 1, "must be >= 1"),
        )
        for name, ok, problem in checks:
            if not ok:
                raise ValueError(f"--{name}={getattr(self, name)!r} {problem}.")
        return self

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "input_format": self.input_format}


class _GatherFn(beam.CombineFn):
    """Collects every input but None into one list."""

    def create_accumulator(self):
        return []

    def add_input(self, accumulator, element):
        if element is not None:
            accumulator.append(element)
        return accumulator

    def merge_accumulators(self, accumulators):
        return [element for accumulator in accumulators for element in accumulator]

    def extract_output(self, accumulator):
        return accumulator


class Gather(beam.PTransform):
    """All elements (never None) of a PCollection -> one list; one empty list for no elements.

    Unlike `beam.combiners.ToList`, the list travels as an element: CombineGlobally's default
    value goes through a side input, whose size the SDK measures object by object, which costs
    seconds for a list of every user's history.
    """

    def expand(self, pcoll):
        anchor = pcoll.pipeline | "Anchor" >> beam.Create([(None, None)])
        return (
            (pcoll | "Key" >> beam.Map(lambda element: (None, element)), anchor)
            | "Flatten" >> beam.Flatten()
            | "Combine" >> beam.CombinePerKey(_GatherFn())
            | "Values" >> beam.Values()
        )


# ---------------------------------------------------------------------------------------------
# Step 1: parse and validate.
# ---------------------------------------------------------------------------------------------
class ReadLines(beam.PTransform):
    """File patterns -> (path, line number, line bytes) of every matching file.

    A pattern that matches nothing fails the job with the pattern in the message.
    """

    def __init__(self, patterns: Sequence[str]):
        super().__init__()
        self._patterns = list(patterns)

    def expand(self, pbegin):
        return (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "Match" >> fileio.MatchAll(fileio.EmptyMatchTreatment.DISALLOW)
            | "Paths" >> beam.Map(lambda metadata: metadata.path)
            | "SpreadFiles" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(parse.ReadFileLines())
        )


def _parsed(pbegin, patterns, parser, main):
    results = (
        pbegin
        | "ReadLines" >> ReadLines(patterns)
        | "Parse" >> beam.ParDo(parser).with_outputs(parse.DEAD_LETTER, main=main)
    )
    return {main: results[main], "dead_letters": results[parse.DEAD_LETTER]}


class ParseReviews(beam.PTransform):
    """Amazon review files (2014 or 2018, .gz or plain) -> {events: parse.Event, dead_letters}."""

    def __init__(self, patterns: Sequence[str]):
        super().__init__()
        self._patterns = patterns

    def expand(self, pbegin):
        return _parsed(pbegin, self._patterns, parse.ParseReviewLine(), "events")


class ParseMetadata(beam.PTransform):
    """Amazon metadata files -> {attributes: (asin, attribute names), dead_letters}."""

    def __init__(self, patterns: Sequence[str]):
        super().__init__()
        self._patterns = patterns

    def expand(self, pbegin):
        return _parsed(pbegin, self._patterns, parse.ParseMetaLine(), "attributes")


class ParseS3RecSequences(beam.PTransform):
    """S3-Rec sequence files -> {lines: (user, (path, line, items)), dead_letters}."""

    def __init__(self, patterns: Sequence[str]):
        super().__init__()
        self._patterns = patterns

    def expand(self, pbegin):
        return _parsed(pbegin, self._patterns, parse.ParseSequenceLine(), "lines")


class ParseS3RecItemAttributes(beam.PTransform):
    """S3-Rec item2attributes files -> {attributes: (item id, attribute ids), dead_letters}."""

    def __init__(self, patterns: Sequence[str]):
        super().__init__()
        self._patterns = list(patterns)

    def expand(self, pbegin):
        results = (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "Match" >> fileio.MatchAll(fileio.EmptyMatchTreatment.DISALLOW)
            | "Paths" >> beam.Map(lambda metadata: metadata.path)
            | "Parse"
            >> beam.ParDo(parse.ParseItemAttributesFile()).with_outputs(
                parse.DEAD_LETTER, main="attributes"
            )
        )
        return {"attributes": results["attributes"], "dead_letters": results[parse.DEAD_LETTER]}


# ---------------------------------------------------------------------------------------------
# Step 2: rating filter.
# ---------------------------------------------------------------------------------------------
@beam.typehints.with_output_types(parse.Event)
class _FilterRatingsFn(beam.DoFn):
    def __init__(self, min_rating: float):
        self._min_rating = min_rating
        self._below = Metrics.counter(METRICS_NAMESPACE, DROPPED_BELOW_MIN_RATING)
        self._unrated = Metrics.counter(METRICS_NAMESPACE, DROPPED_WITHOUT_RATING)

    def process(self, event: parse.Event):
        if event.rating is None:
            self._unrated.inc()
            yield beam.pvalue.TaggedOutput("stats", (DROPPED_WITHOUT_RATING, 1))
        elif event.rating < self._min_rating:
            self._below.inc()
            yield beam.pvalue.TaggedOutput("stats", (DROPPED_BELOW_MIN_RATING, 1))
        else:
            yield event


class FilterRatings(beam.PTransform):
    """Keeps events rated >= min_rating (None: keeps all) -> {events, stats}.

    With a threshold, events without a rating are dropped too.
    """

    def __init__(self, min_rating: Optional[float]):
        super().__init__()
        self._min_rating = min_rating

    def expand(self, events):
        if self._min_rating is None:
            return {"events": events, "stats": events.pipeline | "NoStats" >> beam.Create([])}
        results = events | "Filter" >> beam.ParDo(_FilterRatingsFn(self._min_rating)).with_outputs(
            "stats", main="events"
        )
        stats = results["stats"] | "Sum" >> beam.CombinePerKey(sum)
        return {"events": results["events"], "stats": stats}


# ---------------------------------------------------------------------------------------------
# Step 3: chronological histories.
# ---------------------------------------------------------------------------------------------
@beam.typehints.with_output_types(tuple[Any, tuple[Any, ...]])
class _HistoryFn(beam.DoFn):
    def __init__(self):
        self._duplicates = Metrics.counter(METRICS_NAMESPACE, DROPPED_DUPLICATE_EVENTS)

    def process(self, element):
        user, timed_items = element
        timed_items = list(timed_items)
        distinct = sorted(set(timed_items))
        if len(distinct) < len(timed_items):
            dropped = len(timed_items) - len(distinct)
            self._duplicates.inc(dropped)
            yield beam.pvalue.TaggedOutput("stats", (DROPPED_DUPLICATE_EVENTS, dropped))
        yield user, tuple(item for _, item in distinct)


class BuildHistories(beam.PTransform):
    """Events -> {histories: (user, items oldest first), stats}.

    Exact duplicate (user, item, time) events are dropped; events with equal times are ordered by
    item id, so the order never depends on the input's order.
    """

    def expand(self, events):
        results = (
            events
            | "ByUser" >> beam.Map(lambda e: (e.user, (e.time, e.item)))
            | "Group" >> beam.GroupByKey()
            | "Order" >> beam.ParDo(_HistoryFn()).with_outputs("stats", main="histories")
        )
        stats = results["stats"] | "Sum" >> beam.CombinePerKey(sum)
        return {"histories": results["histories"], "stats": stats}


@beam.typehints.with_output_types(tuple[int, tuple[int, ...]])
class _FirstLineFn(beam.DoFn):
    def __init__(self):
        self._duplicates = Metrics.counter(parse.METRICS_NAMESPACE, parse.DUPLICATE_USER)

    def process(self, element):
        user, lines = element
        first, *others = sorted(lines)
        for path, line_no, items in others:
            self._duplicates.inc()
            record = " ".join(map(str, (user, *items)))
            detail = f"user {user} already has a line in {first[0]} line {first[1]}"
            yield beam.pvalue.TaggedOutput(
                parse.DEAD_LETTER,
                parse.dead_letter(path, line_no, parse.DUPLICATE_USER, detail, record),
            )
        yield user, first[2]


class S3RecHistories(beam.PTransform):
    """S3-Rec lines -> {histories: (user, items), dead_letters}: a line already is a history.

    A user with several lines keeps the first (by file and line); the others are dead letters.
    """

    def expand(self, lines):
        results = (
            lines
            | "Group" >> beam.GroupByKey()
            | "First"
            >> beam.ParDo(_FirstLineFn()).with_outputs(parse.DEAD_LETTER, main="histories")
        )
        return {"histories": results["histories"], "dead_letters": results[parse.DEAD_LETTER]}


# ---------------------------------------------------------------------------------------------
# Step 4: iterative k-core.
# ---------------------------------------------------------------------------------------------
def kcore(histories: Sequence[tuple], user_core: int, item_core: int):
    """The largest sub-data set in which every user has >= user_core interactions and every item
    >= item_core (repeats count), found by removing violators until none are left.

    That set is unique, so the result does not depend on the removal order; the reference removes
    in a different order and reaches the same set. Returns (kept histories, rounds, users dropped,
    interactions dropped); kept histories keep their order.
    """
    histories = list(histories)
    lengths = np.fromiter((len(items) for _, items in histories), np.int64, len(histories))
    codes: dict = {}
    flat = np.fromiter(
        (codes.setdefault(i, len(codes)) for _, items in histories for i in items),
        np.int64,
        int(lengths.sum()),
    )
    user_of = np.repeat(np.arange(len(histories)), lengths)
    alive = np.ones(len(flat), dtype=bool)
    rounds = 0
    while True:
        item_count = np.bincount(flat[alive], minlength=len(codes))
        user_count = np.bincount(user_of[alive], minlength=len(histories))
        drop = alive & ((item_count[flat] < item_core) | (user_count[user_of] < user_core))
        if not drop.any():
            break
        alive &= ~drop
        rounds += 1
    kept = []
    for (user, items), keep in zip(histories, np.split(alive, np.cumsum(lengths)[:-1])):
        if keep.all():
            kept.append((user, tuple(items)))
        elif keep.any():
            kept.append((user, tuple(itertools.compress(items, keep))))
    return kept, rounds, len(histories) - len(kept), int(len(flat) - alive.sum())


class KCore(beam.PTransform):
    """Histories -> {histories, stats}: iterative user/item k-core filtering to convergence.

    The fixed point depends on all interactions at once, so the (compact) histories are brought
    together and filtered with NumPy in one call; at Amazon scale that is a few hundred MB.
    """

    def __init__(self, user_core: int, item_core: int):
        super().__init__()
        self._user_core = user_core
        self._item_core = item_core

    def expand(self, histories):
        results = (
            histories
            | "All" >> Gather()
            | "Filter"
            >> beam.FlatMap(_kcore_fn, self._user_core, self._item_core)
            .with_output_types(tuple[Any, tuple[Any, ...]])
            .with_outputs("stats", main="histories")
        )
        return {"histories": results["histories"], "stats": results["stats"]}


def _kcore_fn(all_histories, user_core, item_core):
    kept, rounds, users, interactions = kcore(all_histories, user_core, item_core)
    _LOG.info(
        "k-core (users %d, items %d): %d rounds, dropped %d users and %d interactions",
        user_core,
        item_core,
        rounds,
        users,
        interactions,
    )
    if not kept:
        _LOG.warning(
            "No user has %d interactions on items with %d interactions each: the output is empty.",
            user_core,
            item_core,
        )
    yield beam.pvalue.TaggedOutput("stats", (KCORE_ROUNDS, rounds))
    yield beam.pvalue.TaggedOutput("stats", (DROPPED_BY_KCORE_USERS, users))
    yield beam.pvalue.TaggedOutput("stats", (DROPPED_BY_KCORE_INTERACTIONS, interactions))
    yield from kept


# ---------------------------------------------------------------------------------------------
# Step 5: deterministic ids.
# ---------------------------------------------------------------------------------------------
def assign_ids(histories: Iterable[tuple], keep_raw_ids: bool):
    """Histories with raw ids -> (histories with ids sorted by user id, item vocab, user vocab,
    (raw item id, item id) pairs of the items in the data).

    Histories come back as (user id, tuple of item ids); vocab entry k - 1 is the raw id of id k.
    """
    histories = list(histories)
    users = sorted(user for user, _ in histories)
    items = sorted({item for _, raw_items in histories for item in raw_items})
    if keep_raw_ids:
        item_vocab = [str(k) for k in range(1, (items[-1] if items else 0) + 1)]
        user_vocab = [str(k) for k in range(1, (users[-1] if users else 0) + 1)]
        item_pairs = [(item, item) for item in items]
        with_ids = [(user, tuple(raw_items)) for user, raw_items in histories]
    else:
        user_ids = {raw: k for k, raw in enumerate(users, start=1)}
        item_ids = {raw: k for k, raw in enumerate(items, start=1)}
        item_vocab, user_vocab = list(items), list(users)
        item_pairs = list(item_ids.items())
        with_ids = [
            (user_ids[user], tuple(item_ids[i] for i in raw_items)) for user, raw_items in histories
        ]
    with_ids.sort()
    return with_ids, item_vocab, user_vocab, item_pairs


def _assign_ids_fn(histories, keep_raw_ids):
    with_ids, item_vocab, user_vocab, item_pairs = assign_ids(histories, keep_raw_ids)
    yield beam.pvalue.TaggedOutput("sorted", with_ids)
    yield beam.pvalue.TaggedOutput("item_vocab", item_vocab)
    yield beam.pvalue.TaggedOutput("user_vocab", user_vocab)
    for pair in item_pairs:
        yield beam.pvalue.TaggedOutput("item_ids", pair)
    yield from with_ids


class AssignIds(beam.PTransform):
    """Histories with raw ids -> project ids: items 1..N (0 = padding, N + 1 = mask), users 1..U.

    Raw ids are numbered in sorted order, so the ids depend only on which ids survive. With
    `keep_raw_ids` (the S3-Rec format, integer ids) every id stays as it is and N, U are the
    largest ids. Like `KCore`, this needs every history at once (to sort the raw ids), so it is
    one call over all of them, which also orders them for the files that list every user.

    Returns {histories: (user id, tuple of item ids), sorted: one list of those by user id,
    item_ids: (raw item id, item id) pairs, item_vocab / user_vocab: one list each, entry k - 1 =
    raw id of id k}.
    """

    def __init__(self, keep_raw_ids: bool):
        super().__init__()
        self._keep = keep_raw_ids

    def expand(self, histories):
        results = (
            histories
            | "All" >> Gather()
            | "Assign"
            >> beam.FlatMap(_assign_ids_fn, self._keep)
            .with_output_types(tuple[int, tuple[int, ...]])
            .with_outputs("sorted", "item_vocab", "user_vocab", "item_ids", main="histories")
        )
        return {
            name: results[name]
            for name in ("histories", "sorted", "item_ids", "item_vocab", "user_vocab")
        }


# ---------------------------------------------------------------------------------------------
# Step 6: attributes.
# ---------------------------------------------------------------------------------------------
def attribute_table(
    item_attributes: Iterable[tuple], min_count: int, keep_raw_ids: bool
) -> tuple[dict, list]:
    """(item id, attribute names) of the kept items -> ({item id: sorted attribute ids}, vocab).

    An attribute is kept when at least `min_count` items carry it; kept names are numbered 1..M
    in sorted order (with `keep_raw_ids`, integer attribute ids stay as they are and M is the
    largest kept id). Items whose attributes were all dropped keep an empty list.
    """
    item_attributes = sorted(item_attributes)
    counts: dict = {}
    for _, names in item_attributes:
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    kept = sorted(name for name, count in counts.items() if count >= min_count)
    if keep_raw_ids:
        ids = {name: name for name in kept}
        vocab = [str(k) for k in range(1, (kept[-1] if kept else 0) + 1)]
    else:
        ids = {name: k for k, name in enumerate(kept, start=1)}
        vocab = [str(name) for name in kept]
    table = {
        item: sorted(ids[name] for name in names if name in ids) for item, names in item_attributes
    }
    return table, vocab


def _join_item_ids(element):
    """(raw item, {ids: [id], attributes: [names, ...]}) -> (item id, merged names)."""
    _, joined = element
    if joined["ids"] and joined["attributes"]:
        (item_id,) = joined["ids"]
        yield item_id, tuple(sorted(set().union(*joined["attributes"])))


class BuildItemAttributes(beam.PTransform):
    """{attributes: (raw item, attribute names), item_ids: (raw, id)} -> {table, attribute_vocab}.

    Attributes of items that are not in the data are dropped; several metadata records of one
    item are merged. `table` is one dict {item id: sorted attribute ids} (items without metadata
    have no entry) and `attribute_vocab` one list (entry k - 1 = name of attribute k).
    """

    def __init__(self, min_count: int, keep_raw_ids: bool):
        super().__init__()
        self._min_count = min_count
        self._keep = keep_raw_ids

    def expand(self, inputs):
        tables = (
            {"ids": inputs["item_ids"], "attributes": inputs["attributes"]}
            | "JoinItemIds" >> beam.CoGroupByKey()
            | "KnownItems" >> beam.FlatMap(_join_item_ids)
            | "All" >> Gather()
            | "Table" >> beam.Map(attribute_table, self._min_count, self._keep)
        )
        return {
            "table": tables | "TableOnly" >> beam.Map(lambda t: t[0]),
            "attribute_vocab": tables | "VocabOnly" >> beam.Map(lambda t: t[1]),
        }


# ---------------------------------------------------------------------------------------------
# Steps 7-9: split, negatives and pretraining examples, written per shard.
# ---------------------------------------------------------------------------------------------
def long_sequence(sorted_histories) -> np.ndarray:
    """All users' sequences concatenated in user-id order: the source of SP negative segments."""
    return np.fromiter(
        (item for _, items in sorted_histories for item in items),
        np.int64,
        sum(len(items) for _, items in sorted_histories),
    )


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
class _WriteShardFn(beam.DoFn):
    """(shard, user histories) -> the shard's train/valid/test and pretraining files.

    Users are written in id order; a retried call rewrites the same bytes.
    """

    def __init__(
        self, output, num_shards, dupe_factor, max_seq_length, mask_prob, num_negatives, seed
    ):
        self._output = output
        self._num_shards = num_shards
        self._dupe_factor = dupe_factor
        self._max_seq_length = max_seq_length
        self._mask_prob = mask_prob
        self._num_negatives = num_negatives
        self._seed = seed
        self._pretrain_examples = Metrics.counter(METRICS_NAMESPACE, "pretrain_examples")
        self._users = Metrics.counter(METRICS_NAMESPACE, "users_written")

    def _create(self, prefix, shard):
        path = shard_path(self._output, prefix, shard, self._num_shards)
        return FileSystems.create(
            path,
            mime_type="application/octet-stream",
            compression_type=CompressionTypes.UNCOMPRESSED,
        )

    def process(self, element, long_sequence, num_items):
        shard, users = element
        users = sorted((u for u in users if u is not None), key=lambda u: u[0])
        yield ("users", len(users))
        self._users.inc(len(users))
        yield from self._write_splits(shard, users, num_items)
        for duplicate in range(self._dupe_factor):
            count = self._write_pretraining(shard, users, num_items, long_sequence, duplicate)
            self._pretrain_examples.inc(count)
            yield (schema.pretrain_prefix(duplicate), count)

    def _write_splits(self, shard, users, num_items):
        negatives = pe.sample_negatives(
            users, seed=self._seed, num_items=num_items, num_negatives=self._num_negatives
        ).tolist()
        files = {split: self._create(schema.split_prefix(split), shard) for split in schema.SPLITS}
        try:
            for (user, items), user_negatives in zip(users, negatives):
                split = pe.leave_one_out(items)
                records = {
                    "train": {
                        schema.USER: [user],
                        schema.HISTORY: split.train_history,
                        schema.HELDOUT: split.heldout,
                    },
                    "valid": {
                        schema.USER: [user],
                        schema.HISTORY: split.valid_history,
                        schema.TARGET: [split.valid_target],
                        schema.NEGATIVES: user_negatives,
                    },
                    "test": {
                        schema.USER: [user],
                        schema.HISTORY: split.test_history,
                        schema.TARGET: [split.test_target],
                        schema.NEGATIVES: user_negatives,
                    },
                }
                for name, features in records.items():
                    _TFRecordUtil.write_record(files[name], serialize_example(features))
        finally:
            for f in files.values():
                f.close()
        for split in schema.SPLITS:
            yield (schema.split_prefix(split), len(users))

    def _write_pretraining(self, shard, users, num_items, long_sequence, duplicate):
        count = 0
        with self._create(schema.pretrain_prefix(duplicate), shard) as f:
            for chunk in range(0, len(users), _USERS_PER_CHUNK):
                examples = pe.make_pretrain_examples(
                    users[chunk : chunk + _USERS_PER_CHUNK],
                    seed=self._seed,
                    duplicate=duplicate,
                    max_seq_length=self._max_seq_length,
                    mask_prob=self._mask_prob,
                    num_items=num_items,
                    long_sequence=long_sequence,
                )
                fields = [
                    (name, getattr(examples, name).tolist()) for name in schema.PRETRAIN_SEQUENCES
                ]
                splits = examples.row_splits.tolist()
                for user, lo, hi in zip(examples.user.tolist(), splits[:-1], splits[1:]):
                    features = {schema.USER: [user]}
                    for name, values in fields:
                        features[name] = values[lo:hi]
                    _TFRecordUtil.write_record(f, serialize_example(features))
                count += examples.num_examples
        return count


class WriteExamples(beam.PTransform):
    """Histories with ids -> TFRecord shards; returns (prefix or 'users', count) pairs.

    Writes, for every shard s (users with id % num_shards == s), the train/valid/test examples
    (`schema.TRAIN_FEATURES` / `EVAL_FEATURES`) and one pretraining file per duplicate
    (`schema.PRETRAIN_FEATURES`). Every shard file exists, empty or not.
    """

    def __init__(
        self,
        output,
        *,
        long_sequence,
        num_items,
        num_shards,
        dupe_factor,
        max_seq_length,
        mask_prob,
        num_negatives,
        seed,
    ):
        super().__init__()
        self._long_sequence = long_sequence
        self._num_items = num_items
        self._num_shards = num_shards
        self._fn = _WriteShardFn(
            output, num_shards, dupe_factor, max_seq_length, mask_prob, num_negatives, seed
        )

    def expand(self, histories):
        num_shards = self._num_shards
        keyed = histories | "ToShard" >> beam.Map(lambda h: (int(h[0]) % num_shards, h))
        every_shard = histories.pipeline | "EveryShard" >> beam.Create(
            [(s, None) for s in range(num_shards)]
        )
        return (
            (keyed, every_shard)
            | "Flatten" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "Write"
            >> beam.ParDo(
                self._fn,
                beam.pvalue.AsSingleton(self._long_sequence),
                beam.pvalue.AsSingleton(self._num_items),
            )
            | "Sum" >> beam.CombinePerKey(sum)
        )


# ---------------------------------------------------------------------------------------------
# Small files, dead letters and metadata.
# ---------------------------------------------------------------------------------------------
@beam.typehints.with_output_types(str)
class _WriteFileFn(beam.DoFn):
    def __init__(self, output):
        self._output = output

    def process(self, element):
        relative_path, content = element
        with FileSystems.create(
            posixpath.join(self._output, relative_path),
            compression_type=CompressionTypes.UNCOMPRESSED,
        ) as f:
            f.write(content.encode("utf-8") if isinstance(content, str) else content)
        yield relative_path


class WriteFiles(beam.PTransform):
    """(path relative to `output`, str or bytes) -> the files; returns the relative paths."""

    def __init__(self, output: str):
        super().__init__()
        self._output = output

    def expand(self, files):
        return files | "Write" >> beam.ParDo(_WriteFileFn(self._output))


def lines_text(lines: Iterable[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def sequences_text(sorted_histories) -> str:
    """S3-Rec format: 'user item item ...' per user, in user-id order."""
    return lines_text(" ".join(map(str, (user, *items))) for user, items in sorted_histories)


def item2attributes_text(table: dict) -> str:
    """S3-Rec format: one JSON object {"item id": [attribute ids]} in item-id order."""
    return json.dumps({str(item): table[item] for item in sorted(table)})


def _dead_letter_key(letter):
    return (letter["file"], letter["line"] or 0, letter["reason"], letter["record"])


class WriteDeadLetters(beam.PTransform):
    """Dead letters -> the dead-letter file (JSON lines, sorted by file and line); returns one
    dict {kind: count} holding every kind in `kinds` (zero if absent)."""

    def __init__(self, output: str, kinds: Sequence[str]):
        super().__init__()
        self._output = output
        self._kinds = tuple(kinds)

    def expand(self, dead_letters):
        kinds = self._kinds
        ordered = (
            dead_letters
            | "All" >> Gather()
            | "Sort" >> beam.Map(lambda letters: sorted(letters, key=_dead_letter_key))
        )
        written = (
            ordered
            | "Lines"
            >> beam.Map(
                lambda letters: (
                    DEAD_LETTER_FILE,
                    lines_text(json.dumps(letter, sort_keys=True) for letter in letters),
                )
            )
            | "Write" >> WriteFiles(self._output)
        )

        def count(letters, _written):
            counts = dict.fromkeys(kinds, 0)
            for letter in letters:
                counts[letter["reason"]] = counts.get(letter["reason"], 0) + 1
            return dict(sorted(counts.items()))

        return ordered | "Count" >> beam.Map(count, beam.pvalue.AsList(written))


def metadata_json(
    config: dict,
    *,
    num_users,
    num_items,
    num_attributes,
    num_interactions,
    written: dict,
    bad_records: dict,
    stats: dict,
) -> str:
    """metadata.json: every key of `schema.METADATA_KEYS`, plus shard counts and stats."""
    dupe_factor = config["dupe_factor"]
    per_duplicate = [written.get(schema.pretrain_prefix(k), 0) for k in range(dupe_factor)]
    if len(set(per_duplicate)) > 1:
        raise RuntimeError(f"Pretraining duplicates differ in size: {per_duplicate}")
    metadata = {
        "format_version": schema.FORMAT_VERSION,
        "num_users": num_users,
        "num_items": num_items,
        "num_attributes": num_attributes,
        "num_interactions": num_interactions,
        "num_pretrain_examples": per_duplicate[0],
        "dupe_factor": dupe_factor,
        "max_seq_length": config["max_seq_length"],
        "mask_id": num_items + 1,
        "num_negatives": config["num_negatives"],
        "num_bad_records": bad_records,
        "config": config,
        "input_format": config["input_format"],
        "num_shards": config["num_shards"],
        "num_split_examples": {s: written.get(schema.split_prefix(s), 0) for s in schema.SPLITS},
        "stats": {name: stats.get(name, 0) for name in STATS},
    }
    missing = set(schema.METADATA_KEYS) - set(metadata)
    if missing:
        raise RuntimeError(f"metadata.json lacks the schema's keys {sorted(missing)}")
    return json.dumps(metadata, indent=2, sort_keys=True) + "\n"


# ---------------------------------------------------------------------------------------------
# The job.
# ---------------------------------------------------------------------------------------------
class Preprocess(beam.PTransform):
    """The whole job: input files -> everything under `config.output` (see the README)."""

    def __init__(self, config: PreprocessConfig):
        super().__init__()
        self._config = config.validate()

    def expand(self, pbegin):
        c = self._config
        dead_letters, stats = [], []
        if c.input_format == "amazon":
            reviews = pbegin | "ParseReviews" >> ParseReviews(c.reviews)
            meta = pbegin | "ParseMetadata" >> ParseMetadata(c.metadata)
            rated = reviews["events"] | "FilterRatings" >> FilterRatings(c.min_rating)
            built = rated["events"] | "BuildHistories" >> BuildHistories()
            dead_letters += [reviews["dead_letters"], meta["dead_letters"]]
            stats += [rated["stats"], built["stats"]]
            raw_attributes = meta["attributes"]
            kinds = parse.AMAZON_KINDS
        else:
            lines = pbegin | "ParseSequences" >> ParseS3RecSequences(c.sequences)
            table = pbegin | "ParseItemAttributes" >> ParseS3RecItemAttributes(c.item2attributes)
            built = lines["lines"] | "S3RecHistories" >> S3RecHistories()
            dead_letters += [lines["dead_letters"], table["dead_letters"], built["dead_letters"]]
            raw_attributes = table["attributes"]
            kinds = parse.ALL_S3REC_KINDS
        keep_raw_ids = c.input_format == "s3rec"

        core = built["histories"] | "KCore" >> KCore(c.user_core, c.item_core)
        stats.append(core["stats"])
        ids = core["histories"] | "AssignIds" >> AssignIds(keep_raw_ids)
        attributes = {
            "attributes": raw_attributes,
            "item_ids": ids["item_ids"],
        } | "ItemAttributes" >> BuildItemAttributes(c.attribute_min_count, keep_raw_ids)
        long_seq = ids["sorted"] | "LongSequence" >> beam.Map(long_sequence)
        num_items = ids["item_vocab"] | "NumItems" >> beam.Map(len)

        written = ids["histories"] | "WriteExamples" >> WriteExamples(
            c.output,
            long_sequence=long_seq,
            num_items=num_items,
            num_shards=c.num_shards,
            dupe_factor=c.dupe_factor,
            max_seq_length=c.max_seq_length,
            mask_prob=c.mask_prob,
            num_negatives=c.num_negatives,
            seed=c.seed,
        )
        texts = [
            ids["item_vocab"] | "ItemVocabText" >> beam.Map(_named_text, schema.ITEM_VOCAB),
            ids["user_vocab"] | "UserVocabText" >> beam.Map(_named_text, schema.USER_VOCAB),
            attributes["attribute_vocab"]
            | "AttributeVocabText" >> beam.Map(_named_text, schema.ATTRIBUTE_VOCAB),
            ids["sorted"]
            | "SequencesText" >> beam.Map(lambda hs: (schema.SEQUENCES_FILE, sequences_text(hs))),
            attributes["table"]
            | "Item2AttributesText"
            >> beam.Map(lambda t: (schema.ITEM2ATTRIBUTES_FILE, item2attributes_text(t))),
        ]
        text_files = texts | "FlattenTexts" >> beam.Flatten() | "WriteFiles" >> WriteFiles(c.output)
        bad_records = (
            dead_letters
            | "FlattenDeadLetters" >> beam.Flatten()
            | "WriteDeadLetters" >> WriteDeadLetters(c.output, kinds)
        )
        all_stats = stats | "FlattenStats" >> beam.Flatten() | "SumStats" >> beam.CombinePerKey(sum)
        sizes = [
            ids["item_vocab"] | "NumItemsSize" >> beam.Map(lambda v: ("num_items", len(v))),
            ids["user_vocab"] | "NumUsersSize" >> beam.Map(lambda v: ("num_users", len(v))),
            attributes["attribute_vocab"]
            | "NumAttributesSize" >> beam.Map(lambda v: ("num_attributes", len(v))),
            long_seq | "NumInteractionsSize" >> beam.Map(lambda s: ("num_interactions", len(s))),
        ] | "FlattenSizes" >> beam.Flatten()

        config = c.to_dict()

        def metadata(_, sizes, written, bad_records, stats, _files):
            return schema.METADATA_FILE, metadata_json(
                config, **sizes, written=written, bad_records=bad_records, stats=stats
            )

        # Written last (its side inputs include every other output), so that a reader that finds
        # metadata.json finds complete data beside it.
        return (
            pbegin
            | "MetadataTrigger" >> beam.Create([None])
            | "Metadata"
            >> beam.Map(
                metadata,
                beam.pvalue.AsDict(sizes),
                beam.pvalue.AsDict(written),
                beam.pvalue.AsSingleton(bad_records),
                beam.pvalue.AsDict(all_stats),
                beam.pvalue.AsList(text_files),
            )
            | "WriteMetadata" >> WriteFiles(c.output)
        )


def _named_text(lines, path):
    return path, lines_text(lines)


def remove_previous_outputs(output: str) -> list[str]:
    """Deletes what an earlier run of the job left under `output` (only the job's own file names),
    so that no stale shard of a run with more shards or duplicates survives. Returns the paths."""
    patterns = [
        schema.METADATA_FILE,  # first: without it the directory does not claim to be complete
        schema.SEQUENCES_FILE,
        schema.ITEM2ATTRIBUTES_FILE,
        schema.ITEM_VOCAB,
        schema.USER_VOCAB,
        schema.ATTRIBUTE_VOCAB,
        schema.DEAD_LETTER_PREFIX + "-*",
        posixpath.join(schema.PRETRAIN_DIR, "dupe-*", "part-*" + schema.TFRECORD_SUFFIX),
        *(schema.split_prefix(s) + "-*" + schema.TFRECORD_SUFFIX for s in schema.SPLITS),
    ]
    removed = []
    for pattern in patterns:
        (match,) = FileSystems.match([posixpath.join(output, pattern)])
        paths = sorted(m.path for m in match.metadata_list)
        if paths:
            FileSystems.delete(paths)
            removed += paths
    return removed


def check_inputs(flag: str, patterns: Sequence[str]) -> list[str]:
    """Fails fast, naming the flag and pattern, when a pattern matches no readable file."""
    files = []
    for pattern in patterns:
        try:
            (match,) = FileSystems.match([pattern])
        except Exception as e:  # each file system raises its own error types
            raise FileNotFoundError(f"{flag} {pattern!r}: cannot list files: {e}") from e
        paths = sorted(m.path for m in match.metadata_list)
        if not paths:
            raise FileNotFoundError(f"{flag} {pattern!r} matches no files.")
        for path in paths:
            try:
                with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                    f.read(1)
            except Exception as e:
                raise OSError(f"{flag} {pattern!r}: cannot read {path}: {e}") from e
        files += paths
    return files
