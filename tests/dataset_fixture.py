"""Writes a small preprocessed data directory straight from `s3rec_tf.schema`.

Independent of the Beam job on purpose: the tf.data readers and the models are tested against
the schema contract, the Beam job against the same contract in its own tests.
"""

import json
import os

import numpy as np
import tensorflow as tf  # noqa: E402

from s3rec_tf import schema

# A model small enough for the toy data: the training tests' common flags.
SMALL_MODEL = [
    "--hidden_size",
    "16",
    "--num_heads",
    "2",
    "--pretrain_batch_size",
    "32",
    "--verbose",
    "0",
]


def _int_feature(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _write(path, examples):
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for features in examples:
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={k: _int_feature(v) for k, v in features.items()}
                )
            )
            writer.write(example.SerializeToString())


def structured_sequences(num_users=60, num_items=40, min_len=5, max_len=16, seed=0):
    """Users walking a ring of items (item i is mostly followed by i + 1): learnable structure."""
    rng = np.random.default_rng(seed)
    sequences = {}
    for user in range(1, num_users + 1):
        length = int(rng.integers(min_len, max_len + 1))
        item = int(rng.integers(1, num_items + 1))
        seq = []
        for _ in range(length):
            seq.append(item)
            step = 1 if rng.random() < 0.85 else int(rng.integers(2, 5))
            item = (item - 1 + step) % num_items + 1
        sequences[user] = seq
    return sequences


def write_dataset(
    out_dir,
    sequences,
    num_items,
    item_attributes,
    num_attributes,
    max_seq_length=10,
    dupe_factor=2,
    num_negatives=9,
    mask_prob=0.3,
    seed=0,
    num_shards=2,
):
    """Writes metadata.json, item2attributes.json, vocab, pretraining and split shards."""
    rng = np.random.default_rng(seed)
    mask_id = num_items + 1
    users = sorted(sequences)
    shard_of = {u: i % num_shards for i, u in enumerate(users)}

    def negative(exclude):
        while True:
            item = int(rng.integers(1, num_items + 1))
            if item not in exclude:
                return item

    num_pretrain = 0
    for dupe in range(dupe_factor):
        shards = [[] for _ in range(num_shards)]
        for user in users:
            window = sequences[user][:-2][-max_seq_length:]
            for end in range(1, len(window) + 1):
                seq = window[:end]
                masked = [
                    mask_id if (i == end - 1 or rng.random() < mask_prob) else it
                    for i, it in enumerate(seq)
                ]
                negs = [negative(set(seq)) if m == mask_id else it for m, it in zip(masked, seq)]
                if end < 2:
                    mseg = pseg = nseg = seq
                else:
                    length = int(rng.integers(1, end // 2 + 1))
                    start = int(rng.integers(0, end - length + 1))
                    mseg = seq[:start] + [mask_id] * length + seq[start + length :]
                    pseg = (
                        [mask_id] * start
                        + seq[start : start + length]
                        + [mask_id] * (end - start - length)
                    )
                    other = [negative(set()) for _ in range(length)]
                    nseg = [mask_id] * start + other + [mask_id] * (end - start - length)
                shards[shard_of[user]].append(
                    {
                        schema.USER: [user],
                        schema.MASKED_ITEM_SEQUENCE: masked,
                        schema.POS_ITEMS: seq,
                        schema.NEG_ITEMS: negs,
                        schema.MASKED_SEGMENT_SEQUENCE: mseg,
                        schema.POS_SEGMENT: pseg,
                        schema.NEG_SEGMENT: nseg,
                    }
                )
        if dupe == 0:
            num_pretrain = sum(map(len, shards))
        for s, examples in enumerate(shards):
            _write(
                os.path.join(out_dir, schema.pretrain_prefix(dupe))
                + f"-{s:05d}-of-{num_shards:05d}{schema.TFRECORD_SUFFIX}",
                examples,
            )

    negatives = {}
    for user in users:
        seen = set(sequences[user])
        pool = np.array([i for i in range(1, num_items + 1) if i not in seen])
        negatives[user] = rng.choice(
            pool, size=min(num_negatives, len(pool)), replace=False
        ).tolist()
    splits = {
        "train": [[] for _ in range(num_shards)],
        "valid": [[] for _ in range(num_shards)],
        "test": [[] for _ in range(num_shards)],
    }
    for user in users:
        seq = sequences[user]
        s = shard_of[user]
        splits["train"][s].append(
            {schema.USER: [user], schema.HISTORY: seq[:-2], schema.HELDOUT: seq[-2:]}
        )
        splits["valid"][s].append(
            {
                schema.USER: [user],
                schema.HISTORY: seq[:-2],
                schema.TARGET: [seq[-2]],
                schema.NEGATIVES: negatives[user],
            }
        )
        splits["test"][s].append(
            {
                schema.USER: [user],
                schema.HISTORY: seq[:-1],
                schema.TARGET: [seq[-1]],
                schema.NEGATIVES: negatives[user],
            }
        )
    for split, shards in splits.items():
        for s, examples in enumerate(shards):
            _write(
                os.path.join(out_dir, schema.split_prefix(split))
                + f"-{s:05d}-of-{num_shards:05d}{schema.TFRECORD_SUFFIX}",
                examples,
            )

    os.makedirs(os.path.join(out_dir, schema.VOCAB_DIR), exist_ok=True)
    with open(os.path.join(out_dir, schema.ITEM_VOCAB), "w") as f:
        f.writelines(f"item{i}\n" for i in range(1, num_items + 1))
    with open(os.path.join(out_dir, schema.USER_VOCAB), "w") as f:
        f.writelines(f"user{u}\n" for u in users)
    with open(os.path.join(out_dir, schema.ATTRIBUTE_VOCAB), "w") as f:
        f.writelines(f"attr{a}\n" for a in range(1, num_attributes + 1))
    with open(os.path.join(out_dir, schema.ITEM2ATTRIBUTES_FILE), "w") as f:
        json.dump({str(i): a for i, a in item_attributes.items()}, f)
    with open(os.path.join(out_dir, schema.SEQUENCES_FILE), "w") as f:
        f.writelines(" ".join(map(str, [u] + sequences[u])) + "\n" for u in users)
    metadata = {
        "format_version": schema.FORMAT_VERSION,
        "num_users": len(users),
        "num_items": num_items,
        "num_attributes": num_attributes,
        "num_interactions": sum(map(len, sequences.values())),
        "num_pretrain_examples": num_pretrain,
        "dupe_factor": dupe_factor,
        "max_seq_length": max_seq_length,
        "mask_id": mask_id,
        "num_negatives": num_negatives,
        "num_bad_records": {},
        "config": {"source": "tests/dataset_fixture.py", "seed": seed},
    }
    with open(os.path.join(out_dir, schema.METADATA_FILE), "w") as f:
        json.dump(metadata, f)
    return metadata


def small_dataset(
    out_dir, num_users=60, num_items=40, num_attributes=8, max_seq_length=10, dupe_factor=2, seed=0
):
    """A structured toy dataset: attribute of item i = a category (i mod 8) + a coarse group."""
    sequences = structured_sequences(num_users, num_items, seed=seed)
    item_attributes = {i: sorted({(i % 6) + 1, 7 + (i % 2)}) for i in range(1, num_items + 1)}
    return write_dataset(
        out_dir,
        sequences,
        num_items,
        item_attributes,
        num_attributes,
        max_seq_length=max_seq_length,
        dupe_factor=dupe_factor,
        seed=seed,
    ), sequences
