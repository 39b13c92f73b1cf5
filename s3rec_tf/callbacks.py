"""Keras callbacks that make training resumable after a kill.

`ResumableTraining` checkpoints the model, its optimizer, the number of finished epochs and the
early-stopping state together at every epoch end, so a rerun continues exactly where the last
finished epoch left off. Keras' own BackupAndRestore does not fit here: pretraining switches its
input (a new masking duplicate) every epoch, which needs the restored epoch before `fit()` builds
its dataset, and fine-tuning's early stopping must survive the kill too (best value, patience
counter and best weights).

It also keeps the wall time of the finished epochs in the checkpoint, so a run done in chunks
(long pretraining, or a run resumed after a kill) reports the time of all its epochs, not only
of the last invocation.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Optional

import tensorflow as tf

from s3rec_tf.runtime import worker_directory

logger = logging.getLogger(__name__)


class ResumableTraining(tf.keras.callbacks.Callback):
    """Epoch-end checkpoints of model + optimizer + epoch (+ early stopping on `monitor`).

    Args:
      directory: checkpoint directory of this phase.
      strategy: the distribution strategy (non-chief workers save to a scratch directory).
      monitor: a validation metric to maximise, e.g. "val_sampled_mrr"; None disables early
        stopping.
      patience: epochs without improvement before stopping.
      stop_after_epoch: end `fit()` after every epoch (pretraining runs one fit per epoch to read
        that epoch's masking duplicate).
    """

    def __init__(
        self,
        directory: str,
        strategy: tf.distribute.Strategy,
        monitor: Optional[str] = None,
        patience: int = 10,
        stop_after_epoch: bool = False,
        max_to_keep: int = 2,
    ):
        super().__init__()
        self.directory = directory
        self.strategy = strategy
        self.monitor = monitor
        self.patience = patience
        self.stop_after_epoch = stop_after_epoch
        self.max_to_keep = max_to_keep
        self._manager = None
        self._best_checkpoint = None
        # Plain variables: they live in the checkpoint beside the model.
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
        self.best = tf.Variable(-math.inf, dtype=tf.float64, trainable=False, name="best")
        self.best_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False, name="best_epoch")
        self.wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="wait")
        # Wall time of the finished epochs, and how many epochs it covers.
        self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="seconds")
        self.timed_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name="timed_epochs")
        self._epoch_start = None
        self._validation_start = None
        self._validation_seconds = None

    def attach(self, model: tf.keras.Model) -> int:
        """Restores the latest checkpoint into `model` (compiled and built) and returns the
        epochs done. The checkpoint holds the dropout generators' states too, so that a resumed
        run draws the masks the uninterrupted run draws."""
        self.set_model(model)
        generators = dropout_generators(model)
        checkpoint = tf.train.Checkpoint(
            model=model,
            optimizer=model.optimizer,
            dropout_generators=tf.train.Checkpoint(**generators),
            epoch=self.epoch,
            best=self.best,
            best_epoch=self.best_epoch,
            wait=self.wait,
            seconds=self.seconds,
            timed_epochs=self.timed_epochs,
        )
        self._manager = tf.train.CheckpointManager(
            checkpoint,
            worker_directory(self.directory, self.strategy),
            max_to_keep=self.max_to_keep,
        )
        self._best_checkpoint = tf.train.Checkpoint(model=_without_optimizer(model))
        latest = self._manager.latest_checkpoint
        if latest:
            # expect_partial: optimizer slots are created lazily at the first step.
            checkpoint.restore(latest).expect_partial()
            logger.info(
                "Resumed from %s after %d finished epoch(s).", latest, int(self.epoch.numpy())
            )
        return int(self.epoch.numpy())

    @property
    def best_path(self) -> str:
        return os.path.join(worker_directory(self.directory, self.strategy), "best")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.time()
        self._validation_seconds = None

    def on_test_begin(self, logs=None):
        self._validation_start = time.time()

    def on_test_end(self, logs=None):
        # Inside fit() this is the epoch's validation pass (evaluate() outside fit never gets
        # these callbacks); its time is logged apart so that training speed can be read off.
        elapsed = time.time() - self._validation_start
        self._validation_seconds = (self._validation_seconds or 0.0) + elapsed

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            # TerminateOnNaN has stopped training; never checkpoint a broken model.
            return
        if self._epoch_start is not None:
            elapsed = time.time() - self._epoch_start
            # Callbacks after this one (CSVLogger, TensorBoard, History) see the epoch's time.
            logs["epoch_seconds"] = elapsed
            if self._validation_seconds is not None:
                logs["validation_seconds"] = self._validation_seconds
            self.seconds.assign_add(elapsed)
            self.timed_epochs.assign_add(1)
        if self.monitor is not None:
            if self.monitor not in logs:
                raise KeyError(
                    f"Early stopping monitors {self.monitor!r}, which is not among the logged "
                    f"metrics {sorted(logs)}."
                )
            value = float(logs[self.monitor])
            if value > float(self.best.numpy()):
                self.best.assign(value)
                self.best_epoch.assign(epoch)
                self.wait.assign(0)
                self._best_checkpoint.write(self.best_path)
            else:
                self.wait.assign_add(1)
            if int(self.wait.numpy()) >= self.patience:
                logger.info(
                    "Early stopping: %s has not improved for %d epochs (best %.5f at epoch %d).",
                    self.monitor,
                    self.patience,
                    float(self.best.numpy()),
                    int(self.best_epoch.numpy()) + 1,
                )
                self.model.stop_training = True
        self.epoch.assign(epoch + 1)
        self._manager.save(checkpoint_number=epoch + 1)
        if self.stop_after_epoch:
            self.model.stop_training = True

    @property
    def epochs_done(self) -> int:
        return int(self.epoch.numpy())

    @property
    def total_seconds(self) -> float:
        """Wall time of all finished epochs of this phase, over every invocation."""
        return float(self.seconds.numpy())

    @property
    def best_epoch_number(self) -> int:
        """1-based epoch of the best validation value (0 when there is none)."""
        return int(self.best_epoch.numpy()) + 1

    @property
    def stopped_early(self) -> bool:
        """True once early stopping has triggered (also when restored from a checkpoint)."""
        return self.monitor is not None and int(self.wait.numpy()) >= self.patience

    def restore_best(self) -> None:
        """Loads the best epoch's weights (early stopping's restore_best_weights)."""
        if self.monitor is None or int(self.best_epoch.numpy()) < 0:
            return
        self._best_checkpoint.read(
            self.best_path
        ).assert_existing_objects_matched().expect_partial()
        logger.info(
            "Restored the best weights: epoch %d, %s = %.5f.",
            int(self.best_epoch.numpy()) + 1,
            self.monitor,
            float(self.best.numpy()),
        )


def _without_optimizer(model: tf.keras.Model) -> tf.train.Checkpoint:
    """What the model tracks (layers, metrics), under the same names, minus its optimizer.

    The best epoch's checkpoint is read only to evaluate, and Adam's two slots are two more
    copies of the item table: three tables written at every improvement and read back at the end
    (750 MB at a million items). Same names, so a best checkpoint that holds the optimizer too
    (written before) still restores.
    """
    # _trackable_children is what tf.train.Checkpoint itself reads off every object it saves.
    children = model._trackable_children(save_type="checkpoint")
    return tf.train.Checkpoint(**{k: v for k, v in children.items() if k != "optimizer"})


def dropout_generators(model: tf.keras.Model) -> dict:
    """{"dropout_k": tf.random.Generator} of every dropout in `model`, in module order.

    Empty when the layers were built without `runtime.seeded_dropout` (TF1 random ops, whose
    state no checkpoint can hold). The generators are created here if their first call has not
    come yet, so that a checkpoint can restore them before the first step uses them.
    """
    if not model.built:
        raise ValueError(f"{model.name}: build the model before attaching it (its dropouts).")
    generators = {}
    for module in model.submodules:
        random_generator = getattr(module, "_random_generator", None)
        if random_generator is None or not hasattr(random_generator, "_maybe_init"):
            continue
        random_generator._maybe_init()
        if getattr(random_generator, "_generator", None) is not None:
            generators[f"dropout_{len(generators)}"] = random_generator._generator
    return generators


def checkpoint_progress(directory: str) -> dict:
    """What the latest ResumableTraining checkpoint in `directory` holds, read without a model.

    {"epochs_done", "seconds" (epoch time summed over every invocation), "best_epoch" (1-based,
    0 without early stopping), "epochs_without_improvement"}; epochs_done 0 when there is none.
    """
    latest = tf.train.latest_checkpoint(directory)
    if latest is None:
        return {"epochs_done": 0, "seconds": 0.0, "best_epoch": 0, "epochs_without_improvement": 0}
    reader = tf.train.load_checkpoint(latest)

    def value(name):
        return reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE")

    return {
        "epochs_done": int(value("epoch")),
        "seconds": float(value("seconds")),
        "best_epoch": int(value("best_epoch")) + 1,
        "epochs_without_improvement": int(value("wait")),
    }


class PhaseTensorBoard(tf.keras.callbacks.TensorBoard):
    """Keras' `TensorBoard` for a phase trained as one `fit()` per epoch.

    Every `fit()` sets the model on its callbacks again, and Keras' callback then writes the
    model summary and the training graph into that fit's new event files: once per epoch, and
    the graph is most of each file. Here they are written by the phase's first `fit()` only (per
    process: a resumed run writes them once more); the scalars are unchanged.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._graph_wanted = self.write_graph
        self._model_seen = None

    def set_model(self, model):
        self.write_graph = self._graph_wanted and model is not self._model_seen
        self._model_seen = model
        super().set_model(model)


