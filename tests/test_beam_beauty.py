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

pytestmark = [pytest.mark.slow, pytest.mark.real_data]

# Files that depend only on the data and the seed; vocab files, metadata.json and dead letters
# also depend on the input format.
DATA_FILES_SUFFIXES = (schema.TFRECORD_SUFFIX, schema.SEQUENCES_FILE, schema.ITEM2ATTRIBUTES_FILE)


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
def s3rec_out(beauty_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("beauty") / "out")
    sequences, item2attributes = _beauty(beauty_dir)
    preprocess.run(["--sequences", sequences, "--item2attributes", item2attributes,
                    "--output", out])
    return out


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
    with open(sequences, "rb") as f, open(os.path.join(s3rec_out, schema.SEQUENCES_FILE), "rb") as g:
        assert g.read().rstrip(b"\n") == f.read().rstrip(b"\n")
    with open(item2attributes) as f, open(os.path.join(s3rec_out, schema.ITEM2ATTRIBUTES_FILE)) as g:
        given, written = json.load(f), json.load(g)
    assert {k: set(v) for k, v in written.items()} == {k: set(v) for k, v in given.items()}

    pretrain = tf.io.gfile.glob(schema.shard_glob(s3rec_out, schema.pretrain_prefix(0)))
    assert _count(pretrain) == 150_258
    test = tf.io.gfile.glob(schema.shard_glob(s3rec_out, schema.split_prefix("test")))
    assert _count(test) == 22_363


def test_beauty_from_dirty_raw_files(beauty_dir, s3rec_out, tmp_path):
    """Ordered raw ids reproduce the S3-Rec ids, so every data file must equal the S3-Rec run's
    byte for byte, bad lines notwithstanding; ties in time are broken by asin."""
    sequences, item2attributes = _beauty(beauty_dir)
    raw = raw_format.write_raw_amazon(
        sequences, item2attributes, str(tmp_path / "raw"),
        ids="ordered", seed=3, tie_prob=0.3, bad_lines_per_kind=2,
    )
    out = str(tmp_path / "out")
    preprocess.run(["--reviews", raw.reviews, "--metadata", raw.metadata, "--output", out])
    metadata = _metadata(out)
    assert metadata["num_bad_records"] == raw.expected_bad_records
    assert sum(raw.expected_bad_records.values()) == 2 * (
        len(parse.REVIEW_KINDS) + len(parse.META_KINDS)
    )
    assert metadata["stats"]["dropped_duplicate_events"] == raw.num_duplicate_reviews
    reference = _metadata(s3rec_out)
    for key in ("num_users", "num_items", "num_attributes", "num_interactions",
                "num_pretrain_examples"):
        assert metadata[key] == reference[key], key

    expected, written = tree_bytes(s3rec_out), tree_bytes(out)
    data_files = [p for p in expected if p.endswith(DATA_FILES_SUFFIXES)]
    assert len(data_files) == 4 * 4 + 2
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
    preprocess.run(["--reviews", raw.reviews, "--metadata", raw.metadata, "--output", out])
    users = _lines(os.path.join(out, schema.USER_VOCAB))
    items = _lines(os.path.join(out, schema.ITEM_VOCAB))
    attributes = _lines(os.path.join(out, schema.ATTRIBUTE_VOCAB))
    written = {
        users[u - 1]: [items[i - 1] for i in rest]
        for u, *rest in (map(int, line.split()) for line in _lines(os.path.join(out, "sequences.txt")))
    }
    given = {
        raw.user_names[u]: [raw.item_names[i] for i in rest]
        for u, *rest in (map(int, line.split()) for line in _lines(sequences))
    }
    assert written == given
    with open(os.path.join(out, schema.ITEM2ATTRIBUTES_FILE)) as f:
        written_attributes = {
            items[int(i) - 1]: {attributes[a - 1] for a in attrs} for i, attrs in json.load(f).items()
        }
    with open(item2attributes) as f:
        given_attributes = {
            raw.item_names[int(i)]: {raw.attribute_names[a] for a in attrs}
            for i, attrs in json.load(f).items()
        }
    assert written_attributes == given_attributes
    metadata = _metadata(out)
    assert (metadata["num_users"], metadata["num_items"], metadata["num_attributes"]) == (
        22_363, 12_101, 637
    )
    assert metadata["num_pretrain_examples"] == 150_258


