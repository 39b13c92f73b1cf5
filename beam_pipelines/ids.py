"""Step 5 of the job: dense deterministic ids (items 1..N, users 1..U) by a distributed rank, and
the vocabularies."""

from __future__ import annotations

import apache_beam as beam

from beam_pipelines import algorithms, writers

# Distinct values per range bucket of a distributed rank, and the sample its bounds come from.
VALUES_PER_BUCKET = 100_000
RANK_SAMPLE_SIZE = 10_000


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


def max_or_zero(values):
    """The largest of the kept raw ids (N when ids are kept), 0 when there are none."""
    return max(values, default=0)


def _item_positions(history):
    """(user, items) -> (item, (user, positions of the item in the history))."""
    user, items = history
    positions: dict = {}
    for k, item in enumerate(items):
        positions.setdefault(item, []).append(k)
    return [(item, (user, tuple(at))) for item, at in positions.items()]


def _with_item_id(element):
    """(item, {"id": [its id], "at": [(user, positions)]}) -> (user, (positions, item id)).

    Every ranked item came from some history and ranks are unique, so a group holds exactly one
    id and at least one history; anything else is a lost or split join (seen once, with two
    DirectRunner processes at a million items) and stops the job here, naming the item, not
    later with a history short of ids."""
    item, joined = element
    ids = list(joined["id"])
    histories = 0
    for user, positions in joined["at"]:
        histories += 1
        if len(ids) == 1:
            yield user, (positions, ids[0])
    if len(ids) != 1 or histories == 0:
        raise RuntimeError(
            f"AssignIds: item {item!r} ({type(item).__name__}) joined {len(ids)} item ids "
            f"{ids[:3]} and {histories} histories; every "
            "item should join exactly one id and at least one history (a lost or split join)."
        )


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
            num_items = items | "MaxItem" >> beam.CombineGlobally(max_or_zero)
            num_users = users | "MaxUser" >> beam.CombineGlobally(max_or_zero)
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
