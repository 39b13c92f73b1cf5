"""What one user contributes to the data set: the leave-one-out split, the sampled evaluation
negatives and the S3-Rec pretraining examples. Pure NumPy, no Beam and no TensorFlow, so that the
rules live in one place and can be tested on their own.

The pretraining examples follow the reference implementation (RUCAIBox/CIKM2020-S3Rec,
`PretrainDataset` fed by `run_pretrain.py`):

  * window = items[-(max_seq_length + 2):-2], the last `max_seq_length` items of the training part
    items[:-2]; every prefix window[:i + 1] is one example;
  * masked item prediction: every item of a prefix but the last is replaced by the mask id with
    probability `mask_prob`, the last always is; each masked position gets a negative item that is
    not in the prefix, unmasked positions repeat the item;
  * segment prediction: for prefixes of length < 2 the three segment sequences are the prefix
    itself; otherwise a length L uniform in 1..len // 2 and a start uniform in 0..len - L are drawn,
    the segment is masked in `masked_segment_sequence`, kept in place (mask id elsewhere) in
    `pos_segment`, and `neg_segment` holds L items cut at a uniform start from the concatenation of
    all users' full sequences (`long_sequence`, ordered by user id).

One deliberate difference: negatives are drawn from the items 1..N only, while the reference's
sampler can also return the mask id N + 1.

Every random choice comes from a generator made by `pretrain_rng(seed, user, duplicate)` or
`negatives_rng(seed, user)`, so each user's examples depend only on the seed, the user and the
duplicate: not on the order in which workers see users.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

# The word after the job's seed names a generator's purpose, so that the streams of pretraining
# duplicates and of evaluation negatives never coincide.
_PRETRAIN_STREAM = 1
_NEGATIVES_STREAM = 2


def pretrain_rng(seed: int, user: int, duplicate: int) -> np.random.Generator:
    """The generator of all random choices for `user`'s pretraining examples in `duplicate`."""
    return np.random.default_rng([seed, _PRETRAIN_STREAM, user, duplicate])


def negatives_rng(seed: int, user: int) -> np.random.Generator:
    """The generator of `user`'s sampled evaluation negatives."""
    return np.random.default_rng([seed, _NEGATIVES_STREAM, user])


def pretrain_window(items: Sequence[int], max_seq_length: int) -> np.ndarray:
    """The last `max_seq_length` items of the training part items[:-2] (the reference's window)."""
    return np.asarray(items, dtype=np.int64)[-(max_seq_length + 2) : -2]


def num_pretrain_examples(num_items_of_user: int, max_seq_length: int) -> int:
    """How many pretraining examples (prefixes) a user with this many interactions gives."""
    return min(max(num_items_of_user - 2, 0), max_seq_length)


class PretrainExamples(NamedTuple):
    """Pretraining examples of one or more users (one duplicate), as flat arrays.

    Example i belongs to `user[i]` and occupies [row_splits[i], row_splits[i + 1]) of every
    sequence field. A user's examples are consecutive, shortest prefix first. The sequence field
    names are the TFRecord feature names of `s3rec_tf.schema`.
    """

    user: np.ndarray  # [num_examples] int64
    row_splits: np.ndarray  # [num_examples + 1] int64
    masked_item_sequence: np.ndarray  # [total length] int64
    pos_items: np.ndarray
    neg_items: np.ndarray
    masked_segment_sequence: np.ndarray
    pos_segment: np.ndarray
    neg_segment: np.ndarray

    @property
    def num_examples(self) -> int:
        return len(self.user)

    def example(self, i: int) -> dict:
        """Example i as {field: int64 array} (for tests and debugging)."""
        lo, hi = self.row_splits[i], self.row_splits[i + 1]
        return {name: getattr(self, name)[lo:hi] for name in SEQUENCE_FIELDS}


SEQUENCE_FIELDS = PretrainExamples._fields[2:]

# Uniform numbers drawn per user before anything else: one per position for the mask decision,
# one per position for a negative candidate, and three per example for the segment.
_PER_POSITION = 2
_PER_EXAMPLE = 3