class EpochLog(tf.keras.callbacks.CSVLogger):
    """`CSVLogger` in append mode whose columns stay those of the file's first header.

    Two tf-keras behaviours make its CSV misleading in a run done in chunks: a fit without
    validation data gets invented `val_*` columns full of `NA`, and a resumed run writes its own
    keys under the header already in the file (shifted columns if the keys differ, e.g. an
    objective switched on). Here the columns are the existing header's, or the first epoch's own
    log keys in a new file; keys the header lacks are left out with a warning, not shifted in.
    """

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = self._header() or sorted(logs)
            extra = sorted(set(logs) - set(self.keys))
            if extra:
                logger.warning(
                    "%s: its header has no column for %s; those values are not written to it.",
                    self.filename,
                    extra,
                )
        super().on_epoch_end(epoch, logs)

    def _header(self) -> list:
        """The existing file's columns after `epoch`; [] for a new or empty file."""
        if not (self.append and tf.io.gfile.exists(self.filename)):
            return []
        with tf.io.gfile.GFile(self.filename, "r") as f:
            columns = f.readline().rstrip("\r\n").split(self.sep)
        if columns[0] != "epoch" and columns != [""]:
            logger.warning(
                "%s does not start with an epoch log header; appending without one.", self.filename
            )
            return []
        return columns[1:]
