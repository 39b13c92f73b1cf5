"""Each composite PTransform of the job's step modules / writers on tiny hand-made input, and the
distributed k-core, ranks and SP look-ups against the whole-data reference functions."""

import itertools
import json
import os
import re
from collections import Counter

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_pipelines import algorithms, config, filtering, ids, job, kcore, parse, stats, writers
from beam_pipelines import pretrain_examples as pe
from beam_pipelines import segments as segment_steps
from beam_pipelines.attributes import BuildItemAttributes
from beam_pipelines.examples import WriteExamples
from beam_pipelines.histories import BuildHistories, S3RecHistories
from beam_pipelines.parse import Event
from s3rec_tf import schema


def _run(build):
    p = test_pipeline.TestPipeline()
    build(p)
    p.run().wait_until_finish()


def _stats(expected):
    return equal_to(list(expected.items()))


def test_filter_ratings():
    events = [
        Event("u", "a", 1, 5.0),
        Event("u", "b", 2, 3.0),
        Event("u", "c", 3, None),
        Event("v", "a", 4, 4.0),
    ]

    def build(p):
        kept = p | "Events" >> beam.Create(events) | filtering.FilterRatings(4.0)
        assert_that(kept["events"], equal_to([events[0], events[3]]), label="Kept")
        assert_that(
            kept["stats"],
            _stats({stats.DROPPED_BELOW_MIN_RATING: 1, stats.DROPPED_WITHOUT_RATING: 1}),
            label="Stats",
        )
        everything = p | "Events2" >> beam.Create(events) | "All" >> filtering.FilterRatings(None)
        assert_that(everything["events"], equal_to(events), label="KeptAll")

    _run(build)


def test_build_histories_orders_by_time_then_item_and_drops_exact_duplicates():
    events = [
        Event("u1", "c", 30, 5.0),
        Event("u1", "b", 10, 5.0),
        Event("u1", "a", 20, 1.0),
        Event("u1", "z", 20, 2.0),  # same time as "a": ordered by item id
        Event("u1", "b", 10, 3.0),  # exact duplicate (user, item, time): dropped
        Event("u1", "b", 40, 5.0),  # the same item later is a new event
        Event("u2", "x", 5, None),
    ]

    def build(p):
        out = p | beam.Create(events) | BuildHistories()
        assert_that(
            out["histories"],
            equal_to([("u1", ("b", "a", "z", "c", "b")), ("u2", ("x",))]),
            label="Histories",
        )
        assert_that(out["stats"], _stats({stats.DROPPED_DUPLICATE_EVENTS: 1}), label="Stats")

    _run(build)


def test_s3rec_histories_keep_the_first_line_of_a_user():
    lines = [(1, ("f", 1, (1, 2, 3))), (2, ("f", 2, (4, 5))), (1, ("f", 3, (9, 9)))]

    def build(p):
        out = p | beam.Create(lines) | S3RecHistories()
        assert_that(out["histories"], equal_to([(1, (1, 2, 3)), (2, (4, 5))]), label="H")
        assert_that(
            out["dead_letters"] | beam.Map(lambda d: (d["line"], d["reason"], d["record"])),
            equal_to([(3, parse.DUPLICATE_USER, "1 9 9")]),
            label="Dead",
        )

    _run(build)


def _reference_kcore(user_items, user_core, item_core):
    """The reference's filter_Kcore loop (data/data_process.py), re-derived with dicts."""
    user_items = {u: list(items) for u, items in user_items.items()}
    while True:
        user_count = {u: len(items) for u, items in user_items.items()}
        item_count = Counter(i for items in user_items.values() for i in items)
        if all(n >= user_core for n in user_count.values()) and all(
            n >= item_core for n in item_count.values()
        ):
            return user_items
        for u in list(user_items):
            if user_count[u] < user_core:
                del user_items[u]
            else:
                user_items[u] = [i for i in user_items[u] if item_count[i] >= item_core]


