"""The preprocessing job on the real Beauty data (../shared/data/beauty): the published
statistics, the S3-Rec files given back unchanged, and the same result from raw Amazon 2014 files
built from it, clean or with bad lines of every kind."""

import hashlib
import json
import os

import pytest
import tensorflow as tf

from beam_pipelines import parse, preprocess, raw_format, writers
from s3rec_tf import schema

from tree_bytes import tree_bytes  # noqa: E402

# One worker runs the shared Beauty jobs once (pytest-xdist --dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.real_data, pytest.mark.xdist_group("beauty_jobs")]

# Files that depend only on the data and the seed; vocab files, metadata.json and dead letters
# also depend on the input format.
DATA_FILES_SUFFIXES = (schema.TFRECORD_SUFFIX, schema.SEQUENCES_FILE, schema.ITEM2ATTRIBUTES_FILE)
# Beauty is 5-core, so k-core's first round removes nothing and the job's default 20 unrolled
# rounds would only add empty Beam stages (about 4 s per job); the job fails, naming the flag,
# if the data needed more.
FEW_KCORE_ROUNDS = ["--kcore_max_rounds", "1"]


def _metadata(directory):
    with open(os.path.join(directory, schema.METADATA_FILE)) as f:
        return json.load(f)


def _lines(path):
    with open(path) as f:
        return f.read().splitlines()


def _count(files):
    return int(tf.data.TFRecordDataset(files).reduce(0, lambda n, _: n + 1))


def _beauty(beauty_dir):
    return os.path.join(beauty_dir, "Beauty.txt"), os.path.join(
        beauty_dir, "Beauty_item2attributes.json"
    )


@pytest.fixture(scope="module")
def beauty_job(beauty_dir, tmp_path_factory):
    """run(input_format, workers) -> (output dir, raw files or None): the job on Beauty with
    GOLDEN_FLAGS, from the S3-Rec files or from dirty raw 2014 files (`_dirty_raw`), on one
    worker or two processes; each combination runs once per module and several tests read it."""
    runs = {}

    def run(input_format, workers):
        if (input_format, workers) not in runs:
            root = tmp_path_factory.mktemp(f"beauty-{input_format}-{workers}")
            sequences, item2attributes = _beauty(beauty_dir)
            raw = None
            if input_format == "s3rec":
                inputs = ["--sequences", sequences, "--item2attributes", item2attributes]
            else:
                raw = _dirty_raw(sequences, item2attributes, str(root / "raw"))
                inputs = ["--reviews", raw.reviews, "--metadata", raw.metadata]
            runner = (
                ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
                if workers == 2
                else ["--direct_num_workers=1"]
            )
            out = str(root / "out")
            preprocess.run([*inputs, "--output", out, *GOLDEN_FLAGS, *runner])
            runs[input_format, workers] = out, raw
        return runs[input_format, workers]

    return run


def _dirty_raw(sequences, item2attributes, directory):
    """Beauty as raw 2014 files with ids in the S3-Rec order, ties in time and bad lines."""
    return raw_format.write_raw_amazon(
        sequences,
        item2attributes,
        directory,
        ids="ordered",
        seed=3,
        tie_prob=0.3,
        bad_lines_per_kind=2,
    )


@pytest.fixture(scope="module")
def s3rec_out(beauty_job):
    return beauty_job("s3rec", 1)[0]


def test_beauty_statistics_and_files(beauty_dir, s3rec_out):
    metadata = _metadata(s3rec_out)
    assert metadata["num_users"] == 22_363
    assert metadata["num_items"] == 12_101
    assert metadata["num_interactions"] == 198_502
    assert metadata["num_attributes"] == 637
    assert metadata["num_pretrain_examples"] == 150_258
    assert metadata["mask_id"] == 12_102
    assert metadata["stats"]["dropped_by_kcore_interactions"] == 0  # Beauty is 5-core already
    assert sum(metadata["num_bad_records"].values()) == 0

    sequences, item2attributes = _beauty(beauty_dir)
    with (
        open(sequences, "rb") as f,
        open(os.path.join(s3rec_out, schema.SEQUENCES_FILE), "rb") as g,
    ):
        assert g.read().rstrip(b"\n") == f.read().rstrip(b"\n")
    with (
        open(item2attributes) as f,
        open(os.path.join(s3rec_out, schema.ITEM2ATTRIBUTES_FILE)) as g,
    ):
        given, written = json.load(f), json.load(g)
    assert {k: set(v) for k, v in written.items()} == {k: set(v) for k, v in given.items()}

    pretrain = tf.io.gfile.glob(schema.shard_glob(s3rec_out, schema.pretrain_prefix(0)))
    assert _count(pretrain) == 150_258
    test = tf.io.gfile.glob(schema.shard_glob(s3rec_out, schema.split_prefix("test")))
    assert _count(test) == 22_363


