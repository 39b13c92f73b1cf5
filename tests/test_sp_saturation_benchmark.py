"""benchmarks/sp_saturation.py on a toy pretraining run: SP's logits against NumPy, and the
gradient that vanishes when both sigmoids saturate although the loss is ln 2 either way."""

import json
import math
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from s3rec_tf import data as data_lib
from s3rec_tf import data_files, schema, train

from dataset_fixture import SMALL_MODEL, small_dataset  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common, sp_saturation  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sp")
    data_dir = str(root / "data")
    small_dataset(data_dir, num_users=60, num_items=40, max_seq_length=10)
    run = root / "run"
    train.main(
        ["--data", data_dir, "--output", str(run), "--rank", "4", "--pretrain_epochs", "1"]
        + ["--finetune_epochs", "0", *SMALL_MODEL]
    )
    return data_dir, run, str(run / "pretrain" / "checkpoints" / "ckpt-1")


def _model_and_batches(data_dir, run, checkpoint, count):
    metadata = data_files.read_metadata(data_dir)
    attributes = data_files.load_item_attributes(
        data_dir, metadata["num_items"], metadata["num_attributes"]
    )
    config, model = common.pretrainer_at(checkpoint, data_dir, metadata, attributes)
    data = data_lib.PretrainData(
        data_dir, metadata, config.pretrain.batch_size, config.model.max_seq_length, 0
    )
    return model, list(data.dataset(0, shuffle=False).take(count))


def _last(model, sequences):
    out = model.encoder(sequences, training=False, last_position_only=True)
    return out.numpy().astype(np.float64)


def test_report_matches_numpy(toy_run, tmp_path):
    data_dir, run, checkpoint = toy_run
    report = tmp_path / "sp.json"
    sp_saturation.main(
        ["--data", data_dir, "--checkpoint", f"toy={checkpoint}", "--batches", "2"]
        + ["--gradient_batches", "1", "--report", str(report)]
    )
    (row,) = json.load(open(report))["rows"]
    assert (row["name"], row["rank"], row["epochs"]) == ("toy", 4, 1)

    # By hand: each of the three segment sequences through the encoder on its own, the SP
    # projection as a NumPy affine map.
    model, batches = _model_and_batches(data_dir, run, checkpoint, 2)
    kernel, bias = (w.numpy().astype(np.float64) for w in model.heads.sp_norm.weights)
    z, cosines = [], []
    for batch in batches:
        context = _last(model, batch[schema.MASKED_SEGMENT_SEQUENCE]) @ kernel + bias
        pos = _last(model, batch[schema.POS_SEGMENT])
        neg = _last(model, batch[schema.NEG_SEGMENT])
        z.append(np.stack([(context * pos).sum(-1), (context * neg).sum(-1)], -1))
        unit = pos / np.linalg.norm(pos, axis=-1, keepdims=True)
        cosines.append(
            np.mean(
                [unit[i] @ unit[j] for i in range(len(unit)) for j in range(len(unit)) if i != j]
            )
        )
    z = np.concatenate(z)
    sig = 1 / (1 + np.exp(-z))
    assert row["examples"] == len(z)
    np.testing.assert_allclose(row["mean_z_pos"], z[:, 0].mean(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(row["mean_z_neg"], z[:, 1].mean(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(row["mean_abs_z"], np.abs(z).mean(), rtol=1e-5)
    np.testing.assert_allclose(
        row["sp_loss"], np.log1p(np.exp(sig[:, 1] - sig[:, 0])).mean(), rtol=1e-6
    )
    np.testing.assert_allclose(
        row["mean_slope_pos"], (sig[:, 0] * (1 - sig[:, 0])).mean(), rtol=1e-5
    )
    np.testing.assert_allclose(row["segment_cosine"], np.mean(cosines), rtol=1e-5)
    saturated = np.all(sig < 0.01, -1) | np.all(sig > 0.99, -1)
    assert row["both_saturated"] == saturated.mean()
    # SP's loss as the model computes it (per-example mean) on those examples.
    losses = [float(model.compute_losses(b, training=False)["sp"]) for b in batches]
    np.testing.assert_allclose(row["sp_loss"], np.mean(losses), rtol=1e-5)
    assert "| toy | 4 | 1 |" in open(tmp_path / "sp.md").read()


def test_saturated_sigmoids_stop_sp_gradient_at_ln2(toy_run):
    """z = 0 and |z| ≫ 1 on the same side both give SP's loss ln 2; only the first has a
    gradient."""
    model, batches = _model_and_batches(*toy_run, 2)
    kernel, bias = model.heads.sp_norm.weights
    kernel.assign(tf.zeros_like(kernel))
    bias.assign(tf.zeros_like(bias))
    centred = sp_saturation.measure(model, batches, gradient_batches=2)
    assert centred["mean_abs_z"] == 0.0 and centred["both_saturated"] == 0.0
    np.testing.assert_allclose(centred["sp_loss"], math.log(2), rtol=1e-7)
    assert centred["gradient_norm"]["sp"] > 1e-3

    # Every context projected onto minus the sum of the segments' encodings: z ≪ 0 for all.
    encodings = np.concatenate(
        [
            _last(model, b[name])
            for b in batches
            for name in (schema.POS_SEGMENT, schema.NEG_SEGMENT)
        ]
    )
    kernel.assign(tf.zeros_like(kernel))
    bias.assign(-1e3 * tf.constant(encodings.mean(0), tf.float32))
    saturated = sp_saturation.measure(model, batches, gradient_batches=2)
    assert saturated["both_saturated"] == 1.0 and saturated["mean_z_pos"] < -50
    np.testing.assert_allclose(saturated["sp_loss"], math.log(2), rtol=1e-7)
    assert saturated["gradient_norm"]["sp"] < 1e-9 * centred["gradient_norm"]["sp"]
    # The other objectives do not depend on sp_norm.
    for name in ("aap", "mip", "map"):
        np.testing.assert_allclose(
            saturated["gradient_norm"][name], centred["gradient_norm"][name], rtol=1e-5
        )