# sha256 of every file the job wrote at commit 92809eb (before the scale-out rewrite) with
# --dupe_factor 2 --num_shards 4, on Beauty in the S3-Rec format and on the dirty raw 2014
# files of `_dirty_raw` (dead letters name the files as written there: RAW_DIR_AT_92809EB);
# metadata.json hashed without its `config` (see `_normalized_metadata`).
GOLDEN_92809EB = {
    "s3rec": {
        "dead_letter/records-00000-of-00001.jsonl":
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "item2attributes.json":
            "fa4dd5eb08afb264aab09ce81e8eb6118d3825dfac84500379f8da18cf63e59d",
        "metadata.json":
            "092d766abec23e80c101ae54beebd63ac62f75100a928043c82379cd68deffb4",
        "pretrain/dupe-00000/part-00000-of-00004.tfrecord":
            "5bbf3e543038ab89ba0c321f8c59dd0ff3148782101273ce0b04f95316d80843",
        "pretrain/dupe-00000/part-00001-of-00004.tfrecord":
            "88cded63012e529ad93bcedb89a91ffcf48f1133644b2a93e9fa7935aea89e66",
        "pretrain/dupe-00000/part-00002-of-00004.tfrecord":
            "a6b948990ea6373563636ce4301b2ef1ecca14883a0ec7e632573734ee563b51",
        "pretrain/dupe-00000/part-00003-of-00004.tfrecord":
            "4634ac51fde67ada46d470d11799237d1f8ee7750c27929de9391852697b5bb3",
        "pretrain/dupe-00001/part-00000-of-00004.tfrecord":
            "07655bcfebaeb2bd10ee393771a5ed1a43461eda22fd9d88eee6aa12d01fb676",
        "pretrain/dupe-00001/part-00001-of-00004.tfrecord":
            "d43ca96b7c4686fe175d46d216615f36a966d3d96ac6bd990a78b6545d1e9759",
        "pretrain/dupe-00001/part-00002-of-00004.tfrecord":
            "d0dd0e3da193580061df2c80481abf2782a7faa7fd3ce4dc4a1c11c5bf224906",
        "pretrain/dupe-00001/part-00003-of-00004.tfrecord":
            "8b9e4050ca6e5ac70161ead0237a5c0af181d62898eb091ad7498ccc9772fbd3",
        "sequences.txt":
            "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
        "test/part-00000-of-00004.tfrecord":
            "cc80698418b029fb6a4776d6a0e57a3826f2e84a67808fa4934a172684afc013",
        "test/part-00001-of-00004.tfrecord":
            "c2e804d235e266336d6a030e0073856e7f521d0e13ba3e733c95e6ca07d2d795",
        "test/part-00002-of-00004.tfrecord":
            "8efa14c2980c22ce26f5693d3881bf562e3795639cfe1a138df98053b61f72a4",
        "test/part-00003-of-00004.tfrecord":
            "a5bf9fd7148ca2c72d7045c51355b9d65a48bebeca3bca60c2d7735fe1d9badf",
        "train/part-00000-of-00004.tfrecord":
            "9a1b272f13a244ce6168997ad17ccba6e1af08dceb70fc7c0b2dab0f87c5a9f8",
        "train/part-00001-of-00004.tfrecord":
            "496e48193b44651281224e68c587b97c36f2db8f75da0a84b7623d8a341e1b53",
        "train/part-00002-of-00004.tfrecord":
            "fe7a0c8ce353973bd632208f734d7c81d452a5a88874b516b55e330a29caa8f5",
        "train/part-00003-of-00004.tfrecord":
            "8abe8d71345ca9a88f7aadc4535a8e06d71cc64624b568493e695a1f27490f91",
        "valid/part-00000-of-00004.tfrecord":
            "2cea75c796bb3b3b63e752adbf1fc1eb6c76b24b8ca02d11f3341c151099452c",
        "valid/part-00001-of-00004.tfrecord":
            "6fc3d73e733217113101bdc47ababb4cbe20de8a68105be318b74e2606896bd0",
        "valid/part-00002-of-00004.tfrecord":
            "fcd4b93f8c1ab65e1b4da888e2cf780f099e5bcc654e1e2b661de6a2d916bdf0",
        "valid/part-00003-of-00004.tfrecord":
            "acf2fc13922f8a60de0b2e73ba63f7bc26c70d5dc3c74768d9a630285d26a613",
        "vocab/attributes.txt":
            "6c7b3f5bfb6aff805e20223f28ba52fe1e2d29ffd349e98abb8af408d7925d40",
        "vocab/items.txt":
            "c80f9ebfe99b3e2bfe022f9b49b47790399e4b14bd96dbd46e33b6883888a599",
        "vocab/users.txt":
            "9d423b1bfb1cbb0efbdbf3c4bf3bef4753a4bc5b0d9645f9dd54d6e31963faed",
    },
    "raw": {
        "dead_letter/records-00000-of-00001.jsonl":
            "21bcd53b0ce92271f0091105ae0b0aaf76b193deda0734b4ad14d4525215f718",
        "item2attributes.json":
            "fa4dd5eb08afb264aab09ce81e8eb6118d3825dfac84500379f8da18cf63e59d",
        "metadata.json":
            "387168ef2aab2c78ef5f1a282150ec99d03ab4472da27740f7f73c53c25798f6",
        "pretrain/dupe-00000/part-00000-of-00004.tfrecord":
            "5bbf3e543038ab89ba0c321f8c59dd0ff3148782101273ce0b04f95316d80843",
        "pretrain/dupe-00000/part-00001-of-00004.tfrecord":
            "88cded63012e529ad93bcedb89a91ffcf48f1133644b2a93e9fa7935aea89e66",
        "pretrain/dupe-00000/part-00002-of-00004.tfrecord":
            "a6b948990ea6373563636ce4301b2ef1ecca14883a0ec7e632573734ee563b51",
        "pretrain/dupe-00000/part-00003-of-00004.tfrecord":
            "4634ac51fde67ada46d470d11799237d1f8ee7750c27929de9391852697b5bb3",
        "pretrain/dupe-00001/part-00000-of-00004.tfrecord":
            "07655bcfebaeb2bd10ee393771a5ed1a43461eda22fd9d88eee6aa12d01fb676",
        "pretrain/dupe-00001/part-00001-of-00004.tfrecord":
            "d43ca96b7c4686fe175d46d216615f36a966d3d96ac6bd990a78b6545d1e9759",
        "pretrain/dupe-00001/part-00002-of-00004.tfrecord":
            "d0dd0e3da193580061df2c80481abf2782a7faa7fd3ce4dc4a1c11c5bf224906",
        "pretrain/dupe-00001/part-00003-of-00004.tfrecord":
            "8b9e4050ca6e5ac70161ead0237a5c0af181d62898eb091ad7498ccc9772fbd3",
        "sequences.txt":
            "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
        "test/part-00000-of-00004.tfrecord":
            "cc80698418b029fb6a4776d6a0e57a3826f2e84a67808fa4934a172684afc013",
        "test/part-00001-of-00004.tfrecord":
            "c2e804d235e266336d6a030e0073856e7f521d0e13ba3e733c95e6ca07d2d795",
        "test/part-00002-of-00004.tfrecord":
            "8efa14c2980c22ce26f5693d3881bf562e3795639cfe1a138df98053b61f72a4",
        "test/part-00003-of-00004.tfrecord":
            "a5bf9fd7148ca2c72d7045c51355b9d65a48bebeca3bca60c2d7735fe1d9badf",
        "train/part-00000-of-00004.tfrecord":
            "9a1b272f13a244ce6168997ad17ccba6e1af08dceb70fc7c0b2dab0f87c5a9f8",
        "train/part-00001-of-00004.tfrecord":
            "496e48193b44651281224e68c587b97c36f2db8f75da0a84b7623d8a341e1b53",
        "train/part-00002-of-00004.tfrecord":
            "fe7a0c8ce353973bd632208f734d7c81d452a5a88874b516b55e330a29caa8f5",
        "train/part-00003-of-00004.tfrecord":
            "8abe8d71345ca9a88f7aadc4535a8e06d71cc64624b568493e695a1f27490f91",
        "valid/part-00000-of-00004.tfrecord":
            "2cea75c796bb3b3b63e752adbf1fc1eb6c76b24b8ca02d11f3341c151099452c",
        "valid/part-00001-of-00004.tfrecord":
            "6fc3d73e733217113101bdc47ababb4cbe20de8a68105be318b74e2606896bd0",
        "valid/part-00002-of-00004.tfrecord":
            "fcd4b93f8c1ab65e1b4da888e2cf780f099e5bcc654e1e2b661de6a2d916bdf0",
        "valid/part-00003-of-00004.tfrecord":
            "acf2fc13922f8a60de0b2e73ba63f7bc26c70d5dc3c74768d9a630285d26a613",
        "vocab/attributes.txt":
            "91d3c023b880fe39e25cd23d8973c9fa513e6ba5367c565c274a59d6aaa528ae",
        "vocab/items.txt":
            "a2eb3ff3bea176cfc43801fd69ba2141cd3733db733c20ca623a9407c7d8a03a",
        "vocab/users.txt":
            "ee801056c906df25bb7c6431a5b1f25d232b54a554826371e2497ad19615b9c7",
    },
}
RAW_DIR_AT_92809EB = "/work/scratch/beam/golden/raw"
# Options added since 92809eb (metadata.json's config lists them).
NEW_OPTIONS = ("kcore_max_rounds", "users_per_shard")
GOLDEN_FLAGS = ["--dupe_factor", "2", "--num_shards", "4"]


