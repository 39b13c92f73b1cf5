"""Early stopping: patience, the best epoch's weights restored, best_epoch, and a stopped run
staying stopped after a kill."""

import csv
import json
import shutil

import numpy as np
import pytest
import tensorflow as tf  # noqa: E402  (after s3rec_tf selected Keras 2)

from s3rec_tf import callbacks, train

from dataset_fixture import small_dataset  # noqa: E402

MONITOR = "val_score"


class _Scripted(tf.keras.callbacks.Callback):
    """Puts a scripted validation value into the epoch's logs (before ResumableTraining reads
    them) and keeps a copy of the weights at every epoch end."""

    def __init__(self, values):
        super().__init__()
        self.values = values
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        logs[MONITOR] = self.values[epoch]
        self.weights.append([w.copy() for w in self.model.get_weights()])


def _model(optimizer=None):
    model = tf.keras.Sequential([tf.keras.Input([3]), tf.keras.layers.Dense(2)])
    model.compile(optimizer or tf.keras.optimizers.SGD(0.05), "mse")
    return model


def _fit(directory, values, patience, epochs=None, optimizer=None):
    """Fits until early stopping (or len(values) epochs); returns (state, script, model)."""
    model = _model(optimizer)
    state = callbacks.ResumableTraining(
        str(directory), tf.distribute.get_strategy(), monitor=MONITOR, patience=patience
    )
    done = state.attach(model)
    script = _Scripted(values)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=[16, 3]).astype(np.float32), rng.normal(size=[16, 2]).astype(np.float32)
    if not state.stopped_early:
        model.fit(
            x,
            y,
            batch_size=4,
            initial_epoch=done,
            epochs=epochs or len(values),
            verbose=0,
            callbacks=[script, state],
        )
    return state, script, model


def _assert_weights_equal(actual, expected):
    assert len(actual) == len(expected) > 0
    for a, b in zip(actual, expected):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "values, patience, epochs_run, best",
    [
        # Best 0.3 at epoch 2 (1-based); epochs 3, 4 (a tie is no improvement) and 5 without
        # improvement: stops after epoch 5, before the 0.9 of epoch 6.
        ([0.1, 0.3, 0.2, 0.3, 0.25, 0.9, 0.95, 0.97], 3, 5, 2),
        ([0.1, 0.3, 0.2, 0.3, 0.25, 0.9, 0.95, 0.97], 4, 8, 8),  # 0.9 arrives in time
        ([0.5, 0.4, 0.6, 0.7], 1, 2, 1),
        ([0.5, 0.6, 0.7, 0.8], 1, 4, 4),  # always improving: never stops
    ],
)
def test_patience_stops_after_exactly_patience_epochs_without_improvement(
    tmp_path, values, patience, epochs_run, best
):
    state, script, model = _fit(tmp_path / "ckpt", values, patience)
    assert state.epochs_done == len(script.weights) == epochs_run
    assert state.stopped_early == (epochs_run < len(values))
    assert state.stopped_early == (epochs_run < len(values))
    assert state.best_epoch_number == best
    assert float(state.best.numpy()) == max(values[:epochs_run])


def test_restore_best_loads_the_best_epochs_weights_tensor_by_tensor(tmp_path):
    values = [0.1, 0.4, 0.2, 0.3, 0.35]
    state, script, model = _fit(tmp_path / "ckpt", values, patience=3)
    assert state.epochs_done == 5 and state.best_epoch_number == 2
    last = model.get_weights()
    assert not any(np.array_equal(a, b) for a, b in zip(last, script.weights[1]))
    state.restore_best()
    _assert_weights_equal(model.get_weights(), script.weights[1])

    # After a kill: a new process restores the stopped state and the same best weights.
    again, again_script, again_model = _fit(tmp_path / "ckpt", values + [0.9, 0.9], patience=3)
    assert again.stopped_early and again.epochs_done == 5 and again.best_epoch_number == 2
    assert again_script.weights == []  # nothing trained
    _assert_weights_equal(again_model.get_weights(), last)  # the last epoch's checkpoint
    again.restore_best()
    _assert_weights_equal(again_model.get_weights(), script.weights[1])


def test_the_best_checkpoint_leaves_the_optimizer_out_and_one_with_it_still_restores(tmp_path):
    """Adam's slots are two more copies of every weight (of the item table): the best epoch's
    checkpoint, read only to evaluate, does without them."""
    values = [0.1, 0.4, 0.2]
    state, script, model = _fit(tmp_path / "ckpt", values, 3, optimizer=tf.keras.optimizers.Adam())
    best = tf.train.load_checkpoint(state.best_path).get_variable_to_shape_map()
    latest = tf.train.load_checkpoint(str(tmp_path / "ckpt")).get_variable_to_shape_map()
    assert len([n for n in latest if n.startswith("optimizer/_variables/")]) == 4  # m, v of 2
    assert not any("optimizer" in n for n in best)
    assert len(best) - 1 == len(model.weights) == 2  # - 1: the object graph
    state.restore_best()
    _assert_weights_equal(model.get_weights(), script.weights[1])

    # A best checkpoint written with the optimizer in it (before this change) still restores.
    model.set_weights(script.weights[1])
    tf.train.Checkpoint(model=model).write(state.best_path)
    model.set_weights(script.weights[2])
    state.restore_best()
    _assert_weights_equal(model.get_weights(), script.weights[1])


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _variables(path, prefix):
    reader = tf.train.load_checkpoint(str(path))
    names = sorted(n for n in reader.get_variable_to_shape_map() if n.startswith(prefix))
    return {n[len(prefix) :]: reader.get_tensor(n) for n in names}


