"""tf.data readers against the schema contract (tests/dataset_fixture.py writes the data)."""

import collections
import json
import os

import numpy as np
import pytest
import tensorflow as tf  # noqa: E402

from s3rec_tf import data as data_lib
from s3rec_tf import data_files, padding, schema

from dataset_fixture import small_dataset  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data"))
    metadata, sequences = small_dataset(out)
    return out, metadata, sequences


def _rows(dense):
    """Left-padded rows -> lists without padding, checking that padding is only on the left."""
    rows = []
    for row in np.asarray(dense):
        nonzero = np.flatnonzero(row)
        if len(nonzero):
            assert np.all(row[nonzero[0] :] != 0), f"padding inside or right of a row: {row}"
            rows.append(row[nonzero[0] :].tolist())
        else:
            rows.append([])
    return rows


def _raw_examples(out, prefix):
    """Every record of a shard set as {feature: list of ints}, parsed with protobuf alone."""
    examples = []
    for path in sorted(tf.io.gfile.glob(os.path.join(out, prefix) + "*")):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            features = tf.train.Example.FromString(record).features.feature
            examples.append({k: list(v.int64_list.value) for k, v in features.items()})
    return examples


def test_left_pad_matches_numpy():
    right = np.array([[1, 2, 3, 0, 0], [4, 0, 0, 0, 0], [5, 6, 7, 8, 9]])
    lengths = (right > 0).sum(1)
    got = padding.left_pad(tf.constant(right), tf.constant(lengths, tf.int32)).numpy()
    want = np.array([[0, 0, 1, 2, 3], [0, 0, 0, 0, 4], [5, 6, 7, 8, 9]])
    np.testing.assert_array_equal(got, want)