def test_kcore_needs_several_rounds():
    # Each removal makes the next: item d, then u3 (left with b), then b, then u1 (left with a).
    histories = [("u1", ("a", "b")), ("u2", ("a", "c")), ("u3", ("b", "d")), ("u4", ("a", "c"))]
    kept, rounds, users, interactions = algorithms.kcore(histories, 2, 2)
    assert kept == [("u2", ("a", "c")), ("u4", ("a", "c"))]
    assert (rounds, users, interactions) == (4, 2, 4)
    assert dict(kept) == {u: tuple(i) for u, i in _reference_kcore(dict(histories), 2, 2).items()}

    def build(p):
        out = p | beam.Create(histories) | kcore.KCore(2, 2, max_rounds=6)
        assert_that(out["histories"], equal_to(kept), label="Kept")
        assert_that(
            out["stats"],
            _stats(
                {
                    stats.KCORE_ROUNDS: 4,
                    stats.DROPPED_BY_KCORE_USERS: 2,
                    stats.DROPPED_BY_KCORE_INTERACTIONS: 4,
                }
            ),
            label="Stats",
        )

    _run(build)


@pytest.mark.parametrize("seed", range(5))
def test_kcore_equals_the_reference_loop(seed):
    rng = np.random.default_rng(seed)
    histories = [
        (f"u{u}", tuple(f"i{i}" for i in rng.zipf(1.6, size=rng.integers(1, 15)) % 60))
        for u in range(200)
    ]
    kept, _, _, _ = algorithms.kcore(histories, 5, 4)
    expected = _reference_kcore(dict(histories), 5, 4)
    assert dict(kept) == {u: tuple(items) for u, items in expected.items()}
    assert len(kept) > 10  # the example is not trivially empty


def _chain(length, prefix="c"):
    """Users u_k = (i_k, i_k+1): with 2-cores, each round peels one user off each end."""
    return [
        (f"{prefix}u{k:03d}", (f"{prefix}i{k:03d}", f"{prefix}i{k + 1:03d}")) for k in range(length)
    ]


def _random_graph(seed):
    rng = np.random.default_rng(seed)
    return [
        (f"u{u}", tuple(f"i{i}" for i in rng.zipf(1.5, size=rng.integers(1, 12)) % 80))
        for u in range(150)
    ]


@pytest.mark.slow
def test_distributed_kcore_equals_the_reference_on_random_graphs_and_chains():
    """The unrolled rounds give `algorithms.kcore`'s histories and stats: random power-law graphs
    (several cores), a chain that needs many rounds (peeled one user per end and round) and a
    chain joined to a dense core (which survives)."""
    dense = [(f"d{u}", tuple(f"x{(u + k) % 6}" for k in range(4))) for u in range(6)]
    cases = [
        (_random_graph(seed), uc, ic)
        for seed, (uc, ic) in enumerate([(5, 4), (3, 3), (4, 6), (2, 2)])
    ]
    cases += [(_chain(13), 2, 2), (dense + _chain(9, "e") + [("bridge", ("x0", "ei000"))], 2, 2)]
    expected = []
    for histories, uc, ic in cases:
        kept, rounds, users, interactions = algorithms.kcore(histories, uc, ic)
        expected.append(
            (
                kept,
                {
                    stats.KCORE_ROUNDS: rounds,
                    stats.DROPPED_BY_KCORE_USERS: users,
                    stats.DROPPED_BY_KCORE_INTERACTIONS: interactions,
                },
            )
        )
    assert expected[4][1][stats.KCORE_ROUNDS] == 13 and not expected[4][0]
    assert expected[5][0] and expected[5][1][stats.KCORE_ROUNDS] == 20
    assert all(len(kept) > 5 for kept, _ in expected[:3])

    def build(p):
        for k, ((histories, uc, ic), (kept, counts)) in enumerate(zip(cases, expected)):
            # Exactly as many rounds as the data needs (the check round then finds nothing).
            rounds = counts[stats.KCORE_ROUNDS]
            out = p | f"H{k}" >> beam.Create(histories) | f"K{k}" >> kcore.KCore(uc, ic, rounds)
            assert_that(out["histories"], equal_to(kept), label=f"Kept{k}")
            assert_that(out["stats"], _stats(counts), label=f"Stats{k}")

    _run(build)


def test_distributed_kcore_fails_when_the_rounds_do_not_suffice():
    histories = _chain(13)
    _, rounds, _, _ = algorithms.kcore(histories, 2, 2)

    def build(max_rounds):
        p = test_pipeline.TestPipeline()
        _ = p | beam.Create(histories) | kcore.KCore(2, 2, max_rounds)
        p.run().wait_until_finish()

    build(rounds)  # exactly enough
    with pytest.raises(Exception, match=f"--kcore_max_rounds={rounds - 1}"):
        build(rounds - 1)