@pytest.mark.slow
def test_train_main_stops_early_restores_the_best_epoch_and_stays_stopped(tmp_path):
    data = tmp_path / "data"
    small_dataset(str(data), num_users=60, num_items=40, max_seq_length=10)
    preset = tmp_path / "patience.yaml"
    preset.write_text("finetune:\n  patience: 1\n  learning_rate: 0.01\n")
    run = tmp_path / "run"

    def main(finetune_epochs):
        return train.main(
            [
                "--data",
                str(data),
                "--output",
                str(run),
                "--config",
                str(preset),
                "--no_pretrain",
                "--hidden_size",
                "16",
                "--num_heads",
                "2",
                "--finetune_batch_size",
                "16",
                "--finetune_epochs",
                str(finetune_epochs),
                "--verbose",
                "0",
            ]
        )

    main(40)
    results = json.load(open(run / "results.json"))
    finetune = results["finetune"]
    rows = _rows(run / "finetune" / "epochs.csv")
    mrr = [float(r["val_sampled_mrr"]) for r in rows]
    assert [int(r["epoch"]) for r in rows] == list(range(len(rows)))
    assert finetune["stopped_early"] and finetune["epochs_run"] == len(rows) < 40
    # best_epoch: the (first) maximum of the logged validation MRR, 1-based.
    assert finetune["best_epoch"] == int(np.argmax(mrr)) + 1
    # Exactly `patience` epochs after it, none better.
    assert finetune["epochs_run"] == finetune["best_epoch"] + 1 and finetune["best_epoch"] >= 2
    assert max(mrr[finetune["best_epoch"] :]) <= mrr[finetune["best_epoch"] - 1]
    # The final model is the best epoch's: its checkpoint's encoder (patience 1 keeps that
    # checkpoint, the last but one), tensor by tensor, and the validation metrics it logged.
    best = run / "finetune" / "checkpoints" / f"ckpt-{finetune['best_epoch']}"
    final = _variables(run / "final" / "encoder", "encoder/")
    at_best = _variables(best, "model/encoder/")
    assert set(final) == set(at_best) and len(final) > 10
    for name in final:
        np.testing.assert_array_equal(final[name], at_best[name], err_msg=name)
    last = _variables(
        run / "finetune" / "checkpoints" / f"ckpt-{finetune['epochs_run']}", "model/encoder/"
    )
    assert any(not np.array_equal(final[n], last[n]) for n in final)
    best_row = rows[finetune["best_epoch"] - 1]
    for metric in ("mrr", "hr@10", "ndcg@10"):
        assert results["valid"]["sampled"][metric] == pytest.approx(
            float(best_row[f"val_sampled_{metric}"]), rel=1e-6, abs=1e-7
        )

    # Killed after the stop, before results.json: the rerun (even with a larger budget) trains
    # no further epoch and ends with the same model and results.
    (run / "results.json").unlink()
    shutil.rmtree(run / "final")
    again = main(60)
    assert _rows(run / "finetune" / "epochs.csv") == rows
    assert again["finetune"]["epochs_run"] == finetune["epochs_run"]
    assert again["finetune"]["best_epoch"] == finetune["best_epoch"]
    assert again["valid"] == results["valid"] and again["test"] == results["test"]
    refinal = _variables(run / "final" / "encoder", "encoder/")
    for name in final:
        np.testing.assert_array_equal(refinal[name], final[name], err_msg=name)


class _TwoMetrics(tf.keras.callbacks.Callback):
    """Scripted validation logs where two metrics peak at different epochs."""

    def __init__(self, series):
        super().__init__()
        self.series = series
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        for name, values in self.series.items():
            logs[name] = values[epoch]
        self.weights.append([w.copy() for w in self.model.get_weights()])


@pytest.mark.parametrize(
    "monitor, best", [("sampled_mrr", 2), ("full_ndcg@10", 4)], ids=["sampled", "full"]
)
def test_the_monitor_decides_which_epoch_is_kept(tmp_path, monitor, best):
    """--monitor full_ndcg@10 keeps another checkpoint than sampled_mrr on the same run."""
    from s3rec_tf import config as config_lib

    config = config_lib.Config().replace(**{"finetune.monitor": monitor}).validate()
    series = {
        "val_sampled_mrr": [0.1, 0.3, 0.2, 0.15, 0.1],
        "val_full_ndcg@10": [0.01, 0.02, 0.03, 0.05, 0.04],
    }
    model = _model()
    state = callbacks.ResumableTraining(
        str(tmp_path),
        tf.distribute.get_strategy(),
        monitor=f"val_{config.finetune.monitor}",  # as phases.finetune names it
        patience=10,
    )
    state.attach(model)
    script = _TwoMetrics(series)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=[16, 3]).astype(np.float32), rng.normal(size=[16, 2]).astype(np.float32)
    model.fit(x, y, batch_size=4, epochs=5, verbose=0, callbacks=[script, state])
    assert state.best_epoch_number == best
    state.restore_best()
    _assert_weights_equal(model.get_weights(), script.weights[best - 1])


def test_an_unknown_monitor_is_refused_before_training():
    from s3rec_tf import config as config_lib

    with pytest.raises(config_lib.ConfigError, match="finetune.monitor.*full_ndcg@10"):
        config_lib.Config().replace(**{"finetune.monitor": "full_ndgc@10"}).validate()
    with pytest.raises(config_lib.ConfigError, match="finetune.monitor"):
        config_lib.Config().replace(**{"finetune.monitor": "full_history_zero_mrr"}).validate()
    config_lib.Config().replace(
        **{"finetune.monitor": "full_history_zero_mrr", "finetune.history_zero_metrics": True}
    ).validate()
