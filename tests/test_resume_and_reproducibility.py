"""A run done in pieces equals the same run left alone, so a rerun with one seed repeats it.

The comparison covers what `train.main` leaves in the run directory, exactly: every variable of
the last checkpoint of each phase (model, optimizer slots and step, epoch and early-stopping
counters), `epochs.csv` (losses and validation metrics, every epoch once), and results.json's
metrics.
The default dropout (0.5) is on: a resumed epoch must draw the same masks, order and negatives.
"""

import csv
import json

import numpy as np
import pytest
import tensorflow as tf  # noqa: E402  (after s3rec_tf selected Keras 2)

from s3rec_tf import train

from dataset_fixture import SMALL_MODEL  # noqa: E402

# One worker builds the shared runs once (pytest-xdist --dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("resume_runs")]

PRETRAIN_EPOCHS, FINETUNE_EPOCHS = 2, 2
SMALL = [*SMALL_MODEL, "--finetune_batch_size", "16"]


def _main(data_dir, run, pretrain_epochs, finetune_epochs):
    return train.main(
        [
            "--data",
            data_dir,
            "--output",
            str(run),
            *SMALL,
            "--pretrain_epochs",
            str(pretrain_epochs),
            "--finetune_epochs",
            str(finetune_epochs),
        ]
    )


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    _main(data_dir, run, PRETRAIN_EPOCHS, FINETUNE_EPOCHS)
    return run


def _checkpoint(run, phase, epoch):
    """Every variable of a phase's epoch checkpoint but the wall-clock time."""
    reader = tf.train.load_checkpoint(str(run / phase / "checkpoints" / f"ckpt-{epoch}"))
    names = [
        n
        for n in reader.get_variable_to_shape_map()
        if n != "_CHECKPOINTABLE_OBJECT_GRAPH" and not n.startswith("seconds/")
    ]
    return {n: reader.get_tensor(n) for n in names}


def _epoch_log(run, phase):
    with open(run / phase / "epochs.csv") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        assert float(row.pop("epoch_seconds")) > 0
        if phase == "finetune":  # the part of it spent validating
            assert float(row.pop("validation_seconds")) > 0
    return rows


def _assert_same_run(run, other):
    for phase, epochs in (("pretrain", PRETRAIN_EPOCHS), ("finetune", FINETUNE_EPOCHS)):
        ours, theirs = _checkpoint(run, phase, epochs), _checkpoint(other, phase, epochs)
        assert sorted(ours) == sorted(theirs)
        # Model, optimizer (Adam's moments and step) and the epoch / early-stopping counters.
        assert sum(n.startswith("optimizer/") for n in ours) > 10
        assert int(ours["epoch/.ATTRIBUTES/VARIABLE_VALUE"]) == epochs
        for name in ours:
            np.testing.assert_array_equal(ours[name], theirs[name], err_msg=f"{phase}: {name}")
        log = _epoch_log(run, phase)
        assert [int(r["epoch"]) for r in log] == list(range(epochs))  # no gap, no repeat
        assert log == _epoch_log(other, phase)
    results, other_results = (json.load(open(r / "results.json")) for r in (run, other))
    assert results["valid"] == other_results["valid"] and results["test"] == other_results["test"]
    for key in ("epochs_run", "best_epoch", "stopped_early"):
        assert results["finetune"][key] == other_results["finetune"][key]


def test_a_run_resumed_in_each_phase_equals_the_run_left_alone(data_dir, uninterrupted, tmp_path):
    """Also the rerun with one seed: both runs are trained from scratch with the same seed and
    every epoch's losses and metrics (epochs.csv) and the last checkpoints must be equal, so
    training that is not a function of the seed fails here."""
    run = tmp_path / "run"
    # Interrupted after pretraining epoch 1, then after fine-tuning epoch 1 (smaller budgets stop
    # a run exactly as a kill after that epoch's checkpoint does), then finished.
    first = _main(data_dir, run, 1, 0)
    assert first["pretrain"]["epochs"] == 1
    second = _main(data_dir, run, PRETRAIN_EPOCHS, 1)
    assert second["pretrain"]["resumed_at_epoch"] == 1
    third = _main(data_dir, run, PRETRAIN_EPOCHS, FINETUNE_EPOCHS)
    assert third["finetune"]["epochs_run"] == FINETUNE_EPOCHS
    _assert_same_run(run, uninterrupted)
    # Training did move the weights in both phases (the comparison is not between initial states).
    for phase in ("pretrain", "finetune"):
        first, last = _checkpoint(run, phase, 1), _checkpoint(run, phase, 2)
        kernel = next(n for n in first if "item_embeddings" in n and "optimizer" not in n)
        assert not np.array_equal(first[kernel], last[kernel])
    # And the final encoder, written after restoring the best epoch, is identical too.
    final = tf.train.load_checkpoint(str(run / "final" / "encoder"))
    reference = tf.train.load_checkpoint(str(uninterrupted / "final" / "encoder"))
    names = [n for n in final.get_variable_to_shape_map() if n.startswith("encoder/")]
    assert len(names) > 10
    for name in names:
        np.testing.assert_array_equal(final.get_tensor(name), reference.get_tensor(name))
