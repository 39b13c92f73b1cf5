"""The whole preprocessing job on small inputs: options, outputs, raw-format round trip, dirty
input, determinism across runner parallelism."""

import json

import numpy as np
import pytest
import tensorflow as tf

from beam_pipelines import parse, preprocess, raw_format, writers
from s3rec_tf import schema

from tree_bytes import tree_bytes  # noqa: E402

BASE_USERS = 40
NUM_ITEMS = 28


def _write_s3rec(directory):
    """A small S3-Rec data set that is 5-core except for one short user (41) and one rare item
    (30, seen once by user 3), which the job must drop. Items 26, 27 and 29 never occur, so the
    kept ids have holes. Returns the expected kept histories and the item2attributes table."""
    rng = np.random.default_rng(0)
    histories = {}
    for user in range(1, BASE_USERS + 1):
        # Users stay in a "category" of items, so that the data has some structure.
        low = rng.integers(0, 15)
        histories[user] = [
            int(i) for i in rng.integers(low + 1, low + 11, size=rng.integers(5, 16))
        ]
    for item in [*range(1, 26), 28]:  # every item at least 5 times
        for user in range(1, 6):
            histories[(item + user) % BASE_USERS + 1].append(item)
    expected = {u: list(items) for u, items in histories.items()}
    histories[3] = histories[3][:2] + [30] + histories[3][2:]
    lines = [" ".join(map(str, [u, *histories[u]])) for u in sorted(histories)]
    lines.insert(5, "41 1 2")  # user 41: two interactions, below --user_core
    item2attributes = {str(i): sorted({i % 4 + 1, i % 7 + 5}) for i in range(1, 31)}
    item2attributes["3"] = []
    (directory / "seq.txt").write_text("\n".join(lines) + "\n")
    (directory / "i2a.json").write_text(json.dumps(item2attributes))
    return expected, item2attributes


@pytest.fixture(scope="module")
def s3rec_input(tmp_path_factory):
    directory = tmp_path_factory.mktemp("s3rec")
    expected, item2attributes = _write_s3rec(directory)
    return directory, expected, item2attributes


def _run_job(*args):
    # The inputs here need 2 k-core rounds; the job's default 20 unrolled rounds would only add
    # empty Beam stages (about 4 s per job). Too few rounds fail the job, naming the flag.
    preprocess.run([str(a) for a in ("--kcore_max_rounds", 3, *args)])


def _parse(directory, prefix, features):
    records = []
    for path in sorted(tf.io.gfile.glob(schema.shard_glob(str(directory), prefix))):
        for r in tf.data.TFRecordDataset(path):
            parsed = tf.io.parse_single_example(r, features)
            records.append({k: v.numpy().tolist() for k, v in parsed.items()})
    return records


def _raw_histories(directory):
    """{raw user: [raw items]} from an output directory's sequences.txt and vocab files."""
    with open(directory / schema.USER_VOCAB) as f:
        users = f.read().splitlines()
    with open(directory / schema.ITEM_VOCAB) as f:
        items = f.read().splitlines()
    with open(directory / schema.SEQUENCES_FILE) as f:
        lines = [list(map(int, line.split())) for line in f]
    return {users[u - 1]: [items[i - 1] for i in rest] for u, *rest in lines}