def test_kcore_round_pieces():
    assert algorithms.rare_item_users("i", iter([("a", 1), ("b", 2)]), 4) == [
        ("a", "i"),
        ("b", "i"),
    ]
    # Stops reading once the item is frequent enough: the rest may be endless.
    assert algorithms.rare_item_users("i", itertools.repeat(("a", 1)), 4) == []
    assert algorithms.apply_kcore_round(("x", "y"), ["x"], 3) == (None, 2)
    assert algorithms.apply_kcore_round(("x", "y", "x", "z"), ["x"], 3) == (("y", "z"), 2)
    assert algorithms.apply_kcore_round(("x", "x", "x"), ["x"], 3) == (None, 3)
    assert algorithms.apply_kcore_round(("x", "y", "z"), [], 3) == (("x", "y", "z"), 0)


def test_assign_ids_sorted_raw_ids():
    histories = [("bob", ("x2", "x1")), ("al", ("x3", "x2", "x2"))]

    def build(p):
        out = p | beam.Create(histories) | ids.AssignIds(keep_raw_ids=False)
        assert_that(out["histories"], equal_to([(2, (2, 1)), (1, (3, 2, 2))]), label="H")
        assert_that(out["item_vocab"], equal_to([(1, "x1"), (2, "x2"), (3, "x3")]), label="I")
        assert_that(out["user_vocab"], equal_to([(1, "al"), (2, "bob")]), label="Users")
        assert_that(out["item_ids"], equal_to([("x1", 1), ("x2", 2), ("x3", 3)]), label="Pairs")
        assert_that(out["num_items"], equal_to([3]), label="NumItems")
        assert_that(out["num_users"], equal_to([2]), label="NumUsers")

    _run(build)


@pytest.mark.parametrize(
    "joined, counts",
    [
        ({"id": [], "at": [("al", (0,))]}, "0 item ids [] and 1 histories"),
        ({"id": [4], "at": []}, "1 item ids [4] and 0 histories"),
        ({"id": [4, 5], "at": [("al", (0,))]}, "2 item ids [4, 5] and 1 histories"),
    ],
)
def test_a_lost_or_split_item_join_stops_naming_the_item(joined, counts):
    """With two DirectRunner processes at a million items, half the items once came back
    without their id: the job stops at that item's join, not at a history short of ids."""
    assert list(ids._with_item_id(("x2", {"id": [7], "at": [("al", (0, 2)), ("bo", (1,))]}))) == [
        ("al", ((0, 2), 7)),
        ("bo", ((1,), 7)),
    ]
    with pytest.raises(RuntimeError, match=r"item 'x2' \(str\) joined " + re.escape(counts)):
        list(ids._with_item_id(("x2", joined)))


def test_assign_ids_keeps_s3rec_ids():
    histories = [(4, (7, 2)), (1, (2, 5))]

    def build(p):
        out = p | beam.Create(histories) | ids.AssignIds(keep_raw_ids=True)
        assert_that(out["histories"], equal_to(histories), label="H")
        assert_that(out["item_ids"], equal_to([(2, 2), (5, 5), (7, 7)]), label="Pairs")
        assert_that(out["item_vocab"], equal_to([(k, str(k)) for k in range(1, 8)]), label="I")
        assert_that(out["user_vocab"], equal_to([(k, str(k)) for k in range(1, 5)]), label="U")
        assert_that(out["num_items"], equal_to([7]), label="NumItems")

    _run(build)


@pytest.mark.parametrize("per_bucket", [1, 3, 1000])
def test_dense_rank_equals_sorting_whatever_the_buckets(per_bucket):
    rng = np.random.default_rng(per_bucket)
    values = sorted({f"v{int(x)}" for x in rng.integers(0, 10**6, size=300)})
    shuffled = [values[k] for k in rng.permutation(len(values))]

    def build(p):
        out = p | beam.Create(shuffled) | ids.DenseRank(per_bucket=per_bucket, sample_size=40)
        assert_that(out["ranks"], equal_to([(v, k) for k, v in enumerate(values, 1)]), label="R")
        assert_that(out["count"], equal_to([len(values)]), label="N")

    _run(build)


