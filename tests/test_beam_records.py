"""The pure functions behind the example writer (beam_pipelines.records), the input format
registry (beam_pipelines.formats) and the job's options (beam_pipelines.config/preprocess)."""

import subprocess
import sys

import numpy as np
import pytest

from beam_pipelines import config, formats, parse, preprocess, records
from beam_pipelines import pretrain_examples as pe
from s3rec_tf import schema

HISTORIES = [(7, (3, 9, 4, 12, 5)), (10, (1, 2, 3, 4))]
LONG_SEQUENCE = [3, 9, 4, 12, 5, 1, 2, 3, 4]
ARGS = dict(seed=42, num_items=20, num_negatives=5, max_seq_length=3, mask_prob=0.5)


def _shard(dupe_factor=2, users_per_chunk=1):
    return list(
        records.shard_examples(
            HISTORIES,
            dupe_factor=dupe_factor,
            long_sequence=LONG_SEQUENCE,
            users_per_chunk=users_per_chunk,
            **ARGS,
        )
    )


def test_split_examples_of_a_five_item_history():
    assert records.split_examples(7, (3, 9, 4, 12, 5), [17, 2]) == {
        "train": {"user": [7], "history": [3, 9, 4], "heldout": [12, 5]},
        "valid": {"user": [7], "history": [3, 9, 4], "target": [12], "negatives": [17, 2]},
        "test": {"user": [7], "history": [3, 9, 4, 12], "target": [5], "negatives": [17, 2]},
    }
    with pytest.raises(ValueError, match="at least 3"):
        records.split_examples(7, (3, 9), [])


def test_shard_examples_splits_then_one_file_per_duplicate():
    out = _shard()
    prefixes = [prefix for prefix, _ in out]
    splits = [schema.split_prefix(s) for s in schema.SPLITS]
    # The splits user by user, then duplicate 0's and 1's pretraining examples (3 + 2 each).
    assert (
        prefixes == splits * 2 + [schema.pretrain_prefix(0)] * 5 + [schema.pretrain_prefix(1)] * 5
    )
    # The seeded negatives of user 7 (seed 42, 20 items): valid and test share them.
    assert out[1] == (
        "valid/part",
        {"user": [7], "history": [3, 9, 4], "target": [12], "negatives": [17, 2, 1, 7, 15]},
    )
    assert out[2][1]["negatives"] == [17, 2, 1, 7, 15]
    assert out[4][1]["negatives"] == [12, 18, 17, 19, 15]  # user 10
    assert out[8][1] == {
        "user": [7],
        "masked_item_sequence": [21, 21, 21],
        "pos_items": [3, 9, 4],
        "neg_items": [13, 7, 10],
        "masked_segment_sequence": [3, 21, 4],
        "pos_segment": [21, 9, 21],
        "neg_segment": [21, 4, 21],
    }


def test_shard_examples_are_the_per_user_rules():
    """Negatives and pretraining examples are those of `pretrain_examples`, whatever the chunks."""
    out = _shard(users_per_chunk=1)
    assert out == _shard(users_per_chunk=2000)
    negatives = pe.sample_negatives(HISTORIES, seed=42, num_items=20, num_negatives=5)
    assert [f["negatives"] for p, f in out if p == "test/part"] == negatives.tolist()
    for duplicate in range(2):
        expected = pe.make_pretrain_examples(
            HISTORIES,
            seed=42,
            duplicate=duplicate,
            max_seq_length=3,
            mask_prob=0.5,
            num_items=20,
            long_sequence=np.array(LONG_SEQUENCE),
        )
        written = [f for p, f in out if p == schema.pretrain_prefix(duplicate)]
        assert written == list(records.pretrain_features(expected))
        assert [f["user"] for f in written] == [[u] for u in expected.user.tolist()]


def test_one_loop_over_duplicates_for_segments_and_examples():
    assert list(records.duplicate_chunks(HISTORIES, dupe_factor=2, users_per_chunk=1)) == [
        (0, [HISTORIES[0]]),
        (0, [HISTORIES[1]]),
        (1, [HISTORIES[0]]),
        (1, [HISTORIES[1]]),
    ]
    positions = records.segment_positions(
        HISTORIES, seed=42, dupe_factor=2, max_seq_length=3, total_length=len(LONG_SEQUENCE)
    )
    per_duplicate = [
        pe.negative_segment_positions(
            HISTORIES, seed=42, duplicate=k, max_seq_length=3, total_length=len(LONG_SEQUENCE)
        )
        for k in range(2)
    ]
    np.testing.assert_array_equal(positions, np.concatenate(per_duplicate))
    np.testing.assert_array_equal(positions, [7, 8, 0, 5, 4, 2])
    # What the segment look-ups fetch is all that the examples of every duplicate read.
    sparse = pe.SparseSequence(len(LONG_SEQUENCE), positions, np.asarray(LONG_SEQUENCE)[positions])
    assert (
        list(records.shard_examples(HISTORIES, dupe_factor=2, long_sequence=sparse, **ARGS))
        == _shard()
    )


