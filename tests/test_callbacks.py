"""EpochLog: the per-epoch CSV of a run done in chunks."""

import csv
import logging

import numpy as np
import tensorflow as tf

from s3rec_tf import callbacks


def _fit(path, epochs, initial_epoch=0, validation=False, extra_metric=False):
    model = tf.keras.Sequential([tf.keras.Input([3]), tf.keras.layers.Dense(1)])
    model.compile("sgd", "mse", metrics=["mae"] if extra_metric else None)
    x, y = np.ones([8, 3], np.float32), np.zeros([8, 1], np.float32)
    model.fit(
        x,
        y,
        epochs=epochs,
        initial_epoch=initial_epoch,
        verbose=0,
        validation_data=(x, y) if validation else None,
        callbacks=[callbacks.EpochLog(str(path), append=True)],
    )


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_no_invented_validation_columns(tmp_path):
    # tf-keras' CSVLogger adds val_loss (all NA) to a fit without validation data.
    _fit(tmp_path / "a.csv", 2)
    rows = _rows(tmp_path / "a.csv")
    assert list(rows[0]) == ["epoch", "loss"] and [r["epoch"] for r in rows] == ["0", "1"]
    assert "NA" not in open(tmp_path / "a.csv").read()
    _fit(tmp_path / "b.csv", 1, validation=True)
    assert list(_rows(tmp_path / "b.csv")[0]) == ["epoch", "loss", "val_loss"]


def test_resumed_run_keeps_the_files_columns(tmp_path, caplog):
    path = tmp_path / "epochs.csv"
    _fit(path, 1)
    # The resumed chunk logs a key more (mae): values stay under their own header, not shifted.
    with caplog.at_level(logging.WARNING, logger="s3rec_tf.callbacks"):
        _fit(path, 3, initial_epoch=1, extra_metric=True)
    assert "no column for ['mae']" in caplog.text
    lines = open(path).read().splitlines()
    assert lines[0] == "epoch,loss" and len(lines) == 4
    rows = _rows(path)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert all(float(r["loss"]) >= 0 and None not in r for r in rows)


def test_empty_file_gets_a_header_and_a_foreign_one_a_warning(tmp_path, caplog):
    path = tmp_path / "epochs.csv"
    path.write_text("")
    _fit(path, 1)
    assert open(path).read().splitlines()[0] == "epoch,loss"
    path.write_text("not,a,header\n")
    with caplog.at_level(logging.WARNING, logger="s3rec_tf.callbacks"):
        _fit(path, 1)
    assert "does not start with an epoch log header" in caplog.text
    assert open(path).read().splitlines()[0] == "not,a,header"