def make_pretrain_examples(
    histories: Sequence[tuple[int, Sequence[int]]],
    *,
    seed: int,
    duplicate: int,
    max_seq_length: int,
    mask_prob: float,
    num_items: int,
    long_sequence: np.ndarray,
) -> PretrainExamples:
    """Every pretraining example of the given users for one duplicate.

    The work is vectorized over all given users, but each user's examples depend only on
    (seed, user, duplicate) and its own items, never on the other users passed along: a user's
    random numbers come from `pretrain_rng(seed, user, duplicate)`, first one block of uniforms
    (2 per position, 3 per example), then one more per rejected negative. An integer uniform in
    0..n-1 is floor(u * n) of such a uniform u.

    Args:
      histories: (user id, full chronological item ids in 1..num_items) per user.
      seed, duplicate: select the random streams.
      max_seq_length: window length (the reference's max_seq_length).
      mask_prob: probability of masking an item that is not the last of its prefix.
      num_items: N; the mask id is N + 1 and negatives are drawn from 1..N.
      long_sequence: all users' full sequences concatenated in user-id order, [total] int; or a
        `SparseSequence` holding (at least) the positions `negative_segment_positions` names.
    """
    if not isinstance(long_sequence, SparseSequence):
        long_sequence = np.asarray(long_sequence, dtype=np.int64)
    mask_id = num_items + 1
    users = np.array([int(user) for user, _ in histories], dtype=np.int64)
    windows = [pretrain_window(items, max_seq_length) for _, items in histories]
    window_length = np.array([len(w) for w in windows], dtype=np.int64)
    window_start = _starts(window_length)
    window_flat = np.concatenate(windows) if windows else np.zeros(0, np.int64)

    # Examples: user b has window_length[b] of them, of lengths 1..window_length[b].
    example_user = np.repeat(np.arange(len(windows)), window_length)
    example_index = np.arange(len(example_user)) - _starts(window_length)[example_user]
    example_length = example_index + 1
    row_splits = np.concatenate([[0], np.cumsum(example_length)]).astype(np.int64)
    if len(example_user) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return PretrainExamples(empty, row_splits, *([empty] * len(SEQUENCE_FIELDS)))

    # Positions: position `offset` of example `position_example`.
    position_example = np.repeat(np.arange(len(example_user)), example_length)
    offset = np.arange(row_splits[-1]) - row_splits[position_example]
    position_user = example_user[position_example]
    pos_items = window_flat[window_start[position_user] + offset]

    # One block of uniforms per user, from that user's own generator.
    positions_per_user = window_length * (window_length + 1) // 2
    block_size = _PER_POSITION * positions_per_user + _PER_EXAMPLE * window_length
    rngs = [pretrain_rng(seed, int(user), duplicate) for user in users]
    uniforms = np.concatenate([rng.random(int(n)) for rng, n in zip(rngs, block_size)])
    block_start = _starts(block_size)
    local_position = np.arange(len(offset)) - _starts(positions_per_user)[position_user]
    mask_uniform = uniforms[block_start[position_user] + local_position]
    negative_uniform = uniforms[
        block_start[position_user] + positions_per_user[position_user] + local_position
    ]
    segment_uniforms = uniforms[
        (block_start + _PER_POSITION * positions_per_user)[example_user, None]
        + _PER_EXAMPLE * example_index[:, None]
        + np.arange(_PER_EXAMPLE)
    ]

    # Masked item prediction.
    is_last = offset == example_index[position_example]
    masked = is_last | (mask_uniform < mask_prob)
    masked_item_sequence = np.where(masked, mask_id, pos_items)
    neg_items = pos_items.copy()
    masked_at = np.flatnonzero(masked)
    neg_items[masked_at] = _negatives_outside_prefix(
        1 + _scaled(negative_uniform[masked_at], num_items),
        position_user[masked_at],
        example_index[position_example[masked_at]],
        window_flat,
        window_start,
        window_length,
        num_items,
        rngs,
    )

    # Segment prediction for the examples of length >= 2.
    half = example_length // 2
    has_segment = example_length >= 2
    seg_length = np.where(has_segment, 1 + _scaled(segment_uniforms[:, 0], np.maximum(half, 1)), 0)
    seg_start = _scaled(segment_uniforms[:, 1], example_length - seg_length + 1)
    if has_segment.any() and len(long_sequence) < seg_length.max():
        raise ValueError("long_sequence is shorter than a segment; it must hold every sequence.")
    neg_start = _scaled(segment_uniforms[:, 2], np.maximum(len(long_sequence) - seg_length + 1, 1))

    start = seg_start[position_example]
    in_segment = (offset >= start) & (offset < start + seg_length[position_example])
    position_has_segment = has_segment[position_example]
    masked_segment_sequence = np.where(in_segment, mask_id, pos_items)
    pos_segment = np.where(position_has_segment & ~in_segment, mask_id, pos_items)
    neg_segment = np.where(position_has_segment, mask_id, pos_items)
    segment_at = np.flatnonzero(in_segment)
    neg_segment[segment_at] = long_sequence[
        neg_start[position_example[segment_at]] + offset[segment_at] - start[segment_at]
    ]
    return PretrainExamples(
        users[example_user],
        row_splits,
        masked_item_sequence,
        pos_items,
        neg_items,
        masked_segment_sequence,
        pos_segment,
        neg_segment,
    )


