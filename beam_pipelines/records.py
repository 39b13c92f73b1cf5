"""What the example files of a group of users hold, as {feature name: list of ints} per record:
the leave-one-out splits with their sampled negatives and the pretraining examples of every
duplicate. Pure Python over `beam_pipelines.pretrain_examples` (which draws the random choices),
no Beam and no TensorFlow; `beam_pipelines.examples` serializes and writes what it returns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from beam_pipelines import pretrain_examples as pe
from s3rec_tf import schema  # the data contract: feature names, file prefixes (no TensorFlow)


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
    users_per_chunk: int,
) -> Iterator[tuple[str, dict]]:
    """Every example of a group of users: (file prefix, {feature name: list of ints}).

    First the split examples (`split_examples`, prefixes `schema.split_prefix`), user by user in
    the given order; then the pretraining examples of duplicate 0, 1, ... (`schema.
    pretrain_prefix`), made `users_per_chunk` users at a time (vectorized, bounded memory). Each
    user's negatives and examples depend only on (seed, user, duplicate), so chunks and the
    grouping of users never change them. `long_sequence` as for `pe.make_pretrain_examples`.
    """
    negatives = pe.sample_negatives(
        histories, seed=seed, num_items=num_items, num_negatives=num_negatives
    ).tolist()
    for (user, items), user_negatives in zip(histories, negatives):
        for split, features in split_examples(user, items, user_negatives).items():
            yield schema.split_prefix(split), features
    for duplicate in range(dupe_factor):
        prefix = schema.pretrain_prefix(duplicate)
        for chunk in range(0, len(histories), users_per_chunk):
            examples = pe.make_pretrain_examples(
                histories[chunk : chunk + users_per_chunk],
                seed=seed,
                duplicate=duplicate,
                max_seq_length=max_seq_length,
                mask_prob=mask_prob,
                num_items=num_items,
                long_sequence=long_sequence,
            )
            for features in pretrain_features(examples):
                yield prefix, features
