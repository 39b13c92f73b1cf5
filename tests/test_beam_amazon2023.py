"""Amazon Reviews 2023 input: the field variants of one line, the bundled 2023 sample (the same
data as the 2014 sample, so the same outputs), bad 2023 lines, and synthetic data that needs
several k-core rounds (too few rounds fail cleanly)."""

import gzip
import json
import os

import numpy as np
import pytest

from beam_pipelines import algorithms, parse, preprocess, sample_data, writers
from benchmarks import synthetic_data
from s3rec_tf import config as config_lib
from s3rec_tf import phases, schema

from tree_bytes import tree_bytes  # noqa: E402

# One worker builds the module fixtures once (pytest-xdist --dist loadgroup).
pytestmark = pytest.mark.xdist_group("amazon2023_sample")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "beam_pipelines", "sample_data")
# 3 k-core rounds: the samples are 5-core (and a few bad lines take little from them); the job's
# default 20 unrolled rounds would only add empty Beam stages. A test needing more says so.
SMALL = ["--max_seq_length", "10", "--num_negatives", "20", "--kcore_max_rounds", "3"]


def _parse(fn, record, text=None):
    """-> (outputs, dead-letter reasons) of one line."""
    text = json.dumps(record) if text is None else text
    outputs, reasons = [], []
    for out in fn.parse("f.jsonl", 7, text):
        if hasattr(out, "tag"):
            reasons.append(out.value["reason"])
            assert (out.value["file"], out.value["line"]) == ("f.jsonl", 7)
        else:
            outputs.append(out)
    return outputs, reasons


META = {
    "parent_asin": "P1",
    "main_category": "All Beauty",
    "store": "Acme",
    "categories": ["Beauty", "Skin Care", "Face"],
    "details": {"Brand": "Other"},
}


@pytest.mark.parametrize("layout", [parse.AUTO, parse.FORMAT_2023])
@pytest.mark.parametrize(
    "change,attributes",
    [
        ({}, ("Acme", "Face", "Skin Care")),  # store wins over details["Brand"]
        ({"store": None}, ("Face", "Other", "Skin Care")),  # no store: the brand from details
        ({"store": ""}, ("Face", "Other", "Skin Care")),
        ({"store": None, "details": {}}, ("Face", "Skin Care")),  # no brand at all
        ({"store": None, "details": None}, ("Face", "Skin Care")),
        ({"categories": []}, ("Acme",)),  # empty categories
        ({"categories": None}, ("Acme",)),
        ({"categories": ["Beauty"]}, ("Acme",)),  # only the top level
        ({"main_category": None}, ("Acme", "Face", "Skin Care")),
    ],
)
def test_2023_metadata_variants(layout, change, attributes):
    outputs, reasons = _parse(parse.ParseMetaLine(layout), {**META, **change})
    assert reasons == [] and outputs == [("P1", attributes)]


@pytest.mark.parametrize("layout", [parse.AUTO, parse.FORMAT_2023])
def test_2023_metadata_without_categories_field(layout):
    record = {k: v for k, v in META.items() if k != "categories"}
    assert _parse(parse.ParseMetaLine(layout), record) == ([("P1", ("Acme",))], [])


@pytest.mark.parametrize(
    "record,text,reason",
    [
        ({**META, "categories": "Beauty"}, None, parse.BAD_META_FIELD),
        ({**META, "categories": ["Beauty", 3]}, None, parse.BAD_META_FIELD),
        ({**META, "details": ["Brand"]}, None, parse.BAD_META_FIELD),
        ({**META, "store": 5}, None, parse.BAD_META_FIELD),
        ({**META, "store": None, "details": {"Brand": 5}}, None, parse.BAD_META_FIELD),
        (
            {k: v for k, v in META.items() if k != "parent_asin"},
            None,
            parse.META_MISSING_PARENT_ASIN,
        ),
        ({**META, "parent_asin": 42}, None, parse.INVALID_ID),
        (None, repr(META), parse.BAD_JSON),  # 2023 is strict JSON: no Python literals
        (None, '{"parent_asin": "P1", ', parse.BAD_JSON),
        (None, "[1, 2]", parse.NOT_AN_OBJECT),
    ],
)
def test_bad_2023_metadata_is_dead_lettered(record, text, reason):
    assert _parse(parse.ParseMetaLine(parse.FORMAT_2023), record, text) == ([], [reason])