class SparseSequence:
    """Some positions of the long sequence (all users' sequences concatenated in user-id order):
    enough of it for `make_pretrain_examples`, without one worker holding all of it.

    `len()` is the full length; indexing with an array of positions returns their items and
    raises KeyError for a position it does not hold.
    """

    def __init__(self, length: int, positions, items):
        positions = np.asarray(positions, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        self._positions, first = np.unique(positions, return_index=True)
        self._items = items[first]
        self._length = int(length)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):
        index = np.asarray(index, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._positions, index), max(len(self._positions) - 1, 0))
        if index.size and (len(self._positions) == 0 or (self._positions[at] != index).any()):
            raise KeyError("SparseSequence: a position was not looked up")
        return self._items[at] if index.size else np.zeros(index.shape, np.int64)


def negative_segment_positions(
    histories: Sequence[tuple[int, Sequence[int]]],
    *,
    seed: int,
    duplicate: int,
    max_seq_length: int,
    total_length: int,
) -> np.ndarray:
    """The positions of the long sequence (of length `total_length`) that the negative segments
    of these users' pretraining examples in `duplicate` read, [k] int64 (repeats possible).

    Draws exactly what `make_pretrain_examples` draws for the segments (the same uniforms of the
    same per-user generators), so the job can look these positions up in a distributed join and
    hand them to `make_pretrain_examples` as a `SparseSequence`.
    """
    out = []
    for user, items in histories:
        n = len(pretrain_window(items, max_seq_length))
        if n < 2:  # only examples of length >= 2 have a segment
            continue
        positions_of_user = n * (n + 1) // 2
        block = _PER_POSITION * positions_of_user + _PER_EXAMPLE * n
        uniforms = pretrain_rng(seed, int(user), duplicate).random(block)
        segment = uniforms[_PER_POSITION * positions_of_user :].reshape(n, _PER_EXAMPLE)
        length = np.arange(1, n + 1)
        seg_length = 1 + _scaled(segment[1:, 0], np.maximum(length[1:] // 2, 1))
        if total_length < seg_length.max():
            continue  # make_pretrain_examples raises for this user
        neg_start = _scaled(segment[1:, 2], np.maximum(total_length - seg_length + 1, 1))
        out.append(
            np.repeat(neg_start, seg_length)
            + (np.arange(seg_length.sum()) - np.repeat(_starts(seg_length), seg_length))
        )
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _starts(sizes: np.ndarray) -> np.ndarray:
    """Start offsets of consecutive blocks of the given sizes."""
    starts = np.zeros(len(sizes), dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    return starts


def _scaled(uniform: np.ndarray, n) -> np.ndarray:
    """floor(u * n): uniform over 0..n-1 for u uniform in [0, 1)."""
    return np.minimum((uniform * n).astype(np.int64), np.asarray(n, dtype=np.int64) - 1)


def _negatives_outside_prefix(
    candidates, user, prefix_end, window_flat, window_start, window_length, num_items, rngs
):
    """Replaces each candidate that lies in its prefix (window[:prefix_end + 1] of its user) by a
    fresh draw from that user's generator until none does: uniform over 1..N minus the prefix."""
    # Keys (user, item) of every first occurrence in the windows, with its position.
    window_user = np.repeat(np.arange(len(window_length)), window_length)
    keys, first_flat = np.unique(window_user * (num_items + 1) + window_flat, return_index=True)
    first_position = first_flat - window_start[window_user[first_flat]]
    per_user_distinct = np.bincount(window_user[first_flat], minlength=len(window_length))
    if per_user_distinct.max() >= num_items:
        raise ValueError(
            f"A pretraining sequence holds all {num_items} items, so no negative item exists for "
            "it; the data set is too small for masked item prediction."
        )

    def in_prefix(at):
        key = user[at] * (num_items + 1) + candidates[at]
        found = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
        return (keys[found] == key) & (first_position[found] <= prefix_end[at])

    candidates = candidates.copy()
    todo = np.flatnonzero(in_prefix(np.arange(len(candidates))))
    while len(todo):
        for at in todo:  # rare: a prefix holds at most max_seq_length of the N items
            candidates[at] = 1 + _scaled(rngs[user[at]].random(1), num_items)[0]
        todo = todo[in_prefix(todo)]
    return candidates


class Split(NamedTuple):
    """A user's leave-one-out split (the reference's protocol), as lists of item ids."""

    train_history: list  # items[:-2]
    heldout: list  # [items[-2], items[-1]]
    valid_history: list  # items[:-2]
    valid_target: int  # items[-2]
    test_history: list  # items[:-1]
    test_target: int  # items[-1]


def leave_one_out(items: Sequence[int]) -> Split:
    """Last item = test target, second to last = validation target, the rest = training."""
    items = [int(i) for i in items]
    if len(items) < 3:
        raise ValueError(f"Leave-one-out needs at least 3 interactions per user, got {len(items)}.")
    return Split(
        train_history=items[:-2],
        heldout=items[-2:],
        valid_history=items[:-2],
        valid_target=items[-2],
        test_history=items[:-1],
        test_target=items[-1],
    )


def sample_negatives(
    histories: Sequence[tuple[int, Sequence[int]]],
    *,
    seed: int,
    num_items: int,
    num_negatives: int,
) -> np.ndarray:
    """Per user, `num_negatives` distinct items uniform over 1..num_items minus the user's items.

    Returns [num_users, num_negatives] int64, each row in the order drawn. Rejection sampling from
    the user's own generator (`negatives_rng`): the first `num_negatives` draws that are neither
    the user's items nor drawn before, which is exactly uniform sampling without replacement.
    Vectorized over users; a user's row depends only on the seed, the user and its items.
    Raises ValueError when a user leaves fewer candidates than requested.
    """
    num_users = len(histories)
    result = np.zeros((num_users, num_negatives), dtype=np.int64)
    if num_users == 0:
        return result
    seen = [np.unique(np.asarray(items, dtype=np.int64)) for _, items in histories]
    for (user, _), items in zip(histories, seen):
        if num_items - len(items) < num_negatives:
            raise ValueError(
                f"--num_negatives={num_negatives} but user {user} interacted with {len(items)} "
                f"of the {num_items} items, leaving {num_items - len(items)}; lower "
                "--num_negatives."
            )
    rngs = [negatives_rng(seed, int(user)) for user, _ in histories]
    # A few spare draws per user make a second round rare while a user sees few items.
    width = num_negatives + 8 + num_negatives // 8
    draws = np.stack([rng.integers(1, num_items + 1, size=width) for rng in rngs])
    row = np.arange(num_users)[:, None]
    keys = row * (num_items + 1) + draws
    seen_keys = np.concatenate([u * (num_items + 1) + items for u, items in enumerate(seen)])
    _, first = np.unique(keys.ravel(), return_index=True)
    is_first = np.zeros(keys.size, dtype=bool)
    is_first[first] = True
    valid = is_first.reshape(keys.shape) & ~np.isin(keys, seen_keys)
    rank = np.cumsum(valid, axis=1)
    complete = rank[:, -1] >= num_negatives
    take = valid & (rank <= num_negatives) & complete[:, None]
    result[complete] = draws[take].reshape(-1, num_negatives)
    for u in np.flatnonzero(~complete):
        chosen = draws[u][valid[u]].tolist()
        excluded = set(seen[u].tolist()) | set(chosen)
        while len(chosen) < num_negatives:
            for item in rngs[u].integers(1, num_items + 1, size=width).tolist():
                if item not in excluded and len(chosen) < num_negatives:
                    excluded.add(item)
                    chosen.append(item)
        result[u] = chosen
    return result