def test_rank_helpers():
    bounds = algorithms.bucket_boundaries(range(100), 100, 10)
    assert len(bounds) == 9 and bounds == sorted(bounds)
    assert algorithms.bucket_boundaries([5], 1, 10) == []
    assert algorithms.rank_offsets({2: 5, 0: 3, 7: 1}) == {0: 0, 2: 3, 7: 8}
    assert algorithms.rank_bucket(["b", "a"], 10) == [("a", 11), ("b", 12)]
    assert (
        algorithms.stable_hash("abc")
        == algorithms.stable_hash("abc")
        != algorithms.stable_hash("abd")
    )


def test_build_item_attributes():
    attributes = [
        ("x1", ("brand-a", "cat")),
        ("x1", ("cat", "sub")),  # a second record of x1: merged
        ("x2", ("brand-b", "cat")),
        ("x3", ()),  # metadata without attributes
        ("gone", ("cat", "brand-a")),  # not in the data: ignored, also for the counts
    ]
    item_ids = [("x1", 1), ("x2", 2), ("x3", 3), ("x4", 4)]

    def build(p, min_count, table, vocab):
        out = {
            "attributes": p | f"A{min_count}" >> beam.Create(attributes),
            "item_ids": p | f"I{min_count}" >> beam.Create(item_ids),
        } | f"Build{min_count}" >> BuildItemAttributes(min_count, False)
        assert_that(out["table"], equal_to(list(table.items())), label=f"Table{min_count}")
        assert_that(
            out["attribute_vocab"], equal_to(list(enumerate(vocab, 1))), label=f"Vocab{min_count}"
        )
        assert_that(out["num_attributes"], equal_to([len(vocab)]), label=f"N{min_count}")

    def both(p):
        build(p, 1, {1: [1, 3, 4], 2: [2, 3], 3: []}, ["brand-a", "brand-b", "cat", "sub"])
        build(p, 2, {1: [1], 2: [1], 3: []}, ["cat"])

    _run(both)


def test_build_item_attributes_keeps_s3rec_ids():
    def build(p):
        out = {
            "attributes": p | "A" >> beam.Create([(1, (5, 2)), (2, (2,)), (9, (8,))]),
            "item_ids": p | "I" >> beam.Create([(1, 1), (2, 2)]),
        } | BuildItemAttributes(1, True)
        assert_that(out["table"], equal_to([(1, [2, 5]), (2, [2])]), label="Table")
        assert_that(
            out["attribute_vocab"], equal_to([(k, str(k)) for k in range(1, 6)]), label="Vocab"
        )

    _run(build)


def _read(pattern, features):
    files = sorted(tf.io.gfile.glob(pattern))
    return [
        {k: v.numpy().tolist() for k, v in tf.io.parse_single_example(r, features).items()}
        for f in files
        for r in tf.data.TFRecordDataset(f)
    ], files