def test_read_metadata_errors(tmp_path, dataset):
    with pytest.raises(data_files.DataError, match="metadata.json not found"):
        data_files.read_metadata(str(tmp_path))
    meta = json.load(open(os.path.join(dataset[0], schema.METADATA_FILE)))
    meta["format_version"] = 999
    (tmp_path / schema.METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(data_files.DataError, match="format version 999"):
        data_files.read_metadata(str(tmp_path))
    del meta["num_items"]
    (tmp_path / schema.METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(data_files.DataError, match="missing key"):
        data_files.read_metadata(str(tmp_path))


def test_pretrain_epoch_reads_every_example_once_left_padded(dataset):
    out, metadata, _ = dataset
    data = data_lib.PretrainData(out, metadata, batch_size=16, max_seq_length=10, seed=1)
    seen = collections.Counter()
    for batch in data.dataset(epoch=0):
        widths = {v.shape[1] for v in batch.values()}
        assert len(widths) == 1 and widths.pop() <= 10
        assert batch[schema.POS_ITEMS].shape[0] <= 16
        rows = {name: _rows(value) for name, value in batch.items()}
        for i, pos in enumerate(rows[schema.POS_ITEMS]):
            # All six sequences of an example stay aligned on the same positions.
            for name in schema.PRETRAIN_SEQUENCES:
                assert len(rows[name][i]) == len(pos)
            seen[(tuple(pos), tuple(rows[schema.MASKED_ITEM_SEQUENCE][i]))] += 1
    assert sum(seen.values()) == metadata["num_pretrain_examples"]
    # Every example once: the same multiset as the shards of duplicate 0, read with protobuf.
    want = collections.Counter(
        (tuple(e[schema.POS_ITEMS]), tuple(e[schema.MASKED_ITEM_SEQUENCE]))
        for e in _raw_examples(out, schema.pretrain_prefix(0))
    )
    assert seen == want
    # Batches are padded to their own longest sequence, not to max_seq_length.
    widths = [b[schema.POS_ITEMS].shape[1] for b in data.dataset(epoch=0)]
    assert min(widths) < 10


def test_pretrain_data_too_large_to_cache_is_read_from_files_in_the_same_batches(dataset):
    out, metadata, _ = dataset

    def batches(cache_bytes):
        data = data_lib.PretrainData(out, metadata, 16, 10, seed=1, cache_bytes=cache_bytes)
        epochs = [[{k: v.numpy() for k, v in b.items()} for b in data.dataset(e)] for e in (0, 1)]
        return data.cache, epochs

    full_width = metadata["num_pretrain_examples"] * 6 * metadata["max_seq_length"] * 4
    cached, in_memory = batches(full_width)
    uncached, from_files = batches(full_width - 1)
    assert cached and not uncached
    for a, b in zip(in_memory, from_files, strict=True):
        for x, y in zip(a, b, strict=True):
            assert x.keys() == y.keys()
            for key in x:
                np.testing.assert_array_equal(x[key], y[key])


def test_pretrain_epochs_cycle_through_duplicates(dataset):
    out, metadata, _ = dataset
    data = data_lib.PretrainData(out, metadata, batch_size=1000, max_seq_length=10, seed=1)

    def masks(epoch):
        batches = list(data.dataset(epoch, shuffle=False))
        return sorted(
            (tuple(p), tuple(m))
            for b in batches
            for p, m in zip(_rows(b[schema.POS_ITEMS]), _rows(b[schema.MASKED_ITEM_SEQUENCE]))
        )

    assert data.duplicate(0) == 0 and data.duplicate(1) == 1 and data.duplicate(2) == 0
    assert masks(0) != masks(1)
    assert masks(0) == masks(2)


def test_sample_negatives_never_hits_excluded():
    exclude = tf.constant(np.arange(1, 19), tf.int64)  # 18 of 20 items excluded
    got = data_lib.sample_negatives(tf.zeros([50]), exclude, 20, 4, tf.constant([3, 4], tf.int64))
    got = got.numpy()
    assert got.shape == (50, 4)
    assert set(np.unique(got)) <= {19, 20}
    again = data_lib.sample_negatives(tf.zeros([50]), exclude, 20, 4, tf.constant([3, 4], tf.int64))
    np.testing.assert_array_equal(got, again.numpy())  # stateless: same seed, same draws


def test_finetune_train_batches(dataset):
    out, metadata, sequences = dataset
    ds = data_lib.finetune_train_dataset(
        out, metadata["num_items"], batch_size=8, max_seq_length=10, num_negatives=3, seed=5
    )
    users_seen = 0
    first_epoch_negatives = []
    for batch in ds:
        inputs = _rows(batch[data_lib.INPUT_IDS])
        targets = _rows(batch[data_lib.TARGET_IDS])
        negatives = batch[data_lib.NEGATIVE_IDS].numpy()
        for i, (inp, tgt) in enumerate(zip(inputs, targets)):
            users = [
                u for u, s in sequences.items() if s[:-2][-(len(inp) + 1) :] == inp + [tgt[-1]]
            ]
            assert users, f"no user has training part ending in {inp + [tgt[-1]]}"
            assert inp[1:] == tgt[:-1]  # target = next item
            w = negatives.shape[1]
            row = negatives[i, w - len(tgt) :]
            # Several users may share these items; the negatives avoid all items of one of them.
            assert any(not (set(row.ravel()) & set(sequences[u])) for u in users)
            assert row.min() >= 1 and row.max() <= metadata["num_items"]
            assert np.all(negatives[i, : w - len(tgt)] == 0)  # padding positions
        first_epoch_negatives.append(negatives.sum())
        users_seen += len(inputs)
    assert users_seen == metadata["num_users"]
    # Every user's example once: the multiset of (inputs, targets) the sequences give.
    want = collections.Counter()
    for seq in sequences.values():
        part = seq[:-2][-11:]
        want[(tuple(part[:-1]), tuple(part[1:]))] += 1
    assert _finetune_examples(ds) == want
    second = [b[data_lib.NEGATIVE_IDS].numpy().sum() for b in ds]
    assert first_epoch_negatives != second  # resampled every epoch


def _finetune_examples(ds, negatives=None):
    """Counter of (inputs, targets) over one pass; fills `negatives` {(inputs, targets): ...}."""
    seen = collections.Counter()
    for batch in ds:
        width = batch[data_lib.INPUT_IDS].shape[1]
        rows = zip(_rows(batch[data_lib.INPUT_IDS]), _rows(batch[data_lib.TARGET_IDS]))
        for i, (inp, tgt) in enumerate(rows):
            key = (tuple(inp), tuple(tgt))
            seen[key] += 1
            if negatives is not None:
                negatives[key] = batch[data_lib.NEGATIVE_IDS].numpy()[i, width - len(tgt) :]
    return seen


def _unique_keys(*counters):
    return [k for k in counters[0] if all(c[k] == 1 for c in counters)]


def test_finetune_negatives_are_redrawn_every_epoch_for_every_example(dataset):
    """Not only the batch sums: the same example's negatives differ between epochs (one fit over
    one dataset, and one dataset per epoch), and an epoch read twice is the same."""
    out, metadata, _ = dataset

    def negatives_of(ds):
        negatives = {}
        seen = _finetune_examples(ds, negatives)
        return seen, negatives

    def dataset_for(epoch):
        return data_lib.finetune_train_dataset(
            out,
            metadata["num_items"],
            batch_size=8,
            max_seq_length=10,
            num_negatives=3,
            seed=5,
            epoch=epoch,
        )

    redrawn = dataset_for(None)
    for first, second in [
        (negatives_of(redrawn), negatives_of(redrawn)),
        (negatives_of(dataset_for(0)), negatives_of(dataset_for(1))),
    ]:
        keys = _unique_keys(first[0], second[0])
        assert len(keys) > 40
        same = [k for k in keys if np.array_equal(first[1][k], second[1][k])]
        assert len(same) <= 2, f"{len(same)} of {len(keys)} examples kept their negatives"
    once, again = negatives_of(dataset_for(3)), negatives_of(dataset_for(3))
    keys = _unique_keys(once[0], again[0])
    assert all(np.array_equal(once[1][k], again[1][k]) for k in keys)


@pytest.mark.parametrize("max_seq_length", [3, 10])
def test_mean_finetune_targets_counts_the_targets_of_the_training_batches(dataset, max_seq_length):
    out, metadata, sequences = dataset
    train_parts = [s[:-2] for s in sequences.values() if len(s[:-2]) >= 2]
    want = np.mean([min(len(p), max_seq_length + 1) - 1 for p in train_parts])
    got = data_files.mean_finetune_targets(out, max_seq_length)
    np.testing.assert_allclose(got, want)
    ds = data_lib.finetune_train_dataset(
        out,
        metadata["num_items"],
        batch_size=8,
        max_seq_length=max_seq_length,
        num_negatives=1,
        seed=0,
    )
    targets = examples = 0
    for batch in ds:
        targets += int(tf.math.count_nonzero(batch[data_lib.TARGET_IDS]))
        examples += int(batch[data_lib.TARGET_IDS].shape[0])
    np.testing.assert_allclose(got, targets / examples)


def test_eval_dataset(dataset):
    out, metadata, sequences = dataset
    for split, cut in (("valid", -2), ("test", -1)):
        batches = list(data_lib.eval_dataset(out, split, batch_size=7, max_seq_length=4))
        total = 0
        for b in batches:
            for user, inp, target, hist in zip(
                b[schema.USER].numpy(),
                _rows(b[data_lib.INPUT_IDS]),
                b[data_lib.TARGET].numpy(),
                b[data_lib.HISTORY].numpy(),
            ):
                hist = [h for h in hist if h]
                assert hist == sequences[user][:cut]
                assert target == sequences[user][cut]
                assert inp == hist[-4:]
            assert b[data_lib.NEGATIVES].shape[1] == metadata["num_negatives"]
            total += len(b[data_lib.TARGET])
        assert total == metadata["num_users"]


def test_eval_dataset_of_a_user_sample_reads_those_users_rows(dataset):
    out, metadata, _ = dataset
    num_users = metadata["num_users"]

    def rows(users, cache=True):
        ds = data_lib.eval_dataset(out, "valid", 5, 4, users=users, cache=cache)
        return {
            int(u): (int(t), tuple(h[h > 0]))
            for b in ds
            for u, t, h in zip(
                b[schema.USER].numpy(), b[data_lib.TARGET].numpy(), b[data_lib.HISTORY].numpy()
            )
        }

    every = rows(None)
    assert sorted(every) == list(range(1, num_users + 1))  # user ids are 1..U
    sample = data_lib.user_sample(num_users, 7, seed=3)
    assert len(sample) == 7 and len(set(sample)) == 7
    assert sample.min() >= 1 and sample.max() <= num_users
    np.testing.assert_array_equal(sample, data_lib.user_sample(num_users, 7, seed=3))
    assert not np.array_equal(sample, data_lib.user_sample(num_users, 7, seed=4))
    assert rows(sample) == {u: every[u] for u in sample}
    assert rows(sample, cache=False) == rows(sample)
    # The last and the first id are found too (the binary search's edges).
    assert rows(np.array([1, num_users])) == {1: every[1], num_users: every[num_users]}
    drawn = np.concatenate([data_lib.user_sample(num_users, num_users - 1, s) for s in range(9)])
    assert set(drawn) == set(range(1, num_users + 1))  # every id can be drawn, and only those
    assert data_lib.user_sample(num_users, 0, seed=3) is None
    assert data_lib.user_sample(num_users, num_users, seed=3) is None


def test_item_attributes_and_popularity(dataset):
    out, metadata, sequences = dataset
    table = data_files.load_item_attributes(out, metadata["num_items"], metadata["num_attributes"])
    assert len(table) == metadata["num_items"] + 2 and table[0] == [] and table[-1] == []
    assert table[5] == sorted({6, 8})
    popularity = data_files.item_popularity(out, metadata["num_items"])
    want = np.zeros(metadata["num_items"] + 2, np.int64)
    for seq in sequences.values():
        np.add.at(want, seq[:-2], 1)
    np.testing.assert_array_equal(popularity, want)


def test_fixed_widths_pad_batches_to_their_bucket_bound(dataset):
    """For XLA: only a few distinct widths (the bucket bounds), every example still present once."""
    out, metadata, _ = dataset
    data = data_lib.PretrainData(
        out, metadata, batch_size=16, max_seq_length=10, seed=1, fixed_widths=True
    )
    widths, examples = set(), 0
    for batch in data.dataset(epoch=0):
        widths.add(batch[schema.POS_ITEMS].shape[1])
        examples += batch[schema.POS_ITEMS].shape[0]
        _rows(batch[schema.POS_ITEMS])  # still left-padded
    assert widths <= {b - 1 for b in data_lib._bucket_boundaries(10)}
    assert examples == metadata["num_pretrain_examples"]
    seen = collections.Counter(
        tuple(row) for b in data.dataset(epoch=0) for row in _rows(b[schema.POS_ITEMS])
    )
    want = collections.Counter(
        tuple(e[schema.POS_ITEMS]) for e in _raw_examples(out, schema.pretrain_prefix(0))
    )
    assert seen == want