def _raw_attributes(directory):
    """{raw item: set of raw attribute names} from an output directory."""
    with open(directory / schema.ITEM_VOCAB) as f:
        items = f.read().splitlines()
    with open(directory / schema.ATTRIBUTE_VOCAB) as f:
        names = f.read().splitlines()
    with open(directory / schema.ITEM2ATTRIBUTES_FILE) as f:
        table = json.load(f)
    return {items[int(i) - 1]: {names[a - 1] for a in attrs} for i, attrs in table.items()}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--output", "o"], "either --reviews and --metadata"),
        (
            [
                "--output",
                "o",
                "--reviews",
                "r",
                "--metadata",
                "m",
                "--sequences",
                "s",
                "--item2attributes",
                "i",
            ],
            "not both",
        ),
        (["--output", "o", "--reviews", "r"], "--reviews and --metadata must be given together"),
        (
            ["--output", "o", "--sequences", "s", "--item2attributes", "i", "--min_rating", "3"],
            "--min_rating needs ratings",
        ),
        (
            ["--output", "o", "--sequences", "s", "--item2attributes", "i", "--mask_prob", "1.5"],
            "--mask_prob=1.5 must be in",
        ),
        (
            ["--output", "o", "--sequences", "s", "--item2attributes", "i", "--user_core", "2"],
            "--user_core=2 must be >= 3",
        ),
        (
            ["--output", "o", "--sequences", "s", "--item2attributes", "i", "--dupe_factor", "0"],
            "--dupe_factor=0",
        ),
        (
            ["--output", "o", "--sequences", "s", "--item2attributes", "i", "--seed", "-1"],
            "--seed=-1",
        ),
        (
            ["--output", "o", "--sequences", "s", "--item2attributes", "i", "--num_shards", "x"],
            "invalid int value",
        ),
        (
            ["--output", "o", "--sequences", "s", "--item2attributes", "i", "--max_seq_lenght=5"],
            "unrecognized argument --max_seq_lenght; did you mean --max_seq_length?",
        ),
    ],
)
def test_bad_options_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        preprocess.run(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_inputs_exit_naming_the_glob(tmp_path, capsys):
    (tmp_path / "i2a.json").write_text("{}")
    glob = str(tmp_path / "no-such-*.txt")
    with pytest.raises(SystemExit):
        preprocess.run(
            [
                "--sequences",
                glob,
                "--item2attributes",
                str(tmp_path / "i2a.json"),
                "--output",
                str(tmp_path / "out"),
            ]
        )
    assert f"--sequences {glob!r} matches no files" in capsys.readouterr().err


@pytest.mark.slow
def test_s3rec_job(s3rec_input, tmp_path):
    directory, expected, item2attributes = s3rec_input
    out = tmp_path / "out"
    stale = [
        out / "train" / "part-00005-of-00009.tfrecord",
        out / "pretrain" / "dupe-00007" / "part-00000-of-00001.tfrecord",
    ]
    for path in stale:  # left by an earlier run with more shards and duplicates
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"stale")
    _run_job(
        "--sequences",
        directory / "seq.txt",
        "--item2attributes",
        directory / "i2a.json",
        "--output",
        out,
        "--max_seq_length",
        8,
        "--num_negatives",
        8,
        "--dupe_factor",
        2,
        "--num_shards",
        3,
    )
    with open(out / schema.METADATA_FILE) as f:
        metadata = json.load(f)
    assert set(schema.METADATA_KEYS) <= set(metadata)
    assert not any(path.exists() for path in stale)
    assert len([p for p in tree_bytes(out) if p.endswith(".tfrecord")]) == 3 * (3 + 2)
    num_items = max(i for items in expected.values() for i in items)
    kept_items = {i for items in expected.values() for i in items}
    num_pretrain = sum(min(max(len(items) - 2, 0), 8) for items in expected.values())
    assert metadata["num_users"] == BASE_USERS
    assert metadata["num_items"] == num_items == NUM_ITEMS
    assert metadata["mask_id"] == num_items + 1
    assert metadata["num_interactions"] == sum(map(len, expected.values()))
    assert metadata["num_pretrain_examples"] == num_pretrain
    assert metadata["num_attributes"] == 11
    assert metadata["dupe_factor"] == 2 and metadata["max_seq_length"] == 8
    assert metadata["num_bad_records"] == dict.fromkeys(parse.ALL_S3REC_KINDS, 0)
    assert metadata["stats"]["dropped_by_kcore_users"] == 1
    assert metadata["stats"]["dropped_by_kcore_interactions"] == 3
    assert metadata["config"]["num_shards"] == 3 and metadata["config"]["seed"] == 42

    # Ids are kept: sequences.txt is the input minus what k-core dropped.
    with open(out / schema.SEQUENCES_FILE) as f:
        assert f.read() == "".join(
            " ".join(map(str, [u, *expected[u]])) + "\n" for u in sorted(expected)
        )
    with open(out / schema.ITEM2ATTRIBUTES_FILE) as f:
        assert json.load(f) == {k: v for k, v in item2attributes.items() if int(k) in kept_items}
    with open(out / schema.ITEM_VOCAB) as f:
        assert f.read().splitlines() == [str(k) for k in range(1, num_items + 1)]
    with open(out / writers.DEAD_LETTER_FILE) as f:
        assert f.read() == ""

    train = _parse(out, schema.split_prefix("train"), schema.TRAIN_FEATURES)
    test = _parse(out, schema.split_prefix("test"), schema.EVAL_FEATURES)
    assert sorted(r[schema.USER] for r in train) == sorted(expected)
    for r in test:
        items = expected[r[schema.USER]]
        assert r[schema.HISTORY] == items[:-1] and r[schema.TARGET] == items[-1]
        assert len(set(r[schema.NEGATIVES])) == 8
        assert not set(r[schema.NEGATIVES]) & set(items)
    for duplicate in range(2):
        records = _parse(out, schema.pretrain_prefix(duplicate), schema.PRETRAIN_FEATURES)
        assert len(records) == num_pretrain
        for r in records:
            n = len(r[schema.POS_ITEMS])
            assert all(len(r[name]) == n for name in schema.PRETRAIN_SEQUENCES)
    first = _parse(out, schema.pretrain_prefix(0), schema.PRETRAIN_FEATURES)
    second = _parse(out, schema.pretrain_prefix(1), schema.PRETRAIN_FEATURES)
    assert [r[schema.POS_ITEMS] for r in first] == [r[schema.POS_ITEMS] for r in second]
    assert [r[schema.MASKED_ITEM_SEQUENCE] for r in first] != [
        r[schema.MASKED_ITEM_SEQUENCE] for r in second
    ]


