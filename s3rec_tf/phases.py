"""The phases of a run: pretraining (AAP, MIP, MAP, SP), then fine-tuning and evaluation.

Each phase builds its inputs (`s3rec_tf.data`) and model (`s3rec_tf.builders`) under the
strategy, resumes from its checkpoints in the run directory (`s3rec_tf.run_dir`), fits, and
returns its part of results.json. `run_phases` runs them in order for a validated Config.
"""

from __future__ import annotations

import logging
import math
import time

import tensorflow as tf

from s3rec_tf import builders, data_files, jsonfile, metric_names, runtime
from s3rec_tf import callbacks as callbacks_lib
from s3rec_tf import config as config_lib
from s3rec_tf import data as data_lib
from s3rec_tf import finetune as finetune_lib
from s3rec_tf import losses as losses_lib
from s3rec_tf import reference as reference_lib
from s3rec_tf import run_dir as run_dir_lib

logger = logging.getLogger(__name__)


def check_inputs(config: config_lib.Config) -> dict:
    """Reads the data's metadata and checks every input the run needs, before any work."""
    data_dir = config.data.data_dir
    metadata = data_files.read_metadata(data_dir)
    if metadata["max_seq_length"] > config.model.max_seq_length:
        raise config_lib.ConfigError(
            f"model.max_seq_length = {config.model.max_seq_length} but {data_dir} was built with "
            f"max_seq_length {metadata['max_seq_length']}."
        )
    data_files.check_files(data_dir, dupe_factor=metadata["dupe_factor"] if config.pretrains else 0)
    try:  # a loss whose step cannot fit stops here, not with an out-of-memory kill mid-epoch
        losses_lib.LOSSES[config.finetune.loss].check_fits(
            metadata["num_items"],
            config.finetune.batch_size,
            config.model.max_seq_length,
            runtime.memory_bytes(),
        )
    except ValueError as e:
        raise config_lib.ConfigError(f"{data_dir}: {e}") from None
    source = config.init_from
    if source and not source.endswith(".npz"):
        if not tf.io.gfile.glob(source + "*"):
            raise FileNotFoundError(f"--init_from {source!r}: no such checkpoint.")
    elif source and not tf.io.gfile.exists(source):
        raise FileNotFoundError(f"--init_from {source!r}: no such file.")
    return metadata


def run_phases(config, metadata, strategy, run_dir, verbose) -> dict:
    """Pretraining (when the config has it), fine-tuning and evaluation; returns results.json."""
    results: dict = {"config": config.to_dict(), "data": metadata}
    data_dir = config.data.data_dir
    with runtime.seeded_dropout():
        with data_files.explain_damaged_data(data_dir):
            if config.pretrains:
                results["pretrain"] = pretrain(config, metadata, strategy, run_dir, verbose)
            results["finetune"] = finetune(config, metadata, strategy, run_dir, verbose)
    results["valid"] = results["finetune"].pop("valid")
    results["test"] = results["finetune"].pop("test")
    results["parameters"] = builders.parameter_counts(
        builders.pretrainer_from_config(
            config, metadata["num_items"], metadata["num_attributes"], {}
        )
    )
    results["wall_seconds"] = {
        "pretrain": results.get("pretrain", {}).get("seconds", 0.0),
        "finetune": results["finetune"]["seconds"],
    }
    return results


def _phase_callbacks(state, run_dir: str, phase: str, strategy) -> list:
    """TerminateOnNaN, checkpointing, then the logs that read the epoch's time from `state`."""
    callbacks = [
        tf.keras.callbacks.TerminateOnNaN(),
        state,
        callbacks_lib.PhaseTensorBoard(
            run_dir_lib.tensorboard_dir(run_dir, phase), update_freq="epoch"
        ),
    ]
    if runtime.is_chief(strategy):
        epoch_log = run_dir_lib.epoch_log(run_dir, phase)
        tf.io.gfile.makedirs(run_dir_lib.path(run_dir, phase))
        # One row per finished epoch (losses, metrics, epoch_seconds), kept across resumes.
        callbacks.append(callbacks_lib.EpochLog(epoch_log, append=True))
    return callbacks