def test_format_registry():
    assert formats.names() == ("auto", "amazon", "amazon2023", "s3rec")
    assert formats.input_options() == (("reviews", "metadata"), ("sequences", "item2attributes"))
    assert formats.resolve("auto", {"reviews", "metadata"}) == "amazon"
    assert formats.resolve("auto", {"sequences", "item2attributes"}) == "s3rec"
    assert formats.resolve("amazon2023", {"reviews", "metadata"}) == "amazon2023"
    assert formats.get("s3rec").keep_raw_ids and not formats.get("s3rec").has_ratings
    assert formats.get("amazon2023").kinds == parse.AMAZON_2023_KINDS
    with pytest.raises(KeyError, match="known: amazon"):
        formats.get("movielens")
    with pytest.raises(ValueError, match="already registered"):
        formats.register(formats.get("amazon"))


# Every flag of the job and its default before the options moved into PreprocessOptions.
DEFAULTS = {
    "reviews": [],
    "metadata": [],
    "sequences": [],
    "item2attributes": [],
    "input_format": "auto",
    "output": None,
    "max_seq_length": 50,
    "mask_prob": 0.2,
    "dupe_factor": 1,
    "num_negatives": 99,
    "seed": 42,
    "user_core": 5,
    "item_core": 5,
    "kcore_max_rounds": 20,
    "min_rating": None,
    "attribute_min_count": 1,
    "num_shards": 0,
    "users_per_shard": 100_000,
}


def test_options_keep_their_names_and_defaults():
    assert vars(preprocess.build_parser().parse_args([])) == DEFAULTS
    from apache_beam.options.pipeline_options import PipelineOptions

    beam_view = PipelineOptions(["--seed", "3"]).view_as(config.PreprocessOptions)
    assert beam_view.seed == 3 and beam_view.dupe_factor == 1
    parsed, rest = preprocess.parse_args(
        ["--sequences", "s", "--item2attributes", "i", "--output", "o/", "--runner=DirectRunner"]
    )
    assert parsed.output == "o" and parsed.sequences == ("s",) and rest == ["--runner=DirectRunner"]
    assert parsed.to_dict()["input_format"] == "s3rec"
    assert set(parsed.to_dict()) == set(DEFAULTS)  # metadata.json's config keeps its keys
    assert preprocess.run.__doc__ and "PipelineResult" in preprocess.run.__doc__


def test_help_lists_every_flag_with_its_default():
    result = subprocess.run(
        [sys.executable, "-m", "beam_pipelines.preprocess", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    text = " ".join(result.stdout.split())
    for name in DEFAULTS:
        assert f"--{name}" in text, name
    for name in ("max_seq_length", "num_negatives", "users_per_shard", "kcore_max_rounds"):
        assert f"(default: {DEFAULTS[name]})" in text, name
    assert "amazon2023: Amazon Reviews 2023" in text


def test_missing_output_exits_with_a_message(capsys):
    with pytest.raises(SystemExit) as exit_info:
        preprocess.parse_args(["--sequences", "s", "--item2attributes", "i"])
    assert exit_info.value.code == 2
    assert "required: --output" in capsys.readouterr().err


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"input_format": "s3rec"}, "--input_format=s3rec does not match the inputs"),
        ({"input_format": "movielens"}, "must be one of auto, amazon, amazon2023, s3rec"),
        ({"metadata": []}, "--reviews and --metadata must be given together"),
        ({"sequences": ["s"]}, "not both and not neither"),
    ],
)
def test_config_checks_the_inputs_against_the_format(changes, message):
    values = {**DEFAULTS, "output": "o", "reviews": ["r"], "metadata": ["m"], **changes}
    with pytest.raises(ValueError, match=message):
        config.PreprocessConfig.from_options(values).validate()
    amazon = {**DEFAULTS, "output": "o", "reviews": ["r"], "metadata": ["m"]}
    assert config.PreprocessConfig.from_options(amazon).validate().format.name == "amazon"
