"""The job's algorithms as plain Python / NumPy functions, without Beam and without TensorFlow.

Two kinds live here:
  * whole-data reference functions (`kcore`, `assign_ids`, `attribute_table`, `long_sequence`):
    the definitions the distributed steps must reproduce exactly; the job does not call them, the
    tests compare the job's results with them;
  * the per-element pieces that the distributed steps (`beam_pipelines.kcore`, `ids`, ...) run
    on one key or one group at a time: one k-core round, the range buckets of a distributed rank,
    the text of one line of an output file.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import itertools
import json
from collections.abc import Iterable, Sequence

import numpy as np


# ---------------------------------------------------------------------------------------------
# k-core.
# ---------------------------------------------------------------------------------------------
def kcore(histories: Sequence[tuple], user_core: int, item_core: int):
    """The largest sub-data set in which every user has >= user_core interactions and every item
    >= item_core (repeats count), found by removing violators until none are left.

    One round removes, at the same time, every interaction of a user with fewer than user_core
    interactions and every interaction with an item that has fewer than item_core; rounds repeat
    until one removes nothing. That set is unique, so the result does not depend on the removal
    order. Returns (kept histories, rounds that removed something, users dropped, interactions
    dropped); kept histories keep their order.
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


def item_occurrences(history: tuple) -> list:
    """(user, items) -> [(item, (user, times the user has it))] per distinct item."""
    user, items = history
    return [(item, (user, n)) for item, n in collections.Counter(items).items()]


def rare_item_users(item: object, occurrences: Iterable[tuple], item_core: int) -> list:
    """(item, [(user, n)]) -> [(user, item)] for every user of the item if the item has fewer
    than item_core interactions, else []. Reads at most item_core occurrences (constant memory,
    whatever the item's popularity)."""
    seen, total = [], 0
    for user, n in occurrences:
        total += n
        if total >= item_core:
            return []
        seen.append(user)
    return [(user, item) for user in seen]


def apply_kcore_round(items: tuple, rare_items: Iterable, user_core: int):
    """One user's part of one k-core round: -> (kept items or None if the user is dropped,
    interactions dropped). A user with fewer than user_core interactions (counted before the
    round) loses them all; otherwise it loses its interactions with the round's rare items."""
    if len(items) < user_core:
        return None, len(items)
    rare = set(rare_items)
    if not rare:
        return items, 0
    kept = tuple(item for item in items if item not in rare)
    return (kept or None), len(items) - len(kept)


# ---------------------------------------------------------------------------------------------
# Dense ids.
# ---------------------------------------------------------------------------------------------
def assign_ids(histories: Iterable[tuple], keep_raw_ids: bool):
    """Histories with raw ids -> (histories with ids sorted by user id, item vocab, user vocab,
    (raw item id, item id) pairs of the items in the data).

    Histories come back as (user id, tuple of item ids); vocab entry k - 1 is the raw id of id k.
    Raw ids are numbered 1..N in sorted order; with keep_raw_ids every id stays as it is.
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


def stable_hash(value) -> int:
    """A hash of a str or int that is the same in every process (unlike `hash()` of a str)."""
    data = value.encode("utf-8") if isinstance(value, str) else repr(value).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def bucket_boundaries(sample: Iterable, count: int, per_bucket: int) -> list:
    """Sorted boundaries splitting `count` values into ranges of about `per_bucket` values, from
    a sample of them: value v goes to bucket `bisect_right(boundaries, v)`. Any boundaries give
    the same ranks (see `rank_offsets`); good ones give buckets of even size."""
    sample = sorted(set(sample))
    buckets = min(max(1, -(-count // per_bucket)), len(sample) + 1)
    if buckets <= 1:
        return []
    return sorted({sample[len(sample) * k // buckets] for k in range(1, buckets)})


def bucket_of(value, boundaries: Sequence) -> int:
    return bisect.bisect_right(boundaries, value)


def rank_offsets(bucket_sizes: dict) -> dict:
    """{bucket: size} -> {bucket: number of values in the buckets before it}."""
    offsets, total = {}, 0
    for bucket in sorted(bucket_sizes):
        offsets[bucket] = total
        total += bucket_sizes[bucket]
    return offsets


def rank_bucket(values: Iterable, offset: int) -> list:
    """The distinct values of one bucket -> [(value, rank)], ranks offset + 1, offset + 2, ..."""
    return [(value, rank) for rank, value in enumerate(sorted(values), start=offset + 1)]


# ---------------------------------------------------------------------------------------------
# Attributes.
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


# ---------------------------------------------------------------------------------------------
# The SP source sequence and the text of the output files.
# ---------------------------------------------------------------------------------------------
def long_sequence(sorted_histories) -> np.ndarray:
    """All users' sequences concatenated in user-id order: the source of SP negative segments."""
    return np.fromiter(
        (item for _, items in sorted_histories for item in items),
        np.int64,
        sum(len(items) for _, items in sorted_histories),
    )


def lines_text(lines: Iterable[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def sequence_line(user: int, items: Sequence[int]) -> str:
    """One line of sequences.txt (S3-Rec format), without the line break."""
    return " ".join(map(str, (user, *items)))


def sequences_text(sorted_histories) -> str:
    """S3-Rec format: 'user item item ...' per user, in user-id order."""
    return lines_text(sequence_line(user, items) for user, items in sorted_histories)


def item2attributes_entry(item: int, attribute_ids: Sequence[int]) -> str:
    """One entry of item2attributes.json: '"item": [ids]' exactly as `json.dumps` writes it."""
    return json.dumps({str(item): list(attribute_ids)})[1:-1]


def item2attributes_text(table: dict) -> str:
    """S3-Rec format: one JSON object {"item id": [attribute ids]} in item-id order."""
    return json.dumps({str(item): table[item] for item in sorted(table)})


def dead_letter_key(letter: dict) -> tuple:
    """The order of the dead-letter file: by file, line (None first), reason and record."""
    return (letter["file"], letter["line"] or 0, letter["reason"], letter["record"])


def dead_letter_line(letter: dict) -> str:
    return json.dumps(letter, sort_keys=True)


def count_kinds(counts: dict, kinds: Sequence[str]) -> dict:
    """{kind: count} with every kind of `kinds` (zero if absent), in sorted order."""
    out = dict.fromkeys(kinds, 0)
    out.update(counts)
    return dict(sorted(out.items()))


def first_line(lines: Iterable[tuple]) -> tuple:
    """[(path, line, items)] of one user -> (the first by path and line, the others)."""
    first, *others = sorted(lines)
    return first, others


def auto_num_shards(num_users: int, users_per_shard: int, minimum: int = 4) -> int:
    """The shard count that grows with the data: at least `minimum`, at most `users_per_shard`
    users per shard."""
    return max(minimum, -(-num_users // users_per_shard))
