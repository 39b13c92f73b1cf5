"""The per-user example rules (beam_pipelines.pretrain_examples) against the reference's rules,
re-derived here independently: exact structure for every example, distributions by counting."""

import numpy as np
import pytest

from beam_pipelines import pretrain_examples as pe
from s3rec_tf import schema

N = 40  # items
MASK = N + 1


def _histories(num_users=30, seed=0, min_len=1, max_len=70, num_items=N):
    rng = np.random.default_rng(seed)
    return [
        (user, tuple(rng.integers(1, num_items + 1, size=rng.integers(min_len, max_len + 1))))
        for user in range(1, num_users + 1)
    ]


def _long(histories):
    return np.array([i for _, items in histories for i in items], dtype=np.int64)


def _make(
    histories,
    seed=42,
    duplicate=0,
    max_seq_length=50,
    mask_prob=0.2,
    num_items=N,
    long_sequence=None,
):
    return pe.make_pretrain_examples(
        histories,
        seed=seed,
        duplicate=duplicate,
        max_seq_length=max_seq_length,
        mask_prob=mask_prob,
        num_items=num_items,
        long_sequence=_long(histories) if long_sequence is None else long_sequence,
    )


def _is_slice_of(segment, long_sequence):
    """True if `segment` occurs contiguously in `long_sequence`."""
    n = len(segment)
    windows = np.lib.stride_tricks.sliding_window_view(long_sequence, n)
    return bool((windows == segment).all(axis=1).any())


def test_fields_are_the_schema_features():
    assert pe.SEQUENCE_FIELDS == schema.PRETRAIN_SEQUENCES


def test_prefixes_of_the_reference_window():
    histories = _histories()
    examples = _make(histories, max_seq_length=20)
    expected = []
    for user, items in histories:
        window = list(items)[-(20 + 2) : -2]  # the reference: seq[-(max_len + 2):-2]
        expected += [(user, window[: i + 1]) for i in range(len(window))]
    assert examples.num_examples == len(expected)
    assert examples.num_examples == sum(
        pe.num_pretrain_examples(len(items), 20) for _, items in histories
    )
    for i, (user, prefix) in enumerate(expected):
        assert examples.user[i] == user
        np.testing.assert_array_equal(examples.example(i)["pos_items"], prefix)


@pytest.mark.parametrize("mask_prob", [0.0, 0.2, 1.0])
def test_masked_item_rules(mask_prob):
    histories = _histories(seed=1)
    examples = _make(histories, mask_prob=mask_prob)
    for i in range(examples.num_examples):
        ex = examples.example(i)
        seq, masked, neg = ex["pos_items"], ex["masked_item_sequence"], ex["neg_items"]
        assert len(seq) == len(masked) == len(neg)
        assert masked[-1] == MASK  # the last item is always masked
        is_masked = masked == MASK
        if mask_prob == 0.0:
            assert is_masked.sum() == 1
        if mask_prob == 1.0:
            assert is_masked.all()
        np.testing.assert_array_equal(masked[~is_masked], seq[~is_masked])
        np.testing.assert_array_equal(neg[~is_masked], seq[~is_masked])
        negatives = neg[is_masked]
        assert ((negatives >= 1) & (negatives <= N)).all()  # never padding or the mask id
        assert not np.isin(negatives, seq).any()  # not in the prefix's item set


def test_segment_rules():
    histories = _histories(seed=2)
    long_sequence = _long(histories)
    examples = _make(histories, long_sequence=long_sequence)
    for i in range(examples.num_examples):
        ex = examples.example(i)
        seq = ex["pos_items"]
        seg_masked, pos_seg, neg_seg = (
            ex["masked_segment_sequence"],
            ex["pos_segment"],
            ex["neg_segment"],
        )
        assert len(seg_masked) == len(pos_seg) == len(neg_seg) == len(seq)
        if len(seq) < 2:
            for s in (seg_masked, pos_seg, neg_seg):
                np.testing.assert_array_equal(s, seq)
            continue
        where = np.flatnonzero(seg_masked == MASK)
        start, length = where[0], len(where)
        np.testing.assert_array_equal(where, np.arange(start, start + length))  # contiguous
        assert 1 <= length <= len(seq) // 2
        outside = np.ones(len(seq), dtype=bool)
        outside[start : start + length] = False
        np.testing.assert_array_equal(seg_masked[outside], seq[outside])
        assert (pos_seg[outside] == MASK).all() and (neg_seg[outside] == MASK).all()
        np.testing.assert_array_equal(pos_seg[~outside], seq[~outside])
        assert _is_slice_of(neg_seg[~outside], long_sequence)


def test_mask_rate_matches_mask_prob():
    histories = _histories(num_users=300, seed=3, min_len=40, max_len=60, num_items=2000)
    examples = _make(histories, num_items=2000, mask_prob=0.2)
    masked = examples.masked_item_sequence == 2001
    last = np.zeros(len(masked), dtype=bool)
    last[examples.row_splits[1:] - 1] = True
    rate = masked[~last].mean()
    n = (~last).sum()
    assert abs(rate - 0.2) < 4 * np.sqrt(0.2 * 0.8 / n), (rate, n)


def test_negative_items_are_uniform_outside_the_prefix():
    # One user, length-1 prefix repeatedly over duplicates: the negative of the last position is
    # uniform over the N - 1 other items.
    num_items = 10
    counts = np.zeros(num_items + 1)
    for duplicate in range(4000):
        examples = _make([(7, (3, 4, 5, 6, 3))], duplicate=duplicate, num_items=num_items)
        counts[examples.neg_items[0]] += 1  # example 0 = [3], its only (last) position
    assert counts[0] == counts[3] == 0
    expected = 4000 / (num_items - 1)
    others = counts[[i for i in range(1, num_items + 1) if i != 3]]
    chi2 = (((others - expected) ** 2) / expected).sum()
    assert chi2 < 30, counts  # 8 degrees of freedom: p ~ 2e-4