REVIEW = {
    "rating": 4.0,
    "title": "t",
    "text": "x",
    "asin": "P1-red",
    "parent_asin": "P1",
    "user_id": "AEU1",
    "timestamp": 1588687728923,
    "helpful_vote": 0,
    "verified_purchase": True,
}


@pytest.mark.parametrize("layout", [parse.AUTO, parse.FORMAT_2023])
def test_2023_review_uses_parent_asin_and_milliseconds(layout):
    outputs, reasons = _parse(parse.ParseReviewLine(layout), REVIEW)
    assert reasons == []
    assert outputs == [parse.Event("AEU1", "P1", 1588687728923, 4.0)]
    unrated = {k: v for k, v in REVIEW.items() if k != "rating"}
    assert _parse(parse.ParseReviewLine(layout), unrated)[0][0].rating is None


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"user_id": None}, parse.MISSING_USER_ID),
        ({"parent_asin": ""}, parse.MISSING_PARENT_ASIN),
        ({"timestamp": None}, parse.MISSING_TIMESTAMP),
        ({"timestamp": "yesterday"}, parse.BAD_TIME),
        ({"rating": "five"}, parse.BAD_RATING),
        ({"user_id": 17}, parse.INVALID_ID),
        ({"parent_asin": "P\n1"}, parse.INVALID_ID),
    ],
)
def test_bad_2023_reviews_are_dead_lettered(change, reason):
    record = {k: v for k, v in {**REVIEW, **change}.items() if v is not None}
    assert _parse(parse.ParseReviewLine(parse.FORMAT_2023), record) == ([], [reason])


def test_auto_detection_keeps_2014_lines_as_they_were():
    review = {"reviewerID": "A1", "asin": "B1", "unixReviewTime": 5, "overall": 3.0}
    assert _parse(parse.ParseReviewLine(), review) == ([parse.Event("A1", "B1", 5, 3.0)], [])
    meta = {"asin": "B1", "categories": [["Beauty", "Face"]], "brand": "Acme"}
    assert _parse(parse.ParseMetaLine(), None, repr(meta)) == ([("B1", ("Acme", "Face"))], [])
    # A 2014 line read as 2023 lacks the 2023 fields.
    assert _parse(parse.ParseReviewLine(parse.FORMAT_2023), review)[1] == [parse.MISSING_USER_ID]


def _run(out, *args):
    preprocess.run([*map(str, args), "--output", str(out)])
    with open(os.path.join(out, schema.METADATA_FILE)) as f:
        return json.load(f)


def _data_files(tree):
    return {p: b for p, b in tree.items() if p != schema.METADATA_FILE}