def pretrain(config, metadata, strategy, run_dir, verbose) -> dict:
    """Pretraining; returns its summary. Epoch k reads masking duplicate k mod dupe_factor."""
    settings = config.pretrain
    data = data_lib.PretrainData(
        config.data.data_dir,
        metadata,
        settings.batch_size,
        config.model.max_seq_length,
        config.seed,
        fixed_widths=config.jit_compile,
    )
    item_attributes = data_files.load_item_attributes(
        config.data.data_dir, metadata["num_items"], metadata["num_attributes"]
    )
    with strategy.scope():
        model = builders.pretrainer_from_config(
            config, metadata["num_items"], metadata["num_attributes"], item_attributes
        )
        model.build()  # every weight and dropout exists before the checkpoint is restored
        runtime.compile_for_training(model, settings.learning_rate, config.jit_compile)
        state = callbacks_lib.ResumableTraining(
            run_dir_lib.checkpoint_dir(run_dir, "pretrain"), strategy, stop_after_epoch=True
        )
        done = state.attach(model)
    summary_path = run_dir_lib.path(run_dir, run_dir_lib.PRETRAIN_SUMMARY)
    if done == settings.epochs and tf.io.gfile.exists(summary_path):
        # Finished by an earlier invocation: its summary (with the last epoch's losses) stands.
        return run_dir_lib.read_json(summary_path)
    callbacks = _phase_callbacks(state, run_dir, "pretrain", strategy)
    if done < settings.epochs:
        logger.info("Pretraining from epoch %d of %d.", done + 1, settings.epochs)
    start = time.time()
    last_epoch_logs = {}
    for epoch in range(done, settings.epochs):
        history = model.fit(
            data.dataset(epoch),
            initial_epoch=epoch,
            epochs=settings.epochs,
            callbacks=callbacks,
            verbose=verbose,
        )
        last_epoch_logs = {name: float(values[-1]) for name, values in history.history.items()}
        if not all(math.isfinite(value) for value in last_epoch_logs.values()):
            raise FloatingPointError(
                f"Pretraining diverged in epoch {epoch + 1}: {last_epoch_logs}."
            )
    encoder_path = run_dir_lib.path(run_dir, run_dir_lib.PRETRAINED_ENCODER)
    tf.train.Checkpoint(encoder=model.encoder).write(
        runtime.worker_directory(encoder_path, strategy)
    )
    summary = {
        "epochs": settings.epochs,
        "resumed_at_epoch": done,
        "seconds_this_run": time.time() - start,
        # Summed over every invocation (chunks, resumes after a kill), from the checkpoint.
        "seconds": state.total_seconds,
        "timed_epochs": int(state.timed_epochs.numpy()),
        "last_epoch": last_epoch_logs,
        "parameters": builders.parameter_counts(model),
    }
    if runtime.is_chief(strategy):
        jsonfile.write(summary_path, summary)
    return summary


def init_encoder(config, encoder, run_dir) -> str:
    """Loads the encoder that fine-tuning starts from; returns where it came from."""
    source = config.init_from
    if source is None and config.pretrains:  # not SASRec, not --pretrain_epochs 0
        source = run_dir_lib.path(run_dir, run_dir_lib.PRETRAINED_ENCODER)
    if source is None:
        return "none"
    if source.endswith(".npz"):
        reference_lib.load_reference_weights(source, encoder)
        return "reference"
    names = (name for name, _ in tf.train.list_variables(source))
    if any(name.startswith("model/encoder/") for name in names):
        # A pretraining checkpoint (RUN_DIR/pretrain/checkpoints/ckpt-N): its model's encoder,
        # so fine-tuning can start from any finished pretraining epoch.
        root = tf.train.Checkpoint(model=tf.train.Checkpoint(encoder=encoder))
    else:
        root = tf.train.Checkpoint(encoder=encoder)
    root.read(source).assert_existing_objects_matched().expect_partial()
    return "pretrained"


