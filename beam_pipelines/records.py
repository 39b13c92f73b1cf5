"""What the example files of a group of users hold, as {feature name: list of ints} per record:
the leave-one-out splits with their sampled negatives and the pretraining examples of every
duplicate. Pure Python over `beam_pipelines.pretrain_examples` (which draws the random choices),
no Beam and no TensorFlow; `beam_pipelines.examples` serializes and writes what it returns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from beam_pipelines import pretrain_examples as pe
from s3rec_tf import schema  # the data contract: feature names, file prefixes (no TensorFlow)

# Users whose pretraining examples are generated in one vectorized call (bounds memory).
USERS_PER_CHUNK = 2000


def duplicate_chunks(
    histories: Sequence[tuple[int, Sequence[int]]], *, dupe_factor: int, users_per_chunk: int
) -> Iterator[tuple[int, Sequence[tuple[int, Sequence[int]]]]]:
    """(duplicate, users) for duplicates 0..dupe_factor - 1 and chunks of the given users.

    The one loop over pretraining duplicates: the segment look-ups (`segment_positions`) and the
    examples (`shard_examples`) both walk it, so they draw from the same (seed, user, duplicate)
    generators (`pe.pretrain_rng`) for the same duplicates.
    """
    for duplicate in range(dupe_factor):
        for lo in range(0, len(histories), users_per_chunk):
            yield duplicate, histories[lo : lo + users_per_chunk]


def segment_positions(
    histories: Sequence[tuple[int, Sequence[int]]],
    *,
    seed: int,
    dupe_factor: int,
    max_seq_length: int,
    total_length: int,
    users_per_chunk: int = USERS_PER_CHUNK,
) -> np.ndarray:
    """The positions of the long sequence (of length `total_length`) that these users' negative
    segments read in any duplicate, [k] int64, repeats possible (`pe.negative_segment_positions`
    per duplicate and chunk)."""
    positions = [
        pe.negative_segment_positions(
            users,
            seed=seed,
            duplicate=duplicate,
            max_seq_length=max_seq_length,
            total_length=total_length,
        )
        for duplicate, users in duplicate_chunks(
            histories, dupe_factor=dupe_factor, users_per_chunk=users_per_chunk
        )
    ]
    return np.concatenate(positions) if positions else np.zeros(0, np.int64)


def split_examples(user: int, items: Sequence[int], negatives: Sequence[int]) -> dict:
    """One user's leave-one-out examples: {split: {feature name: list of ints}}.

    `items`: the user's full chronological history (>= 3 items); `negatives`: its sampled
    evaluation negatives (a row of `sample_negatives`), shared by valid and test.
    """
    split = pe.leave_one_out(items)
    negatives = [int(n) for n in negatives]
    return {
        "train": {
            schema.USER: [int(user)],
            schema.HISTORY: split.train_history,
            schema.HELDOUT: split.heldout,
        },
        "valid": {
            schema.USER: [int(user)],
            schema.HISTORY: split.valid_history,
            schema.TARGET: [split.valid_target],
            schema.NEGATIVES: negatives,
        },
        "test": {
            schema.USER: [int(user)],
            schema.HISTORY: split.test_history,
            schema.TARGET: [split.test_target],
            schema.NEGATIVES: negatives,
        },
    }


def pretrain_features(examples: pe.PretrainExamples) -> Iterator[dict]:
    """{feature name: list of ints} of each example, in order (the TFRecord features)."""
    fields = [(name, getattr(examples, name).tolist()) for name in schema.PRETRAIN_SEQUENCES]
    splits = examples.row_splits.tolist()
    for user, lo, hi in zip(examples.user.tolist(), splits[:-1], splits[1:]):
        features = {schema.USER: [user]}
        for name, values in fields:
            features[name] = values[lo:hi]
        yield features


def shard_examples(
    histories: Sequence[tuple[int, Sequence[int]]],
    *,
    seed: int,
    num_items: int,
    num_negatives: int,
    dupe_factor: int,
    max_seq_length: int,
    mask_prob: float,
    long_sequence,
    users_per_chunk: int = USERS_PER_CHUNK,
) -> Iterator[tuple[str, dict]]:
    """Every example of a group of users: (file prefix, {feature name: list of ints}).

    First the split examples (`split_examples`, prefixes `schema.split_prefix`), user by user in
    the given order; then the pretraining examples of duplicate 0, 1, ... (`schema.
    pretrain_prefix`; `duplicate_chunks`), `users_per_chunk` users per vectorized call. Each
    user's negatives and examples depend only on (seed, user, duplicate), so chunks and the
    grouping of users never change them. `long_sequence` as for `pe.make_pretrain_examples`.
    """
    negatives = pe.sample_negatives(
        histories, seed=seed, num_items=num_items, num_negatives=num_negatives
    ).tolist()
    for (user, items), user_negatives in zip(histories, negatives):
        for split, features in split_examples(user, items, user_negatives).items():
            yield schema.split_prefix(split), features
    for duplicate, users in duplicate_chunks(
        histories, dupe_factor=dupe_factor, users_per_chunk=users_per_chunk
    ):
        examples = pe.make_pretrain_examples(
            users,
            seed=seed,
            duplicate=duplicate,
            max_seq_length=max_seq_length,
            mask_prob=mask_prob,
            num_items=num_items,
            long_sequence=long_sequence,
        )
        for features in pretrain_features(examples):
            yield schema.pretrain_prefix(duplicate), features
