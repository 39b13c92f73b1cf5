"""The preprocessing job's steps, one composite PTransform each (the job that chains them is
`beam_pipelines.job`).

    Amazon reviews + metadata                 S3-Rec sequences + item2attributes
      ParseReviews, ParseMetadata               ParseS3RecSequences, ParseS3RecItemAttributes
      FilterRatings                             |
      BuildHistories (drops exact duplicates)   S3RecHistories (one line per user)
                      \\                        /
                KCore (unrolled rounds) -> AssignIds (distributed rank) -> BuildItemAttributes
                UserBlocks (sequences.txt parts, the long sequence, SP segment look-ups)
                NegativeSegments -> WriteExamples (split, negatives, pretraining; per shard)

Scaling: no step brings the data set to one worker. Work is keyed by user, item, attribute,
range bucket, block of user ids or block of long-sequence positions; the only side inputs are
small (counts, sums per bucket or block, bucket boundaries from a fixed-size sample).

Determinism: random choices are made per (user, duplicate) (`pretrain_examples`), ids are exact
ranks, and every file is written by one DoFn call that orders its own contents, so the bytes
written do not depend on the runner, the number of workers or the order of elements.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Optional

import apache_beam as beam
import numpy as np
from apache_beam.io import fileio
from apache_beam.metrics import Metrics

from beam_pipelines import algorithms, parse, writers
from beam_pipelines import pretrain_examples as pe

_LOG = logging.getLogger(__name__)
METRICS_NAMESPACE = "s3rec.preprocess"

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
# Users per block of user ids (one part of sequences.txt, one piece of the long sequence).
USERS_PER_BLOCK = 20_000
# Positions of the long sequence per look-up block.
POSITIONS_PER_BLOCK = 1 << 16
# Distinct values per range bucket of a distributed rank, and the sample its bounds come from.
VALUES_PER_BUCKET = 100_000
RANK_SAMPLE_SIZE = 10_000


def _sum_globally(pcoll, label):
    return pcoll | label >> beam.CombineGlobally(sum)


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
    """Amazon review files (2014, 2018 or 2023; .gz or plain) -> {events, dead_letters}."""

    def __init__(self, patterns: Sequence[str], layout: str = parse.AUTO):
        super().__init__()
        self._patterns = patterns
        self._layout = layout

    def expand(self, pbegin):
        return _parsed(pbegin, self._patterns, parse.ParseReviewLine(self._layout), "events")


class ParseMetadata(beam.PTransform):
    """Amazon metadata files -> {attributes: (item, attribute names), dead_letters}."""

    def __init__(self, patterns: Sequence[str], layout: str = parse.AUTO):
        super().__init__()
        self._patterns = patterns
        self._layout = layout

    def expand(self, pbegin):
        return _parsed(pbegin, self._patterns, parse.ParseMetaLine(self._layout), "attributes")


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
        first, others = algorithms.first_line(lines)
        for path, line_no, items in others:
            self._duplicates.inc()
            record = algorithms.sequence_line(user, items)
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
# Step 4: iterative k-core, as unrolled rounds.
# ---------------------------------------------------------------------------------------------
@beam.typehints.with_output_types(tuple[Any, tuple[Any, ...]])
class _KCoreRoundFn(beam.DoFn):
    """(user, [(_HISTORY, items), (_RARE, item), ...]) -> (user, kept items); (None, (users
    dropped, interactions dropped)) on the "changes" output."""

    def __init__(self, user_core: int):
        self._user_core = user_core
        self._users = Metrics.counter(METRICS_NAMESPACE, "kcore_round_users_dropped")
        self._interactions = Metrics.counter(METRICS_NAMESPACE, "kcore_round_interactions_dropped")

    def process(self, element):
        user, tagged = element
        histories, rare = [], []
        for tag, value in tagged:
            (histories if tag == _HISTORY else rare).append(value)
        for items in histories:  # exactly one history per user
            kept, dropped = algorithms.apply_kcore_round(items, rare, self._user_core)
            if dropped:
                users = int(kept is None)
                self._users.inc(users)
                self._interactions.inc(dropped)
                yield beam.pvalue.TaggedOutput("changes", (None, (users, dropped)))
            if kept is not None:
                yield user, kept


_HISTORY, _RARE = "h", "r"


def _sum_pairs(pairs):
    users = interactions = 0
    for u, i in pairs:
        users += u
        interactions += i
    return users, interactions


@beam.typehints.with_output_types(tuple[Any, Any])
class _StartRoundFn(beam.DoFn):
    """A round's first step: if the previous round changed nothing, the history is final ("done")
    and the later rounds get nothing to do; else it takes part: the main output passes it on,
    "items" names its distinct items ((item, (user, n)))."""

    def process(self, history, previous_changes):
        # previous_changes: [] or [(users, interactions)] of the previous round (None: round 1).
        if previous_changes is not None and not any(c[1] for c in previous_changes):
            yield beam.pvalue.TaggedOutput("done", history)
            return
        yield history[0], (_HISTORY, history[1])
        for occurrence in algorithms.item_occurrences(history):
            yield beam.pvalue.TaggedOutput("items", occurrence)


def kcore_stats(
    round_changes: Sequence[tuple], max_rounds: int, user_core: int, item_core: int
) -> list:
    """[(round, (users dropped, interactions dropped))] of rounds 1..max_rounds + 1 -> the stats;
    raises RuntimeError when round max_rounds + 1 still had something to remove."""
    changes = dict(round_changes)
    last = changes.get(max_rounds + 1, (0, 0))
    if last[1]:
        raise RuntimeError(
            f"k-core (users {user_core}, items {item_core}) did not converge within "
            f"--kcore_max_rounds={max_rounds} rounds: round {max_rounds + 1} would still remove "
            f"{last[1]} interactions. Rerun with a larger --kcore_max_rounds; no metadata.json "
            "was written."
        )
    rounds = sum(1 for r in range(1, max_rounds + 1) if changes.get(r, (0, 0))[1])
    users = sum(changes.get(r, (0, 0))[0] for r in range(1, max_rounds + 1))
    interactions = sum(changes.get(r, (0, 0))[1] for r in range(1, max_rounds + 1))
    _LOG.info(
        "k-core (users %d, items %d): %d rounds, dropped %d users and %d interactions",
        user_core,
        item_core,
        rounds,
        users,
        interactions,
    )
    return [
        (KCORE_ROUNDS, rounds),
        (DROPPED_BY_KCORE_USERS, users),
        (DROPPED_BY_KCORE_INTERACTIONS, interactions),
    ]


class KCore(beam.PTransform):
    """Histories -> {histories, stats}: iterative user/item k-core filtering (the fixed point of
    `algorithms.kcore`, with the same round count), as `max_rounds` + 1 unrolled rounds.

    A round: every history names its distinct items ((item, (user, n)), grouped by item); an item
    with fewer than item_core interactions sends (user, item) to its users (at most item_core of
    them); each user joins its history with those (CoGroupByKey) and drops them, or drops itself
    if it had fewer than user_core interactions. The round's changes are summed globally into a
    small side input of the next round's first step: after a round that changed nothing every
    history goes to the output, so the later rounds run on empty input. Round max_rounds + 1
    only checks: if it would still remove something the job fails (naming --kcore_max_rounds)
    before anything depends on its output.
    """

    def __init__(self, user_core: int, item_core: int, max_rounds: int):
        super().__init__()
        self._user_core = user_core
        self._item_core = item_core
        self._max_rounds = max_rounds

    def expand(self, histories):
        item_core, user_core = self._item_core, self._user_core
        kept, changes, done, round_changes = histories, None, [], []
        for r in range(1, self._max_rounds + 3):
            started = kept | f"Round{r}Start" >> beam.ParDo(
                _StartRoundFn(), None if changes is None else beam.pvalue.AsList(changes)
            ).with_outputs("done", "items", main="active")
            done.append(started["done"])
            if r == self._max_rounds + 2:  # only routes the check round's output
                break
            rare = (
                started["items"]
                | f"Round{r}ByItem" >> beam.GroupByKey()
                | f"Round{r}Rare"
                >> beam.FlatMap(
                    lambda kv, core: [
                        (user, (_RARE, item))
                        for user, item in algorithms.rare_item_users(kv[0], kv[1], core)
                    ],
                    item_core,
                ).with_output_types(tuple[Any, Any])
            )
            # A join by user as Flatten + GroupByKey of tagged values (a CoGroupByKey expands to
            # many more transforms, and every round has one).
            result = (
                (started["active"], rare)
                | f"Round{r}Flatten" >> beam.Flatten()
                | f"Round{r}Join" >> beam.GroupByKey()
                | f"Round{r}Apply"
                >> beam.ParDo(_KCoreRoundFn(user_core)).with_outputs("changes", main="kept")
            )
            kept = result["kept"]
            # Summed per constant key, not CombineGlobally: no default value to inject (a round
            # that changed nothing gives no element), which saves stages in every round.
            changes = (
                result["changes"]
                | f"Round{r}Changes" >> beam.CombinePerKey(_sum_pairs)
                | f"Round{r}Sum" >> beam.Values()
            )
            round_changes.append(changes | f"Round{r}Number" >> beam.Map(lambda c, r=r: (r, c)))
        max_rounds = self._max_rounds
        stats = (
            round_changes
            | "FlattenChanges" >> beam.Flatten()
            | "AllRounds" >> beam.combiners.ToList()
            | "Check" >> beam.FlatMap(kcore_stats, max_rounds, user_core, item_core)
        )
        # The output waits for the check, so nothing is written when k-core did not converge.
        kept = (
            done
            | "FlattenDone" >> beam.Flatten()
            | "AfterCheck" >> beam.Map(lambda h, _: h, beam.pvalue.AsList(stats))
        )
        return {"histories": kept, "stats": stats}


# ---------------------------------------------------------------------------------------------
# Step 5: dense deterministic ids.
# ---------------------------------------------------------------------------------------------
class DenseRank(beam.PTransform):
    """Distinct sortable values -> {ranks: (value, rank), count: one int}: ranks 1..N in sorted
    order, by range buckets (bounds from a fixed-size sample picked by a stable hash), a local
    sort per bucket and offsets from the bucket sizes (a small side input)."""

    def __init__(self, per_bucket: int = VALUES_PER_BUCKET, sample_size: int = RANK_SAMPLE_SIZE):
        super().__init__()
        self._per_bucket = per_bucket
        self._sample_size = sample_size

    def expand(self, values):
        per_bucket = self._per_bucket
        count = values | "Count" >> beam.combiners.Count.Globally()
        bounds = (
            values
            | "Sample" >> beam.combiners.Top.Of(self._sample_size, key=algorithms.stable_hash)
            | "Bounds"
            >> beam.Map(
                lambda sample, n: algorithms.bucket_boundaries(sample, n, per_bucket),
                beam.pvalue.AsSingleton(count),
            )
        )
        buckets = (
            values
            | "ToBucket"
            >> beam.Map(
                lambda v, b: (algorithms.bucket_of(v, b), v), beam.pvalue.AsSingleton(bounds)
            )
            | "GroupBuckets" >> beam.GroupByKey()
        )
        offsets = (
            buckets
            | "Sizes" >> beam.MapTuple(lambda bucket, vs: (bucket, sum(1 for _ in vs)))
            | "SizeDict" >> beam.combiners.ToDict()
            | "Offsets" >> beam.Map(algorithms.rank_offsets)
        )
        ranks = buckets | "Rank" >> beam.FlatMap(
            lambda kv, offsets: algorithms.rank_bucket(kv[1], offsets[kv[0]]),
            beam.pvalue.AsSingleton(offsets),
        )
        return {"ranks": ranks, "count": count}


def _max_or_zero(values):
    return max(values, default=0)


def _item_positions(history):
    """(user, items) -> (item, (user, positions of the item in the history))."""
    user, items = history
    positions: dict = {}
    for k, item in enumerate(items):
        positions.setdefault(item, []).append(k)
    return [(item, (user, tuple(at))) for item, at in positions.items()]


def _with_item_id(element):
    _, joined = element
    for item_id in joined["id"]:
        for user, positions in joined["at"]:
            yield user, (positions, item_id)


def _with_user_id(element):
    _, joined = element
    for user_id in joined["id"]:
        parts = list(joined["items"])
        length = sum(len(positions) for positions, _ in parts)
        items = [0] * length
        for positions, item_id in parts:
            for k in positions:
                if k >= length:  # an item of this history got no id: never write wrong data
                    raise RuntimeError(
                        f"AssignIds: user {element[0]!r} (id {user_id}) has an item at position "
                        f"{k} but only {length} positions came back with item ids; parts: "
                        f"{sorted(parts)[:20]}"
                    )
                items[k] = item_id
        if 0 in items:
            raise RuntimeError(f"AssignIds: user {element[0]!r} has positions without an item id")
        yield user_id, tuple(items)


class AssignIds(beam.PTransform):
    """Histories with raw ids -> project ids: items 1..N (0 = padding, N + 1 = mask), users 1..U.

    Raw ids are numbered in sorted order (`DenseRank`), so the ids depend only on which ids
    survive. With `keep_raw_ids` (the S3-Rec format, integer ids) every id stays as it is and N,
    U are the largest ids.

    Returns {histories: (user id, tuple of item ids), item_ids: (raw item, item id),
    item_vocab / user_vocab: (id, raw id) (one line of the vocab file each), num_items /
    num_users: one int each}.
    """

    def __init__(self, keep_raw_ids: bool):
        super().__init__()
        self._keep = keep_raw_ids

    def expand(self, histories):
        users = histories | "Users" >> beam.Keys()
        items = (
            histories
            | "Items" >> beam.FlatMap(lambda h: set(h[1]))
            | "DistinctItems" >> beam.Distinct()
        )
        if self._keep:
            num_items = items | "MaxItem" >> beam.CombineGlobally(_max_or_zero)
            num_users = users | "MaxUser" >> beam.CombineGlobally(_max_or_zero)
            return {
                "histories": histories,
                "item_ids": items | "SameItemIds" >> beam.Map(lambda i: (i, i)),
                "item_vocab": num_items | "ItemVocab" >> writers.NumberLines(),
                "user_vocab": num_users | "UserVocab" >> writers.NumberLines(),
                "num_items": num_items,
                "num_users": num_users,
            }
        user_ranks = users | "RankUsers" >> DenseRank()
        item_ranks = items | "RankItems" >> DenseRank()
        with_items = (
            {
                "at": histories | "ItemPositions" >> beam.FlatMap(_item_positions),
                "id": item_ranks["ranks"],
            }
            | "JoinItemIds" >> beam.CoGroupByKey()
            | "WithItemIds" >> beam.FlatMap(_with_item_id)
        )
        with_ids = (
            {"items": with_items, "id": user_ranks["ranks"]}
            | "JoinUserIds" >> beam.CoGroupByKey()
            | "WithUserIds" >> beam.FlatMap(_with_user_id)
        )
        swap = lambda pair: (pair[1], pair[0])  # noqa: E731
        return {
            "histories": with_ids,
            "item_ids": item_ranks["ranks"],
            "item_vocab": item_ranks["ranks"] | "ItemVocab" >> beam.Map(swap),
            "user_vocab": user_ranks["ranks"] | "UserVocab" >> beam.Map(swap),
            "num_items": item_ranks["count"],
            "num_users": user_ranks["count"],
        }


# ---------------------------------------------------------------------------------------------
# Step 6: attributes.
# ---------------------------------------------------------------------------------------------
def _join_item_ids(element):
    """(raw item, {ids: [id], attributes: [names, ...]}) -> (item id, merged names)."""
    _, joined = element
    attributes = list(joined["attributes"])
    if attributes:
        for item_id in joined["ids"]:
            yield item_id, tuple(sorted(set().union(*attributes)))


def _attribute_of_item(element):
    _, joined = element
    for attribute_id in joined["id"]:
        for item_id in joined["items"]:
            yield item_id, attribute_id


class BuildItemAttributes(beam.PTransform):
    """{attributes: (raw item, attribute names), item_ids: (raw, id)} -> {table: (item id,
    sorted attribute ids), attribute_vocab: (id, name), num_attributes: one int}.

    Attributes of items that are not in the data are dropped; several metadata records of one
    item are merged. An attribute is kept when at least `min_count` items carry it; kept names
    are numbered in sorted order (`DenseRank`), or keep their ids with `keep_raw_ids`. Items
    without metadata have no entry; items whose attributes were all dropped an empty list.
    """

    def __init__(self, min_count: int, keep_raw_ids: bool):
        super().__init__()
        self._min_count = min_count
        self._keep = keep_raw_ids

    def expand(self, inputs):
        min_count = self._min_count
        items = (
            {"ids": inputs["item_ids"], "attributes": inputs["attributes"]}
            | "JoinItemIds" >> beam.CoGroupByKey()
            | "KnownItems" >> beam.FlatMap(_join_item_ids)
        )
        kept = (
            items
            | "Names" >> beam.FlatMap(lambda item: [(name, 1) for name in item[1]])
            | "CountItems" >> beam.CombinePerKey(sum)
            | "Frequent" >> beam.Filter(lambda pair: pair[1] >= min_count)
            | "KeptNames" >> beam.Keys()
        )
        if self._keep:
            num_attributes = kept | "MaxAttribute" >> beam.CombineGlobally(_max_or_zero)
            name_ids = kept | "SameIds" >> beam.Map(lambda name: (name, name))
            vocab = num_attributes | "Vocab" >> writers.NumberLines()
        else:
            ranked = kept | "RankNames" >> DenseRank()
            num_attributes, name_ids = ranked["count"], ranked["ranks"]
            vocab = name_ids | "Vocab" >> beam.MapTuple(lambda name, k: (k, str(name)))
        attribute_ids = (
            {
                "items": items
                | "NameItems" >> beam.FlatMap(lambda item: [(name, item[0]) for name in item[1]]),
                "id": name_ids,
            }
            | "JoinNameIds" >> beam.CoGroupByKey()
            | "ItemAttributeIds" >> beam.FlatMap(_attribute_of_item)
        )
        table = (
            (attribute_ids, items | "EveryItem" >> beam.MapTuple(lambda item, _: (item, None)))
            | "FlattenTable" >> beam.Flatten()
            | "GroupTable" >> beam.GroupByKey()
            | "Entry"
            >> beam.MapTuple(lambda item, ids: (item, sorted(k for k in ids if k is not None)))
        )
        return {"table": table, "attribute_vocab": vocab, "num_attributes": num_attributes}


# ---------------------------------------------------------------------------------------------
# Step 7: blocks of users: sequences.txt parts, the long sequence and the SP look-ups.
# ---------------------------------------------------------------------------------------------
def user_block(user: int) -> int:
    return (int(user) - 1) // USERS_PER_BLOCK


@beam.typehints.with_output_types(tuple[Any, Any])
class _UserBlockFn(beam.DoFn):
    """(block, [(user, items)]) of consecutive user ids, in user-id order ->
    * main: (block, part path) of sequences.txt;
    * "pieces": (position block, (start, items)): the block's stretch of the long sequence
      (every user's items, in user-id order), cut at position-block bounds;
    * "requests": (position block, (shards, positions)): the positions the block's users'
      negative segments read (`pe.negative_segment_positions`), with the shard (user %
      num_shards) that needs each.
    """

    def __init__(self, output, sequences_file, dupe_factor, max_seq_length, seed):
        self._output = output
        self._sequences_file = sequences_file
        self._dupe_factor = dupe_factor
        self._max_seq_length = max_seq_length
        self._seed = seed
        self._blocks = Metrics.counter(METRICS_NAMESPACE, "user_blocks")
        self._requests = Metrics.counter(METRICS_NAMESPACE, "segment_positions_requested")

    def process(self, element, offsets, total_length, num_shards):
        block, users = element
        users = sorted(users, key=lambda u: u[0])
        self._blocks.inc()
        yield writers.write_part(
            self._output,
            self._sequences_file,
            block,
            (algorithms.sequence_line(u, items) + "\n" for u, items in users),
            "",
        )
        start = offsets[block]
        flat = np.fromiter((i for _, items in users for i in items), np.int64)
        step = POSITIONS_PER_BLOCK
        for lo in range(start - start % step, start + len(flat), step):
            a, b = max(lo, start), min(lo + step, start + len(flat))
            yield beam.pvalue.TaggedOutput("pieces", (lo // step, (a, flat[a - start : b - start])))
        shard_of = np.array([int(u) % num_shards for u, _ in users], dtype=np.int64)
        keys = []
        for shard in np.unique(shard_of):
            mine = [users[k] for k in np.flatnonzero(shard_of == shard)]
            for duplicate in range(self._dupe_factor):
                positions = pe.negative_segment_positions(
                    mine,
                    seed=self._seed,
                    duplicate=duplicate,
                    max_seq_length=self._max_seq_length,
                    total_length=total_length,
                )
                keys.append(np.int64(shard) * (total_length + 1) + positions)
        keys = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
        if not len(keys):  # no user of the block has an example with a segment
            return
        self._requests.inc(len(keys))
        shards, positions = np.divmod(keys, total_length + 1)
        target = positions // step
        order = np.argsort(target, kind="stable")
        target, shards, positions = target[order], shards[order], positions[order]
        bounds = np.flatnonzero(np.diff(target)) + 1
        for lo, hi in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(target)]])):
            yield beam.pvalue.TaggedOutput(
                "requests", (int(target[lo]), (shards[lo:hi], positions[lo:hi]))
            )


def _answer(element):
    """(position block, {pieces, requests}) -> (shard, (positions, items)) per requesting shard."""
    block, joined = element
    base = block * POSITIONS_PER_BLOCK
    items = np.zeros(POSITIONS_PER_BLOCK, dtype=np.int64)
    for start, values in joined["pieces"]:
        items[start - base : start - base + len(values)] = values
    for shards, positions in joined["requests"]:
        values = items[positions - base]
        for shard in np.unique(shards):
            mine = shards == shard
            yield int(shard), (positions[mine], values[mine])


class NegativeSegments(beam.PTransform):
    """Histories with ids -> {sequence_parts: (block, path), segments: (shard, (positions,
    items)), num_interactions: one int}.

    The SP negative segments are cut from the long sequence (all users' sequences concatenated
    in user-id order) at random starts. No worker holds it: users are grouped in blocks of
    consecutive ids, whose starts in the long sequence come from a prefix sum over the block
    sizes (a small side input); each block cuts its stretch into pieces keyed by position block
    and names the positions its users' segments read (drawn exactly as the example writer draws
    them); a CoGroupByKey by position block answers them, keyed by the shard that asked.
    """

    def __init__(self, output, sequences_file, *, num_shards, dupe_factor, max_seq_length, seed):
        super().__init__()
        self._num_shards = num_shards
        self._fn = _UserBlockFn(output, sequences_file, dupe_factor, max_seq_length, seed)

    def expand(self, histories):
        sizes = (
            histories
            | "BlockSizes" >> beam.Map(lambda h: (user_block(h[0]), len(h[1])))
            | "SumBlocks" >> beam.CombinePerKey(sum)
        )
        offsets = (
            sizes
            | "SizeDict" >> beam.combiners.ToDict()
            | "Offsets" >> beam.Map(algorithms.rank_offsets)
        )
        total = _sum_globally(sizes | "Sizes" >> beam.Values(), "Total")
        blocks = (
            histories
            | "ToBlock" >> beam.Map(lambda h: (user_block(h[0]), h))
            | "GroupBlocks" >> beam.GroupByKey()
            | "Blocks"
            >> beam.ParDo(
                self._fn,
                beam.pvalue.AsSingleton(offsets),
                beam.pvalue.AsSingleton(total),
                beam.pvalue.AsSingleton(self._num_shards),
            ).with_outputs("pieces", "requests", main="sequence_parts")
        )
        segments = (
            {"pieces": blocks["pieces"], "requests": blocks["requests"]}
            | "JoinPositions" >> beam.CoGroupByKey()
            | "Answer" >> beam.FlatMap(_answer)
        )
        return {
            "sequence_parts": blocks["sequence_parts"],
            "segments": segments,
            "num_interactions": total,
        }


# ---------------------------------------------------------------------------------------------
# Step 8: split, negatives and pretraining examples, written per shard.
# ---------------------------------------------------------------------------------------------
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
        self._fn = writers.WriteShardFn(
            output, dupe_factor, max_seq_length, mask_prob, num_negatives, seed
        )

    def expand(self, inputs):
        num_shards = beam.pvalue.AsSingleton(self._num_shards)
        histories = inputs["histories"] | "ToShard" >> beam.Map(
            lambda h, n: (int(h[0]) % n, (writers.HISTORY_TAG, h)), num_shards
        )
        segments = inputs["segments"] | "TagSegments" >> beam.MapTuple(
            lambda shard, value: (shard, (writers.SEGMENT_TAG, value))
        )
        every_shard = self._num_shards | "EveryShard" >> beam.FlatMap(
            lambda n: [(s, (writers.SHARD_TAG, None)) for s in range(n)]
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