def test_beauty_from_dirty_raw_files(beauty_job, s3rec_out):
    """Ordered raw ids reproduce the S3-Rec ids, so every data file must equal the S3-Rec run's
    byte for byte, bad lines notwithstanding; ties in time are broken by asin. The raw run uses
    two processes and the S3-Rec run one worker, so this also holds across runner parallelism."""
    out, raw = beauty_job("raw", 2)
    metadata = _metadata(out)
    assert metadata["num_bad_records"] == raw.expected_bad_records
    assert sum(raw.expected_bad_records.values()) == 2 * (
        len(parse.REVIEW_KINDS) + len(parse.META_KINDS)
    )
    assert metadata["stats"]["dropped_duplicate_events"] == raw.num_duplicate_reviews
    reference = _metadata(s3rec_out)
    for key in (
        "num_users",
        "num_items",
        "num_attributes",
        "num_interactions",
        "num_pretrain_examples",
    ):
        assert metadata[key] == reference[key], key

    expected, written = tree_bytes(s3rec_out), tree_bytes(out)
    data_files = [p for p in expected if p.endswith(DATA_FILES_SUFFIXES)]
    assert len(data_files) == (2 + 3) * 4 + 2  # 2 pretraining duplicates, 3 splits
    for path in data_files:
        assert written[path] == expected[path], path
    assert _lines(os.path.join(out, schema.ITEM_VOCAB)) == [
        raw.item_names[i] for i in range(1, 12_102)
    ]
    letters = _lines(os.path.join(out, writers.DEAD_LETTER_FILE))
    assert len(letters) == sum(raw.expected_bad_records.values())


def test_beauty_from_raw_files_with_shuffled_ids(beauty_dir, tmp_path):
    """Raw ids in an unrelated order: the histories and attributes, read back through the vocab
    files, are Beauty's."""
    sequences, item2attributes = _beauty(beauty_dir)
    raw = raw_format.write_raw_amazon(
        sequences, item2attributes, str(tmp_path / "raw"), ids="shuffled", seed=4
    )
    out = str(tmp_path / "out")
    preprocess.run(
        ["--reviews", raw.reviews, "--metadata", raw.metadata, "--output", out, *FEW_KCORE_ROUNDS]
    )
    users = _lines(os.path.join(out, schema.USER_VOCAB))
    items = _lines(os.path.join(out, schema.ITEM_VOCAB))
    attributes = _lines(os.path.join(out, schema.ATTRIBUTE_VOCAB))
    written = {
        users[u - 1]: [items[i - 1] for i in rest]
        for u, *rest in (
            map(int, line.split()) for line in _lines(os.path.join(out, "sequences.txt"))
        )
    }
    given = {
        raw.user_names[u]: [raw.item_names[i] for i in rest]
        for u, *rest in (map(int, line.split()) for line in _lines(sequences))
    }
    assert written == given
    with open(os.path.join(out, schema.ITEM2ATTRIBUTES_FILE)) as f:
        written_attributes = {
            items[int(i) - 1]: {attributes[a - 1] for a in attrs}
            for i, attrs in json.load(f).items()
        }
    with open(item2attributes) as f:
        given_attributes = {
            raw.item_names[int(i)]: {raw.attribute_names[a] for a in attrs}
            for i, attrs in json.load(f).items()
        }
    assert written_attributes == given_attributes
    metadata = _metadata(out)
    assert (metadata["num_users"], metadata["num_items"], metadata["num_attributes"]) == (
        22_363,
        12_101,
        637,
    )
    assert metadata["num_pretrain_examples"] == 150_258