def finetune(config, metadata, strategy, run_dir, verbose) -> dict:
    """Fine-tuning with early stopping, then evaluation of the best epoch on valid and test."""
    settings = config.finetune
    data_dir = config.data.data_dir
    max_seq_length = config.model.max_seq_length

    def train_ds(epoch):  # one epoch, its order and negatives drawn from (seed, epoch)
        return data_lib.finetune_train_dataset(
            data_dir,
            metadata["num_items"],
            settings.batch_size,
            max_seq_length,
            settings.num_negatives,
            config.seed,
            fixed_widths=config.jit_compile,
            epoch=epoch,
        )

    valid_users = data_lib.user_sample(metadata["num_users"], settings.valid_users, config.seed)
    valid_ds = data_lib.eval_dataset(
        data_dir, "valid", settings.batch_size, max_seq_length, users=valid_users
    )
    # Read once, so not cached: its memory would grow with the users.
    test_ds = data_lib.eval_dataset(
        data_dir, "test", settings.batch_size, max_seq_length, cache=False
    )
    targets_per_example = None
    if settings.loss_normalizer == "dataset":  # one pass over the training split, only if used
        targets_per_example = data_files.mean_finetune_targets(data_dir, max_seq_length)
    popularity = None
    if settings.loss == "sampled_softmax" and (
        settings.sampler == "popularity" or settings.in_batch_negatives
    ):
        popularity = data_files.item_popularity(data_dir, metadata["num_items"])
    with strategy.scope():
        encoder = builders.encoder_from_config(config.model, metadata["num_items"])
        model = builders.recommender_from_config(config, encoder, targets_per_example, popularity)
        model(tf.zeros([1, 1], tf.int32))  # creates the weights before they are loaded
        init = init_encoder(config, encoder, run_dir)
        runtime.compile_for_training(model, settings.learning_rate, config.jit_compile)
        state = callbacks_lib.ResumableTraining(
            run_dir_lib.checkpoint_dir(run_dir, "finetune"),
            strategy,
            monitor=f"val_{settings.monitor}",
            patience=settings.patience,
            stop_after_epoch=True,  # one fit per epoch: each reads its own epoch's dataset
        )
        done = state.attach(model)
    start = time.time()
    callbacks = _phase_callbacks(state, run_dir, "finetune", strategy)
    if done < settings.epochs and not state.stopped_early:
        logger.info(
            "Fine-tuning from epoch %d of %d (validation on %s users).",
            done + 1,
            settings.epochs,
            "all" if valid_users is None else f"{len(valid_users):,}",
        )
    for epoch in range(done, settings.epochs):
        if state.stopped_early:
            break
        model.fit(
            train_ds(epoch),
            validation_data=valid_ds,
            initial_epoch=epoch,
            epochs=settings.epochs,
            callbacks=callbacks,
            verbose=verbose,
        )
        if state.epochs_done != epoch + 1:  # TerminateOnNaN stopped it: no checkpoint was made
            break
    train_seconds = time.time() - start
    state.restore_best()
    evaluated, evaluation_seconds = {}, {}
    for split, dataset in (("valid", valid_ds), ("test", test_ds)):
        # These lines mark the phase for whoever watches the log (benchmarks/catalogue_scale.py).
        logger.info("Evaluating epoch %d on %s.", state.best_epoch_number, split)
        split_start = time.time()
        evaluated[split] = finetune_lib.evaluate(model, dataset)
        evaluation_seconds[split] = time.time() - split_start
    logger.info("Evaluated.")
    encoder_path = run_dir_lib.path(run_dir, run_dir_lib.FINAL_ENCODER)
    tf.train.Checkpoint(encoder=encoder).write(runtime.worker_directory(encoder_path, strategy))
    return {
        "init": init,
        "epochs_run": state.epochs_done,
        "best_epoch": state.best_epoch_number,
        "stopped_early": state.stopped_early,
        "seconds_this_run": train_seconds,
        "seconds": state.total_seconds,
        "timed_epochs": int(state.timed_epochs.numpy()),
        "valid": _by_protocol(evaluated["valid"]),
        "test": _by_protocol(evaluated["test"]),
        "evaluation_seconds": evaluation_seconds,
        "valid_users": metadata["num_users"] if valid_users is None else len(valid_users),
        "parameters": int(sum(v.shape.num_elements() for v in model.trainable_variables)),
        # What the training loss of a batch was divided by, per example (None: its own count).
        "targets_per_example": model.targets_per_example,
    }


def _by_protocol(metrics: dict) -> dict:
    """{"sampled_hr@10": x, ...} -> {"sampled": {"hr@10": x}, "full": {...}, ...}."""
    grouped: dict = {"sampled": {}, "full": {}}
    for name, value in metrics.items():
        protocol, metric = metric_names.protocol_of(name)
        grouped.setdefault(protocol, {})[metric] = value
    return grouped