def _raw_job(raw, out, *extra):
    _run_job(
        "--reviews",
        raw.reviews,
        "--metadata",
        raw.metadata,
        "--output",
        out,
        "--max_seq_length",
        8,
        "--num_negatives",
        8,
        "--num_shards",
        2,
        *extra,
    )


@pytest.mark.slow
def test_raw_round_trip_with_bad_lines(s3rec_input, tmp_path):
    directory, expected, item2attributes = s3rec_input
    s3rec_out = tmp_path / "s3rec"
    _run_job(
        "--sequences",
        directory / "seq.txt",
        "--item2attributes",
        directory / "i2a.json",
        "--output",
        s3rec_out,
        "--max_seq_length",
        8,
        "--num_negatives",
        8,
        "--num_shards",
        2,
    )

    kept_items = {i for items in expected.values() for i in items}
    outputs = {}
    for name, bad_lines in (("clean", 0), ("dirty", 3)):
        raw = raw_format.write_raw_amazon(
            str(directory / "seq.txt"),
            str(directory / "i2a.json"),
            str(tmp_path / f"raw-{name}"),
            ids="shuffled",
            seed=1,
            tie_prob=0.5,
            bad_lines_per_kind=bad_lines,
        )
        out = tmp_path / name
        _raw_job(raw, out)
        outputs[name] = tree_bytes(out)
        with open(out / schema.METADATA_FILE) as f:
            metadata = json.load(f)
        assert metadata["num_bad_records"] == raw.expected_bad_records
        assert sum(raw.expected_bad_records.values()) == (
            bad_lines * (len(parse.REVIEW_KINDS) + len(parse.META_KINDS))
        )
        assert metadata["stats"]["dropped_duplicate_events"] == raw.num_duplicate_reviews

        # The same histories and attributes, compared through the raw ids.
        names = {
            raw.user_names[u]: [raw.item_names[i] for i in items] for u, items in expected.items()
        }
        assert _raw_histories(out) == names
        assert _raw_attributes(out) == {
            raw.item_names[int(i)]: {raw.attribute_names[a] for a in attrs}
            for i, attrs in item2attributes.items()
            if int(i) in kept_items
        }
        with open(s3rec_out / schema.METADATA_FILE) as f:
            s3rec_metadata = json.load(f)
        for key in ("num_users", "num_attributes", "num_interactions", "num_pretrain_examples"):
            assert metadata[key] == s3rec_metadata[key], key
        # Raw ids are numbered densely; the S3-Rec run keeps its ids, holes included.
        assert metadata["num_items"] == len(kept_items) < s3rec_metadata["num_items"]

    # Bad lines change nothing but the dead letters and their counts.
    clean, dirty = outputs["clean"], outputs["dirty"]
    assert set(clean) == set(dirty)
    for path in clean:
        if path not in (schema.METADATA_FILE, writers.DEAD_LETTER_FILE):
            assert clean[path] == dirty[path], path
    letters = [json.loads(line) for line in dirty[writers.DEAD_LETTER_FILE].splitlines()]
    assert len(letters) == sum(raw.expected_bad_records.values())
    assert all(letter["file"].endswith(".json.gz") and letter["line"] for letter in letters)


@pytest.mark.slow
def test_deterministic_across_runner_parallelism(s3rec_input, tmp_path):
    directory, _, _ = s3rec_input
    raw = raw_format.write_raw_amazon(
        str(directory / "seq.txt"),
        str(directory / "i2a.json"),
        str(tmp_path / "raw"),
        ids="shuffled",
        seed=2,
        tie_prob=0.3,
        bad_lines_per_kind=1,
    )
    out = tmp_path / "out"
    _raw_job(
        raw,
        out,
        "--dupe_factor",
        2,
        "--num_shards",
        3,
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
    )
    parallel = tree_bytes(out)
    _raw_job(raw, out, "--dupe_factor", 2, "--num_shards", 3, "--direct_num_workers=1")
    single = tree_bytes(out)
    assert sorted(parallel) == sorted(single)
    assert len([p for p in single if p.endswith(".tfrecord")]) == 3 * (3 + 2)
    for path in single:
        assert parallel[path] == single[path], path