def _normalized_metadata(metadata: dict) -> bytes:
    return (json.dumps({k: v for k, v in metadata.items() if k != "config"}, indent=2,
                       sort_keys=True) + "\n").encode()


def _sha256_tree(directory, replace=None):
    hashes = {}
    for path, content in tree_bytes(directory).items():
        if path == schema.METADATA_FILE:
            content = _normalized_metadata(json.loads(content))
        elif replace:
            content = content.replace(*replace)
        hashes[path] = hashlib.sha256(content).hexdigest()
    return hashes


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("input_format", ["s3rec", "raw"])
def test_byte_identical_to_the_job_before_the_scale_out(beauty_dir, tmp_path, input_format,
                                                          workers):
    """Every file, byte for byte, as the job at commit 92809eb wrote it with the same flags, from
    the S3-Rec format and from dirty raw 2014 files, on one worker and on two processes."""
    sequences, item2attributes = _beauty(beauty_dir)
    if input_format == "s3rec":
        inputs, replace = ["--sequences", sequences, "--item2attributes", item2attributes], None
    else:
        raw_dir = str(tmp_path / "raw")
        raw = raw_format.write_raw_amazon(
            sequences, item2attributes, raw_dir,
            ids="ordered", seed=3, tie_prob=0.3, bad_lines_per_kind=2,
        )
        inputs = ["--reviews", raw.reviews, "--metadata", raw.metadata]
        replace = (raw_dir.encode(), RAW_DIR_AT_92809EB.encode())
    runner = (["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
              if workers == 2 else ["--direct_num_workers=1"])
    out = str(tmp_path / "out")
    preprocess.run([*inputs, "--output", out, *GOLDEN_FLAGS, *runner])
    written = _sha256_tree(out, replace)
    golden = GOLDEN_92809EB[input_format]
    assert sorted(written) == sorted(golden)
    assert [p for p in sorted(golden) if written[p] != golden[p]] == []
    config = _metadata(out)["config"]
    assert config["num_shards"] == 4 and config["dupe_factor"] == 2
    assert set(config) - {"output"} >= {"seed", "input_format", *NEW_OPTIONS}