@pytest.mark.parametrize("users_per_block,positions_per_block", [(20_000, 1 << 16), (2, 5)])
def test_write_examples(tmp_path, monkeypatch, users_per_block, positions_per_block):
    """Blocks of users and of long-sequence positions, however small, give the examples that the
    whole long sequence gives."""
    monkeypatch.setattr(segment_steps, "USERS_PER_BLOCK", users_per_block)
    monkeypatch.setattr(segment_steps, "POSITIONS_PER_BLOCK", positions_per_block)
    out = str(tmp_path)
    rng = np.random.default_rng(0)
    num_items = 30
    histories = [
        (u, tuple(rng.integers(1, num_items + 1, size=rng.integers(3, 12)).tolist()))
        for u in range(1, 12)
    ]
    long_sequence = algorithms.long_sequence(histories)

    def build(p):
        hs = p | "H" >> beam.Create(histories)
        num_shards = p | "S" >> beam.Create([3])
        segments = hs | segment_steps.NegativeSegments(
            out,
            schema.SEQUENCES_FILE,
            num_shards=num_shards,
            dupe_factor=2,
            max_seq_length=5,
            seed=3,
        )
        _ = segments["sequence_parts"] | writers.JoinParts(out, schema.SEQUENCES_FILE)
        assert_that(segments["num_interactions"], equal_to([len(long_sequence)]), label="T")
        counts = {"histories": hs, "segments": segments["segments"]} | WriteExamples(
            out,
            num_items=p | "N" >> beam.Create([num_items]),
            num_shards=num_shards,
            num_interactions=segments["num_interactions"],
            dupe_factor=2,
            max_seq_length=5,
            mask_prob=0.2,
            num_negatives=7,
            seed=3,
        )
        per_dupe = sum(pe.num_pretrain_examples(len(items), 5) for _, items in histories)
        assert_that(
            counts,
            equal_to(
                [
                    ("users", 11),
                    ("train/part", 11),
                    ("valid/part", 11),
                    ("test/part", 11),
                    (schema.pretrain_prefix(0), per_dupe),
                    (schema.pretrain_prefix(1), per_dupe),
                ]
            ),
        )

    _run(build)
    with open(os.path.join(out, schema.SEQUENCES_FILE)) as f:
        assert f.read() == algorithms.sequences_text(histories)
    negatives = dict(
        zip(
            [u for u, _ in histories],
            pe.sample_negatives(histories, seed=3, num_items=num_items, num_negatives=7).tolist(),
        )
    )
    by_user = dict(histories)
    for split in schema.SPLITS:
        records, files = _read(
            schema.shard_glob(out, schema.split_prefix(split)), schema.split_features(split)
        )
        assert [os.path.basename(f) for f in files] == [
            f"part-{s:05d}-of-00003.tfrecord" for s in range(3)
        ]
        # Shard s holds users u with u % 3 == s, in user order.
        assert [r[schema.USER] for r in records] == sorted(by_user, key=lambda u: (u % 3, u))
        for r in records:
            items = list(by_user[r[schema.USER]])
            if split == "train":
                assert r[schema.HISTORY] == items[:-2] and r[schema.HELDOUT] == items[-2:]
            else:
                target = -2 if split == "valid" else -1
                assert r[schema.HISTORY] == items[:target] and r[schema.TARGET] == items[target]
                assert r[schema.NEGATIVES] == negatives[r[schema.USER]]
    for duplicate in range(2):
        records, _ = _read(
            schema.shard_glob(out, schema.pretrain_prefix(duplicate)), schema.PRETRAIN_FEATURES
        )
        users = sorted(by_user, key=lambda u: (u % 3, u))
        expected = pe.make_pretrain_examples(
            [(u, by_user[u]) for u in users],
            seed=3,
            duplicate=duplicate,
            max_seq_length=5,
            mask_prob=0.2,
            num_items=num_items,
            long_sequence=long_sequence,
        )
        assert len(records) == expected.num_examples
        for i, r in enumerate(records):
            assert r[schema.USER] == expected.user[i]
            for name, values in expected.example(i).items():
                assert r[name] == values.tolist(), name


def test_write_dead_letters_sorts_and_counts(tmp_path):
    letters = [
        parse.dead_letter("b", 2, parse.BAD_JSON, "x", "r2"),
        parse.dead_letter("a", 9, parse.BAD_TIME, "x", "r1"),
        parse.dead_letter("a", None, parse.BAD_JSON, "x", "r0"),
    ]

    def build(p):
        written = (
            p
            | beam.Create(letters)
            | writers.WriteDeadLetters(
                str(tmp_path), [parse.BAD_JSON, parse.BAD_TIME, parse.BAD_RATING]
            )
        )
        assert_that(
            written["counts"],
            equal_to([{parse.BAD_JSON: 2, parse.BAD_RATING: 0, parse.BAD_TIME: 1}]),
        )

    _run(build)
    with open(tmp_path / writers.DEAD_LETTER_FILE) as f:
        written = [json.loads(line) for line in f]
    assert [(d["file"], d["line"]) for d in written] == [("a", None), ("a", 9), ("b", 2)]


def test_remove_previous_outputs_only_touches_job_files(tmp_path):
    ours = [
        "metadata.json",
        "vocab/items.txt",
        "train/part-00000-of-00009.tfrecord",
        "pretrain/dupe-00003/part-00001-of-00002.tfrecord",
        "dead_letter/records-00000-of-00001.jsonl",
    ]
    theirs = ["notes.txt", "train/README", "pretrain/keep.tfrecord"]
    for name in ours + theirs:
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_text("x")
    removed = config.remove_previous_outputs(str(tmp_path), job.JOB_FILES)
    assert sorted(os.path.relpath(p, tmp_path) for p in removed) == sorted(ours)
    assert all((tmp_path / name).exists() for name in theirs)


def test_item_attribute_table_counts_items_not_records():
    table, vocab = algorithms.attribute_table(
        [(1, ("a", "b")), (2, ("a",)), (3, ("c",))], min_count=2, keep_raw_ids=False
    )
    assert table == {1: [1], 2: [1], 3: []} and vocab == ["a"]
