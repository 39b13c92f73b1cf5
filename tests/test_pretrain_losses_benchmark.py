"""benchmarks/pretrain_losses.py on a toy pretraining run."""

import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from s3rec_tf import builders, data_files, schema, train
from s3rec_tf import config as config_lib
from s3rec_tf import data as data_lib

from dataset_fixture import SMALL_MODEL, small_dataset  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import pretrain_losses  # noqa: E402


def _losses_by_hand(run, checkpoint, data_dir):
    """Each objective's mean over the batches of duplicate 0, weighted by batch size, in
    inference mode."""
    config = config_lib.load(str(run / "config.json"))
    metadata = data_files.read_metadata(data_dir)
    attributes = data_files.load_item_attributes(
        data_dir, metadata["num_items"], metadata["num_attributes"]
    )
    model = builders.pretrainer_from_config(
        config, metadata["num_items"], metadata["num_attributes"], attributes
    )
    data = data_lib.PretrainData(
        data_dir, metadata, config.pretrain.batch_size, config.model.max_seq_length, config.seed
    )
    model.build(None)
    tf.train.Checkpoint(model=model).read(
        checkpoint
    ).assert_existing_objects_matched().expect_partial()
    totals, count = {}, 0
    for batch in data.dataset(0):
        inputs, _, _ = tf.keras.utils.unpack_x_y_sample_weight(batch)
        n = int(tf.shape(inputs[schema.MASKED_ITEM_SEQUENCE])[0])
        for k, v in model.compute_losses(inputs, training=False).items():  # per-example means
            totals[k] = totals.get(k, 0.0) + float(v) * n
        count += n
    return {f"{k}_loss": v / count for k, v in totals.items()}


@pytest.mark.slow
def test_losses_of_two_checkpoints(tmp_path):
    data_dir = str(tmp_path / "data")
    small_dataset(data_dir, num_users=60, num_items=40, max_seq_length=10)
    run = tmp_path / "run"
    train.main(
        [
            "--data",
            data_dir,
            "--output",
            str(run),
            "--rank",
            "4",
            "--pretrain_epochs",
            "2",
            "--finetune_epochs",
            "0",
            *SMALL_MODEL,
        ]
    )
    ckpt = run / "pretrain" / "checkpoints"
    report = tmp_path / "losses.json"
    pretrain_losses.main(
        [
            "--data",
            data_dir,
            "--reference",
            "",
            "--report",
            str(report),
            "--checkpoint",
            f"first={ckpt / 'ckpt-1'}",
            "--checkpoint",
            f"second={ckpt / 'ckpt-2'}",
        ]
    )
    rows = json.load(open(report))["rows"]
    assert [(r["name"], r["epochs"], r["rank"]) for r in rows] == [
        ("first", 1, 4),
        ("second", 2, 4),
    ]
    assert rows[0]["objective_weights"] == {"aap": 1.0, "mip": 0.2, "map": 1.0, "sp": 0.5}
    by_hand = _losses_by_hand(run, str(ckpt / "ckpt-2"), data_dir)
    for k in pretrain_losses.OBJECTIVES:
        np.testing.assert_allclose(rows[1]["losses"][k], by_hand[k], atol=2e-4)
    assert rows[0]["losses"] != rows[1]["losses"]  # each row read its own checkpoint
    assert "| second | 4 | 1.0 / 0.2 / 1.0 / 0.5 | 2 |" in open(tmp_path / "losses.md").read()


def test_bad_checkpoint_argument_stops(tmp_path, capsys):
    with pytest.raises(SystemExit):
        pretrain_losses.main(
            ["--data", str(tmp_path), "--reference", "", "--checkpoint", "no_equals_sign"]
        )
    assert "expected NAME=RUN_DIR/pretrain/checkpoints/ckpt-N" in capsys.readouterr().err