# sha256 of every file the job wrote at commit 92809eb (before the scale-out rewrite) with
# --dupe_factor 2 --num_shards 4, on Beauty in the S3-Rec format and on the dirty raw 2014
# files of `_dirty_raw` (dead letters name the files as written there: RAW_DIR_AT_92809EB);
# metadata.json hashed without its `config` (see `_normalized_metadata`). Kept in
# tests/golden_92809eb.json.
with open(os.path.join(os.path.dirname(__file__), "golden_92809eb.json")) as _f:
    GOLDEN_92809EB = json.load(_f)
RAW_DIR_AT_92809EB = "/work/scratch/beam/golden/raw"
# Options added since 92809eb (metadata.json's config lists them).
NEW_OPTIONS = ("kcore_max_rounds", "users_per_shard")
GOLDEN_FLAGS = ["--dupe_factor", "2", "--num_shards", "4", *FEW_KCORE_ROUNDS]


def _normalized_metadata(metadata: dict) -> bytes:
    return (
        json.dumps({k: v for k, v in metadata.items() if k != "config"}, indent=2, sort_keys=True)
        + "\n"
    ).encode()


def _sha256_tree(directory, replace=None):
    hashes = {}
    for path, content in tree_bytes(directory).items():
        if path == schema.METADATA_FILE:
            content = _normalized_metadata(json.loads(content))
        elif replace:
            content = content.replace(*replace)
        hashes[path] = hashlib.sha256(content).hexdigest()
    return hashes


# Each input format on one runner setting; the dirty-raw test compares the two-process raw run's
# data files with the one-worker S3-Rec run's, and tests/test_beam_preprocess.py compares every
# file of one worker and two processes on a small raw input.
@pytest.mark.parametrize("input_format, workers", [("s3rec", 1), ("raw", 2)])
def test_byte_identical_to_the_job_before_the_scale_out(beauty_job, input_format, workers):
    """Every file, byte for byte, as the job at commit 92809eb wrote it with the same flags: from
    the S3-Rec format on one worker and from dirty raw 2014 files on two processes."""
    out, raw = beauty_job(input_format, workers)
    replace = None
    if raw is not None:  # dead letters name the raw files by path
        replace = (os.path.dirname(raw.reviews).encode(), RAW_DIR_AT_92809EB.encode())
    written = _sha256_tree(out, replace)
    golden = GOLDEN_92809EB[input_format]
    assert sorted(written) == sorted(golden)
    assert [p for p in sorted(golden) if written[p] != golden[p]] == []
    config = _metadata(out)["config"]
    assert config["num_shards"] == 4 and config["dupe_factor"] == 2
    assert set(config) - {"output"} >= {"seed", "input_format", *NEW_OPTIONS}


def test_full_ranking_in_item_chunks_equals_one_pass_on_beauty(s3rec_out):
    """Evaluation scored 1,000 items at a time (13 chunks of Beauty's 12,103 ids) gives every
    metric of every protocol to the last digit of the one-pass evaluation."""
    from keras_models import S3RecEncoder
    from s3rec_tf import builders
    from s3rec_tf import config as config_lib
    from s3rec_tf import data as data_lib
    from s3rec_tf import finetune as finetune_lib

    metadata = _metadata(s3rec_out)
    tf.keras.utils.set_random_seed(3)
    encoder = S3RecEncoder(metadata["num_items"], max_seq_length=50, hidden_size=16, num_heads=2)
    encoder.build(None)
    results = {}
    for chunk in (1000, metadata["num_items"] + 2):
        config = config_lib.Config().replace(
            **{"finetune.eval_item_chunk": chunk, "finetune.history_zero_metrics": True}
        )
        model = builders.recommender_from_config(config.validate(), encoder, 1.0)
        model.compile()
        dataset = data_lib.eval_dataset(s3rec_out, "test", 256, 50)
        results[chunk] = finetune_lib.evaluate(model, dataset)
    one_pass, chunked = results[metadata["num_items"] + 2], results[1000]
    assert len(one_pass) == 24 and one_pass["full_hr@20"] > 0
    assert chunked == one_pass