def test_segment_length_and_start_are_uniform():
    # A 12-item prefix: length uniform in 1..6, then start uniform in 0..12 - length.
    items = tuple(range(1, 15))  # window = items 1..12; its last example has length 12
    lengths, starts = [], []
    for duplicate in range(3000):
        examples = _make([(1, items)], duplicate=duplicate, num_items=20)
        last = examples.example(examples.num_examples - 1)["masked_segment_sequence"]
        where = np.flatnonzero(last == 21)
        lengths.append(len(where))
        starts.append(where[0])
    lengths, starts = np.array(lengths), np.array(starts)
    counts = np.bincount(lengths, minlength=7)[1:]
    assert counts.min() > 3000 / 6 * 0.8 and counts.max() < 3000 / 6 * 1.2, counts
    for length in (1, 6):
        s = starts[lengths == length]
        assert s.min() == 0 and s.max() == 12 - length  # the full range is reachable


def test_negative_segment_start_covers_the_long_sequence():
    histories = [(1, (1, 2, 3, 4, 5)), (2, (6, 7, 8, 9, 10))]
    # The long sequence has 10 items (values = positions + 1).
    starts = set()
    for duplicate in range(400):
        ex = _make(histories, duplicate=duplicate, num_items=12).example(1)  # user 1, length 2
        segment = ex["neg_segment"][ex["neg_segment"] != 13]
        starts.add(int(segment[0]) - 1)
    assert starts == set(range(0, 10))  # length 1: starts 0..len(long) - 1


def test_deterministic_and_independent_of_batching():
    histories = _histories(seed=4)
    a, b = _make(histories), _make(histories)
    for name in a._fields:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    # Each user's examples depend only on (seed, user, duplicate): batches do not matter.
    alone = [_make([h], long_sequence=_long(histories)) for h in histories]
    for name in pe.SEQUENCE_FIELDS + ("user",):
        np.testing.assert_array_equal(
            getattr(a, name), np.concatenate([getattr(x, name) for x in alone])
        )


def test_duplicates_and_seeds_differ():
    histories = _histories(seed=5)
    base = _make(histories)
    for other in (_make(histories, duplicate=1), _make(histories, seed=43)):
        np.testing.assert_array_equal(other.pos_items, base.pos_items)
        assert not np.array_equal(other.masked_item_sequence, base.masked_item_sequence)
        assert not np.array_equal(other.masked_segment_sequence, base.masked_segment_sequence)


def test_no_examples_for_short_users():
    examples = _make([(1, (1, 2)), (2, (3,))])
    assert examples.num_examples == 0 and len(examples.row_splits) == 1


def test_a_prefix_holding_every_item_is_an_error():
    with pytest.raises(ValueError, match="no negative item"):
        _make([(1, (1, 2, 3, 1, 2))], num_items=3)


def test_leave_one_out():
    split = pe.leave_one_out((5, 6, 7, 8))
    assert split.train_history == [5, 6] and split.heldout == [7, 8]
    assert split.valid_history == [5, 6] and split.valid_target == 7
    assert split.test_history == [5, 6, 7] and split.test_target == 8
    with pytest.raises(ValueError, match="at least 3"):
        pe.leave_one_out((1, 2))


def test_sampled_negatives():
    histories = _histories(num_users=50, seed=6, min_len=3, max_len=20)
    negatives = pe.sample_negatives(histories, seed=42, num_items=N, num_negatives=15)
    assert negatives.shape == (50, 15)
    for (_, items), row in zip(histories, negatives):
        assert len(set(row.tolist())) == 15  # distinct
        assert not np.isin(row, items).any()  # never an item the user interacted with
        assert ((row >= 1) & (row <= N)).all()
    again = pe.sample_negatives(histories, seed=42, num_items=N, num_negatives=15)
    np.testing.assert_array_equal(again, negatives)
    # A user's row does not depend on the other users in the batch.
    np.testing.assert_array_equal(
        pe.sample_negatives(histories[3:4], seed=42, num_items=N, num_negatives=15)[0],
        negatives[3],
    )
    assert not np.array_equal(
        pe.sample_negatives(histories, seed=43, num_items=N, num_negatives=15), negatives
    )


def test_sampled_negatives_are_uniform():
    # 2000 users with the same items: every other item appears equally often.
    histories = [(user, (1, 2, 3)) for user in range(1, 2001)]
    negatives = pe.sample_negatives(histories, seed=0, num_items=12, num_negatives=4)
    counts = np.bincount(negatives.ravel(), minlength=13)
    assert counts[:4].sum() == 0
    expected = 2000 * 4 / 9
    chi2 = (((counts[4:] - expected) ** 2) / expected).sum()
    assert chi2 < 30, counts


def test_too_few_candidates_for_negatives():
    with pytest.raises(ValueError, match="user 9 interacted with 3 of the 5 items"):
        pe.sample_negatives([(9, (1, 2, 3))], seed=0, num_items=5, num_negatives=3)


@pytest.mark.real_data
def test_beauty_example_count(beauty_dir):
    with open(f"{beauty_dir}/Beauty.txt") as f:
        histories = [(int(u), tuple(map(int, rest))) for u, *rest in map(str.split, f)]
    assert sum(pe.num_pretrain_examples(len(items), 50) for _, items in histories) == 150_258
    long_sequence = _long(histories)
    total = 0
    for start in range(0, len(histories), 5000):
        total += _make(
            histories[start : start + 5000], num_items=12101, long_sequence=long_sequence
        ).num_examples
    assert total == 150_258