@pytest.fixture(scope="module")
def sample_2014(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample2014") / "out"
    metadata = _run(
        out,
        "--reviews",
        os.path.join(SAMPLE, sample_data.REVIEWS_FILE),
        "--metadata",
        os.path.join(SAMPLE, sample_data.META_FILE),
        *SMALL,
    )
    return out, metadata


def test_committed_2023_sample_is_regenerated_and_small(tmp_path):
    sample_data.write(str(tmp_path))
    for name in (sample_data.REVIEWS_2023_FILE, sample_data.META_2023_FILE):
        with open(os.path.join(SAMPLE, name), "rb") as f:
            assert (tmp_path / name).read_bytes() == f.read(), name
    size = sum(
        os.path.getsize(os.path.join(SAMPLE, n))
        for n in (sample_data.REVIEWS_2023_FILE, sample_data.META_2023_FILE)
    )
    assert size < 1_000_000
    with gzip.open(os.path.join(SAMPLE, sample_data.META_2023_FILE), "rt") as f:
        meta = [json.loads(line) for line in f]
    with gzip.open(os.path.join(SAMPLE, sample_data.REVIEWS_2023_FILE), "rt") as f:
        reviews = [json.loads(line) for line in f]
    # The variants the job must handle are all in the sample.
    assert any(m["store"] is None and "Brand" in m["details"] for m in meta)
    assert any(m["store"] is None and "Brand" not in m["details"] for m in meta)
    assert any(r["asin"] != r["parent_asin"] for r in reviews)


@pytest.mark.slow
@pytest.mark.parametrize("input_format", ["auto", "amazon2023"])
def test_2023_sample_gives_the_2014_sample_outputs(sample_2014, tmp_path, input_format):
    expected_out, expected = sample_2014
    out = tmp_path / "out"
    metadata = _run(
        out,
        "--reviews",
        os.path.join(SAMPLE, sample_data.REVIEWS_2023_FILE),
        "--metadata",
        os.path.join(SAMPLE, sample_data.META_2023_FILE),
        *SMALL,
        "--input_format",
        input_format,
    )
    assert metadata["num_users"] > 400 and metadata["num_pretrain_examples"] > 1000
    assert _data_files(tree_bytes(out)) == _data_files(tree_bytes(expected_out))
    kinds = parse.AMAZON_2023_KINDS if input_format == "amazon2023" else parse.AMAZON_KINDS
    assert metadata["num_bad_records"] == dict.fromkeys(kinds, 0)
    assert metadata["input_format"] == ("amazon2023" if input_format == "amazon2023" else "amazon")
    for key in (
        "num_users",
        "num_items",
        "num_attributes",
        "num_interactions",
        "stats",
        "num_pretrain_examples",
        "num_split_examples",
    ):
        assert metadata[key] == expected[key], key
    # Training's checks before any work accept it. The data files are the 2014 sample's bytes,
    # and training on the job's output of that sample is tested in test_packaging.py.
    config = config_lib.load("sample").replace(**{"data.data_dir": str(out)}).validate()
    assert phases.check_inputs(config) == metadata


@pytest.mark.slow
def test_bad_2023_lines_are_dead_lettered_by_the_job(sample_2014, tmp_path):
    expected_out, _ = sample_2014
    with gzip.open(os.path.join(SAMPLE, sample_data.REVIEWS_2023_FILE), "rt") as f:
        reviews = f.read().splitlines()
    with gzip.open(os.path.join(SAMPLE, sample_data.META_2023_FILE), "rt") as f:
        meta = f.read().splitlines()
    bad_reviews = [
        json.dumps({**REVIEW, "timestamp": "never"}),
        "{not json",
        json.dumps({k: v for k, v in REVIEW.items() if k != "user_id"}),
    ]
    bad_meta = [repr(META), json.dumps({**META, "categories": "Beauty"})]
    for path, lines, bad in (("r.jsonl", reviews, bad_reviews), ("m.jsonl", meta, bad_meta)):
        (tmp_path / path).write_text("\n".join(lines[:3] + bad + lines[3:]) + "\n")
    out = tmp_path / "out"
    metadata = _run(
        out,
        "--reviews",
        tmp_path / "r.jsonl",
        "--metadata",
        tmp_path / "m.jsonl",
        *SMALL,
        "--input_format",
        "amazon2023",
    )
    assert {k: v for k, v in metadata["num_bad_records"].items() if v} == {
        parse.BAD_TIME: 1,
        parse.BAD_JSON: 2,
        parse.MISSING_USER_ID: 1,
        parse.BAD_META_FIELD: 1,
    }
    written = tree_bytes(out)
    letters = [json.loads(line) for line in written.pop(writers.DEAD_LETTER_FILE).splitlines()]
    assert [(os.path.basename(d["file"]), d["line"], d["reason"]) for d in letters] == [
        ("m.jsonl", 4, parse.BAD_JSON),
        ("m.jsonl", 5, parse.BAD_META_FIELD),
        ("r.jsonl", 4, parse.BAD_TIME),
        ("r.jsonl", 5, parse.BAD_JSON),
        ("r.jsonl", 6, parse.MISSING_USER_ID),
    ]
    expected = _data_files(tree_bytes(expected_out))
    expected.pop(writers.DEAD_LETTER_FILE)
    assert _data_files(written) == expected


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    directory = tmp_path_factory.mktemp("synthetic")
    return synthetic_data.write(str(directory), 6000, shards=2, seed=5)


@pytest.mark.slow
def test_synthetic_2014_and_2023_give_the_same_data_after_real_kcore_rounds(synthetic, tmp_path):
    trees, metadata = {}, {}
    for fmt in synthetic_data.FORMATS:
        files = synthetic["formats"][fmt]
        metadata[fmt] = _run(
            tmp_path / fmt,
            "--reviews",
            files["reviews"],
            "--metadata",
            files["metadata"],
            *SMALL,
            "--kcore_max_rounds",
            8,
        )
        trees[fmt] = _data_files(tree_bytes(tmp_path / fmt))
    # The generator names user x "A" + x in 2014 and "AE" + x in 2023: the same order.
    users = {fmt: trees[fmt].pop(schema.USER_VOCAB).decode().splitlines() for fmt in trees}
    assert ["AE" + u[1:] for u in users["2014"]] == users["2023"]
    assert trees["2014"] == trees["2023"]
    stats = metadata["2014"]["stats"]
    assert stats == metadata["2023"]["stats"]
    assert stats["kcore_rounds"] >= 2 and stats["dropped_by_kcore_users"] > 100
    assert metadata["2014"]["num_users"] == len(trees["2014"][schema.SEQUENCES_FILE].splitlines())


@pytest.mark.slow
def test_too_few_kcore_rounds_stop_the_job_without_metadata(synthetic, tmp_path):
    files = synthetic["formats"]["2023"]
    out = tmp_path / "out"
    with pytest.raises(Exception, match="--kcore_max_rounds=1 rounds"):
        preprocess.run(
            [
                "--reviews",
                files["reviews"],
                "--metadata",
                files["metadata"],
                "--output",
                str(out),
                *SMALL,
                "--kcore_max_rounds",
                "1",
            ]
        )
    assert not (out / schema.METADATA_FILE).exists()


def test_kcore_reference_on_parsed_synthetic_events():
    """The generator's data is far from k-core: the reference needs several rounds."""
    d = synthetic_data.make(3000, seed=1)
    histories = {}
    for u, i in zip(d["user"].tolist(), d["item"].tolist()):
        histories.setdefault(u, []).append(i)
    _, rounds, users, _ = algorithms.kcore(list(histories.items()), 5, 5)
    assert rounds >= 2 and users > len(histories) // 2


def test_synthetic_catalogue_size_and_long_tail_are_knobs():
    default = synthetic_data.make(3000, seed=1)
    assert default["num_items"] == 3000 // 12
    big = synthetic_data.make(20_000, seed=1, num_items=5_000)
    assert big["num_items"] == len(big["item_names"]) == 5_000
    assert big["item"].max() < 5_000
    counts = np.sort(np.bincount(big["item"], minlength=5_000))[::-1]
    # Long-tailed: the top 1 % of items hold far more than 1 % of the interactions, and many
    # items are drawn once or never.
    assert counts[:50].sum() > 0.15 * counts.sum() and (counts <= 1).sum() > 1_500
    flat = np.sort(
        np.bincount(
            synthetic_data.make(20_000, seed=1, num_items=5_000, popularity_exponent=0)["item"],
            minlength=5_000,
        )
    )[::-1]
    assert flat[:50].sum() < 0.04 * flat.sum()  # uniform: 1 % of items, 2.5 % by chance
    with pytest.raises(ValueError, match="num_items must be positive"):
        synthetic_data.make(100, num_items=0)


def test_synthetic_tastes_keep_a_share_of_each_users_reviews_in_one_category():
    def leaf_share(d):
        """Per interaction, whether its item is in the user's most frequent category path."""
        leaf = (d["level1"] * 6 + d["level2"]) * 8 + d["level3"]
        hits = total = 0
        for u in np.unique(d["user"]):
            leaves = leaf[d["item"][d["user"] == u]]
            if len(leaves) >= 20:  # users with enough reviews for a share
                hits += np.bincount(leaves).max()
                total += len(leaves)
        return hits / total

    plain = synthetic_data.make(60_000, seed=2, num_items=20_000)
    tasted = synthetic_data.make(60_000, seed=2, num_items=20_000, taste=0.7)
    # Everything but the focused draws is the data without tastes.
    for key in ("user", "time", "rating", "order", "item_names", "level1", "brand"):
        np.testing.assert_array_equal(plain[key], tasted[key])
    changed = np.mean(plain["item"] != tasted["item"])
    assert 0.65 < changed < 0.71  # the focused share, less the draws that land on the same item
    assert leaf_share(plain) < 0.1
    assert 0.67 < leaf_share(tasted) < 0.74  # 0.7 focused, plus chance hits among the rest
    # Within the path, popular items are still drawn more: a long tail per category.
    counts = np.sort(np.bincount(tasted["item"], minlength=20_000))[::-1]
    assert counts[:200].sum() > 0.05 * counts.sum()
    with pytest.raises(ValueError, match="taste must be in"):
        synthetic_data.make(100, taste=1.5)
