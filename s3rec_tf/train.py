"""`python -m s3rec_tf.train`: pretraining (AAP, MIP, MAP, SP), fine-tuning, evaluation.

    python -m s3rec_tf.train --rank 16                       # on the bundled sample
    python -m s3rec_tf.train --data DIR --output runs/beauty --rank 16 --config sample

The run directory (--output) holds the resolved config (config.json), a copy of the data's
metadata (data_metadata.json), per-phase checkpoints and TensorBoard logs, the final encoder
(final/encoder, a tf.train.Checkpoint(encoder=...)) and results.json; pretraining leaves its
encoder (pretrain/encoder) and summary (pretrain/summary.json) as soon as it ends. Rerunning the same command
after a kill continues from the last finished epoch of whichever phase was running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from typing import List, Optional

from s3rec_tf import callbacks as callbacks_lib
from s3rec_tf import config as config_lib
from s3rec_tf import data as data_lib
from s3rec_tf import finetune as finetune_lib
from s3rec_tf import pretrain as pretrain_lib
from s3rec_tf import reference as reference_lib
from s3rec_tf import schema

import tensorflow as tf  # noqa: E402  (after s3rec_tf selected Keras 2)

logger = logging.getLogger("s3rec_tf.train")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_RAW_DIR = os.path.join(REPO, "beam_pipelines", "sample_data")
FINAL_ENCODER = "final/encoder"
PRETRAINED_ENCODER = "pretrain/encoder"
# Written with the pretrained encoder: what the pretraining cost, readable before fine-tuning ends
# (another run can fine-tune the encoder meanwhile; results.json comes only after fine-tuning).
PRETRAIN_SUMMARY = "pretrain/summary.json"
EPOCH_LOG = "epochs.csv"  # per phase: one row per finished epoch


def checkpoint_dir(run_dir: str, phase: str) -> str:
    """Where ResumableTraining keeps a phase's ("pretrain" or "finetune") epoch checkpoints."""
    return os.path.join(run_dir, phase, "checkpoints")


# ------------------------------------------------------------------------------------ the CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m s3rec_tf.train",
        description="S3-Rec: self-supervised pretraining, fine-tuning and evaluation.",
    )
    p.add_argument("--config", help="YAML preset: a path or a name in configs/ (e.g. sample)")
    p.add_argument("--data", help="output dir of beam_pipelines.preprocess (default: bundled sample)")
    p.add_argument("--output", help="run directory (default: runs/default)")
    p.add_argument("--rank", help="AAP/MAP rank: an integer in 1..hidden, or 'full'")
    p.add_argument("--map_rank", help="MAP rank if different from --rank: integer or 'full'")
    p.add_argument("--pretrain_epochs", type=int)
    p.add_argument("--finetune_epochs", type=int)
    p.add_argument("--pretrain_batch_size", type=int)
    p.add_argument("--finetune_batch_size", type=int)
    p.add_argument("--no_pretrain", action="store_true", help="fine-tune from scratch (SASRec)")
    p.add_argument(
        "--init_from",
        help="encoder to fine-tune: RUN_DIR/pretrain/encoder, a pretraining checkpoint "
        "(RUN_DIR/pretrain/checkpoints/ckpt-N) or the reference .npz",
    )
    p.add_argument("--loss", choices=["bce", "ce", "gbce"], help="fine-tuning loss")
    p.add_argument("--num_negatives", type=int, help="negatives per position (bce/gbce)")
    p.add_argument("--hidden_size", type=int)
    p.add_argument("--num_heads", type=int)
    p.add_argument("--num_layers", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--strategy", choices=["default", "mirrored", "multi_worker"])
    p.add_argument("--jit_compile", action="store_true", help="XLA-compile the train steps")
    p.add_argument("--export", metavar="DIR", help="export a SavedModel here at the end")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2], help="Keras fit verbosity")
    return p


def _rank(value: Optional[str], flag: str):
    if value is None or value == "full":
        return None
    try:
        return int(value)
    except ValueError:
        raise config_lib.ConfigError(f"{flag} must be an integer or 'full', not {value!r}.") from None


def resolve_config(args: argparse.Namespace) -> config_lib.Config:
    """Preset, then command-line overrides; validated."""
    config = config_lib.load(args.config)
    overrides = {
        "data.data_dir": args.data,
        "output_dir": args.output,
        "pretrain.epochs": args.pretrain_epochs,
        "finetune.epochs": args.finetune_epochs,
        "pretrain.batch_size": args.pretrain_batch_size,
        "finetune.batch_size": args.finetune_batch_size,
        "finetune.loss": args.loss,
        "finetune.num_negatives": args.num_negatives,
        "model.hidden_size": args.hidden_size,
        "model.num_heads": args.num_heads,
        "model.num_layers": args.num_layers,
        "seed": args.seed,
        "strategy": args.strategy,
        "init_from": args.init_from,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.rank is not None:
        overrides["model.aap_rank"] = _rank(args.rank, "--rank")
    if args.map_rank is not None:
        overrides["model.map_rank"] = _rank(args.map_rank, "--map_rank")
    if args.no_pretrain:
        overrides["no_pretrain"] = True
    if args.jit_compile:
        overrides["jit_compile"] = True
    return config.replace(**overrides).validate()


def sample_data_dir() -> str:
    """The bundled sample, preprocessed once into a cache directory."""
    cache = os.environ.get(
        "S3REC_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "s3rec_tf")
    )
    out = os.path.join(cache, f"sample-v{schema.FORMAT_VERSION}")
    if not os.path.exists(os.path.join(out, schema.METADATA_FILE)):
        from beam_pipelines import preprocess

        logger.info("Preprocessing the bundled sample into %s (once).", out)
        preprocess.run(
            [
                "--reviews",
                os.path.join(SAMPLE_RAW_DIR, "reviews_Sample_5.json.gz"),
                "--metadata",
                os.path.join(SAMPLE_RAW_DIR, "meta_Sample.json.gz"),
                "--output",
                out,
                "--dupe_factor",
                "2",
            ]
        )
    return out


def make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


# ------------------------------------------------------------------------------------- phases


def _tensorboard(run_dir: str, phase: str) -> tf.keras.callbacks.Callback:
    return tf.keras.callbacks.TensorBoard(os.path.join(run_dir, "logs", phase), update_freq="epoch")


def _phase_callbacks(state, run_dir: str, phase: str, strategy) -> list:
    """TerminateOnNaN, checkpointing, then the logs that read the epoch's time from `state`."""
    callbacks = [tf.keras.callbacks.TerminateOnNaN(), state, _tensorboard(run_dir, phase)]
    if callbacks_lib.is_chief(strategy):
        tf.io.gfile.makedirs(os.path.join(run_dir, phase))
        # One row per finished epoch (losses, metrics, epoch_seconds), kept across resumes.
        callbacks.append(callbacks_lib.EpochLog(os.path.join(run_dir, phase, EPOCH_LOG), append=True))
    return callbacks


def _write_json(path: str, value) -> None:
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def start_epoch(model, seed: int, epoch: int) -> None:
    """Makes the random draws of epoch `epoch` (dropout) a function of (seed, epoch) alone, so a
    run resumed at this epoch draws what the uninterrupted run draws: reseeds, and drops the
    compiled train step, so that fit() traces one whose random ops start from that seed.
    (Under --jit_compile dropout draws from tf.random.Generator states, which this leaves as
    they are.)"""
    tf.keras.utils.set_random_seed((seed * 1_000_003 + epoch) % (2**31 - 1))
    model.train_function = None


def pretrain(config, metadata, strategy, run_dir, verbose) -> dict:
    """Pretraining; returns its summary. Epoch k reads masking duplicate k mod dupe_factor."""
    c = config.pretrain
    data = data_lib.PretrainData(
        config.data.data_dir,
        metadata,
        c.batch_size,
        config.model.max_seq_length,
        config.seed,
        fixed_widths=config.jit_compile,
    )
    item_attributes = data_lib.load_item_attributes(
        config.data.data_dir, metadata["num_items"], metadata["num_attributes"]
    )
    with strategy.scope():
        model = pretrain_lib.S3RecPretrainer.from_project_config(
            config, metadata["num_items"], metadata["num_attributes"], item_attributes
        )
        model.compile(
            optimizer=tf.keras.optimizers.Adam(c.learning_rate), jit_compile=config.jit_compile
        )
        state = callbacks_lib.ResumableTraining(
            checkpoint_dir(run_dir, "pretrain"), strategy, stop_after_epoch=True
        )
        done = state.attach(model)
    summary_path = os.path.join(run_dir, PRETRAIN_SUMMARY)
    if done == c.epochs and tf.io.gfile.exists(summary_path):
        # Finished by an earlier invocation: its summary (with the last epoch's losses) stands.
        with tf.io.gfile.GFile(summary_path) as f:
            return json.load(f)
    callbacks = _phase_callbacks(state, run_dir, "pretrain", strategy)
    start = time.time()
    history = {}
    for epoch in range(done, c.epochs):
        start_epoch(model, config.seed, epoch)
        result = model.fit(
            data.dataset(epoch),
            initial_epoch=epoch,
            epochs=c.epochs,
            callbacks=callbacks,
            verbose=verbose,
        )
        logs = {k: float(v[-1]) for k, v in result.history.items()}
        if not all(map(lambda v: v == v and abs(v) != float("inf"), logs.values())):
            raise FloatingPointError(f"Pretraining diverged in epoch {epoch + 1}: {logs}.")
        history = logs
    tf.train.Checkpoint(encoder=model.encoder).write(
        callbacks_lib.worker_directory(os.path.join(run_dir, PRETRAINED_ENCODER), strategy)
    )
    summary = {
        "epochs": c.epochs,
        "resumed_at_epoch": done,
        "seconds_this_run": time.time() - start,
        # Summed over every invocation (chunks, resumes after a kill), from the checkpoint.
        "seconds": state.total_seconds,
        "timed_epochs": int(state.timed_epochs.numpy()),
        "last_epoch": history,
        "parameters": parameter_counts(model),
    }
    if callbacks_lib.is_chief(strategy):
        _write_json(summary_path, summary)
    return summary


def parameter_counts(model) -> dict:
    """Parameters of the pretraining model: all of them, and the AAP / MAP bilinear forms."""
    return {
        "total": int(model.count_params()),
        "encoder": int(model.encoder.count_params()),
        "aap": model.heads.aap.factor_parameter_count,
        "map": model.heads.map.factor_parameter_count,
    }


def init_encoder(config, encoder, run_dir) -> str:
    """Loads the encoder that fine-tuning starts from; returns where it came from."""
    source = config.init_from
    if source is None and not config.no_pretrain:
        source = os.path.join(run_dir, PRETRAINED_ENCODER)
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
    c = config.finetune
    data_dir = config.data.data_dir

    def train_ds(epoch):  # one epoch, its order and negatives drawn from (seed, epoch)
        return data_lib.finetune_train_dataset(
            data_dir,
            metadata["num_items"],
            c.batch_size,
            config.model.max_seq_length,
            c.num_negatives,
            config.seed,
            fixed_widths=config.jit_compile,
            epoch=epoch,
        )

    valid_ds = data_lib.eval_dataset(data_dir, "valid", c.batch_size, config.model.max_seq_length)
    test_ds = data_lib.eval_dataset(data_dir, "test", c.batch_size, config.model.max_seq_length)
    targets_per_example = None
    if c.loss_normalizer == "dataset":  # one pass over the training split, only when it is used
        targets_per_example = data_lib.mean_finetune_targets(data_dir, config.model.max_seq_length)
    with strategy.scope():
        encoder = pretrain_lib.encoder_from_config(config.model, metadata["num_items"])
        model = finetune_lib.build_recommender(config, encoder, targets_per_example)
        model(tf.zeros([1, 1], tf.int32))  # creates the weights before they are loaded
        init = init_encoder(config, encoder, run_dir)
        model.compile(optimizer=tf.keras.optimizers.Adam(c.learning_rate), jit_compile=config.jit_compile)
        state = callbacks_lib.ResumableTraining(
            checkpoint_dir(run_dir, "finetune"),
            strategy,
            monitor=f"val_{c.monitor}",
            patience=c.patience,
            stop_after_epoch=True,  # one fit per epoch, as pretraining: see start_epoch
        )
        done = state.attach(model)
    start = time.time()
    callbacks = _phase_callbacks(state, run_dir, "finetune", strategy)
    for epoch in range(done, c.epochs):
        if state.finished:
            break
        start_epoch(model, config.seed, epoch)
        model.fit(
            train_ds(epoch),
            validation_data=valid_ds,
            initial_epoch=epoch,
            epochs=c.epochs,
            callbacks=callbacks,
            verbose=verbose,
        )
        if state.epochs_done != epoch + 1:  # TerminateOnNaN stopped it: no checkpoint was made
            break
    train_seconds = time.time() - start
    state.restore_best()
    valid = finetune_lib.evaluate(model, valid_ds)
    test = finetune_lib.evaluate(model, test_ds)
    tf.train.Checkpoint(encoder=encoder).write(
        callbacks_lib.worker_directory(os.path.join(run_dir, FINAL_ENCODER), strategy)
    )
    return {
        "init": init,
        "epochs_run": state.epochs_done,
        "best_epoch": state.best_epoch_number,
        "stopped_early": state.finished,
        "seconds_this_run": train_seconds,
        "seconds": state.total_seconds,
        "timed_epochs": int(state.timed_epochs.numpy()),
        "valid": _by_protocol(valid),
        "test": _by_protocol(test),
        "parameters": int(sum(v.shape.num_elements() for v in model.trainable_variables)),
        # What the training loss of a batch was divided by, per example (None: its own count).
        "targets_per_example": model.targets_per_example,
    }


def _by_protocol(metrics: dict) -> dict:
    """{"sampled_hr@10": x, ...} -> {"sampled": {"hr@10": x}, "full": {...}}."""
    grouped: dict = {"sampled": {}, "full": {}}
    for name, value in metrics.items():
        protocol, _, metric = name.partition("_")
        grouped.setdefault(protocol, {})[metric] = value
    return grouped


@contextlib.contextmanager
def seeded_dropout_under_xla(jit_compile: bool):
    """Makes the dropout of layers built inside reproducible under XLA.

    Keras 2 dropout draws from TF1 random ops, whose seeds XLA ignores ("Using tf.random.uniform
    with XLA compilation will ignore seeds"): two jit-compiled runs with one seed would differ.
    Layers built here draw from seeded tf.random.Generator states instead, which XLA honours
    (their state is in no checkpoint or weight list). Without XLA the default ops stay, so runs
    made before this switch existed reproduce exactly.
    """
    experimental = tf.keras.backend.experimental
    if not jit_compile or experimental.is_tf_random_generator_enabled():
        yield
        return
    experimental.enable_tf_random_generator()
    try:
        yield
    finally:
        experimental.disable_tf_random_generator()


def _check_one_cpu_device_per_worker(strategy) -> None:
    """XLA compiles each step for one CPU device, which cannot reach the variables of the other
    CPU replicas of the same worker: the first jit-compiled step would fail, after data and model
    were set up. (One CPU replica per worker, as under multi_worker, is not affected.)"""
    local_devices = len(strategy.extended.worker_devices)
    if local_devices > 1:
        raise config_lib.ConfigError(
            f"jit_compile with {local_devices} CPU replicas: XLA cannot reach "
            "variables on other CPU devices (https://www.tensorflow.org/xla/known_issues"
            "#tfvariable_on_a_different_device). Drop --jit_compile, or run the replicas on GPUs."
        )


# What a rerun may change and still continue the run in its directory: how many epochs each phase
# has (to extend a run, or to run it in chunks), where the data and the run directory are, and how
# the steps execute. Any other change alters what is trained: continuing would splice two
# experiments into one set of checkpoints and one results.json.
RESUMABLE_CHANGES = frozenset(
    {"pretrain.epochs", "finetune.epochs", "data.data_dir", "output_dir", "strategy", "jit_compile"}
)


def _has_progress(run_dir: str) -> bool:
    return any(
        tf.train.latest_checkpoint(checkpoint_dir(run_dir, phase))
        for phase in ("pretrain", "finetune")
    )


def run_status(run_dir: str) -> dict:
    """Where a run directory stands, from its files alone (another process may be training in it).

    {"state": "not started" | "pretraining" | "fine-tuning" | "finished", "pretrain" and
    "finetune": checkpoint progress (see callbacks.checkpoint_progress) with the phase's epoch
    budget, "test": results.json's test metrics once finished}.
    """
    saved_config = os.path.join(run_dir, "config.json")
    if not tf.io.gfile.exists(saved_config):
        return {"state": "not started"}
    config = config_lib.load_saved(saved_config)
    status = {}
    for phase in ("pretrain", "finetune"):
        progress = callbacks_lib.checkpoint_progress(checkpoint_dir(run_dir, phase))
        status[phase] = dict(progress, epochs=getattr(config, phase).epochs)
    results_path = os.path.join(run_dir, "results.json")
    if tf.io.gfile.exists(results_path):
        with tf.io.gfile.GFile(results_path) as f:
            status.update(state="finished", test=json.load(f)["test"])
    elif _pretrains(config) and not tf.io.gfile.exists(os.path.join(run_dir, PRETRAIN_SUMMARY)):
        status["state"] = "pretraining"
    else:
        status["state"] = "fine-tuning"
    return status


def _pretrains(config: config_lib.Config) -> bool:
    return not config.no_pretrain and config.init_from is None and config.pretrain.epochs > 0


def _data_identity(metadata: dict) -> dict:
    # Where the Beam job wrote the data is not what the data is (it may be copied or moved).
    identity = json.loads(json.dumps(metadata))
    identity.get("config", {}).pop("output", None)
    return identity


def check_resumable(run_dir: str, config: config_lib.Config, metadata: dict) -> None:
    """Stops before any work when `run_dir` holds a run started with other settings or data."""
    saved_config = os.path.join(run_dir, "config.json")
    if not (_has_progress(run_dir) and tf.io.gfile.exists(saved_config)):
        return
    changed = {
        key: values
        for key, values in config_lib.differences(config_lib.load_saved(saved_config), config).items()
        if key not in RESUMABLE_CHANGES
    }
    problems = [f"{key} = {was!r} there, {now!r} now" for key, (was, now) in sorted(changed.items())]
    saved_metadata = os.path.join(run_dir, "data_metadata.json")
    if tf.io.gfile.exists(saved_metadata):
        with tf.io.gfile.GFile(saved_metadata) as f:
            before = _data_identity(json.load(f))
        now = _data_identity(metadata)
        fields = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if fields:
            problems.append(
                f"the data in {config.data.data_dir} is not the data the run started on "
                f"(metadata fields {', '.join(fields)} differ from {saved_metadata})"
            )
    if problems:
        raise config_lib.ConfigError(
            f"{run_dir} holds a run started with other settings: {'; '.join(problems)}. "
            "Continuing it would mix two experiments. Choose another --output, or rerun with the "
            f"settings in {saved_config}; between invocations only "
            f"{', '.join(sorted(RESUMABLE_CHANGES))} may change."
        )


def run(config: config_lib.Config, export_dir: Optional[str] = None, verbose: int = 1) -> dict:
    """Runs every phase for a validated config; returns (and writes) results.json."""
    if config.data.data_dir is None:
        config = config.replace(**{"data.data_dir": sample_data_dir()})
    data_dir = config.data.data_dir
    metadata = data_lib.read_metadata(data_dir)  # fails before any work on bad data
    if metadata["max_seq_length"] > config.model.max_seq_length:
        raise config_lib.ConfigError(
            f"model.max_seq_length = {config.model.max_seq_length} but {data_dir} was built with "
            f"max_seq_length {metadata['max_seq_length']}."
        )
    pretraining = _pretrains(config)
    data_lib.check_files(data_dir, dupe_factor=metadata["dupe_factor"] if pretraining else 0)
    if config.init_from and not config.init_from.endswith(".npz"):
        if not tf.io.gfile.glob(config.init_from + "*"):
            raise FileNotFoundError(f"--init_from {config.init_from!r}: no such checkpoint.")
    elif config.init_from and not tf.io.gfile.exists(config.init_from):
        raise FileNotFoundError(f"--init_from {config.init_from!r}: no such file.")

    if export_dir:
        from export import saved_model

        saved_model.check_output_dir(export_dir)  # before hours of training, not after

    strategy = make_strategy(config.strategy)
    if config.jit_compile and config.strategy != "default" and not tf.config.list_logical_devices("GPU"):
        _check_one_cpu_device_per_worker(strategy)
    run_dir = config.output_dir
    check_resumable(run_dir, config, metadata)
    tf.keras.utils.set_random_seed(config.seed)
    tf.io.gfile.makedirs(run_dir)
    config_lib.save(config, os.path.join(run_dir, "config.json"))
    _write_json(os.path.join(run_dir, "data_metadata.json"), metadata)
    logger.info(
        "Data %s: %d users, %d items, %d attributes; %d replica(s).",
        data_dir,
        metadata["num_users"],
        metadata["num_items"],
        metadata["num_attributes"],
        strategy.num_replicas_in_sync,
    )

    results: dict = {"config": config.to_dict(), "data": metadata}
    with seeded_dropout_under_xla(config.jit_compile):
        if pretraining:
            results["pretrain"] = pretrain(config, metadata, strategy, run_dir, verbose)
        results["finetune"] = finetune(config, metadata, strategy, run_dir, verbose)
    results["valid"] = results["finetune"].pop("valid")
    results["test"] = results["finetune"].pop("test")
    results["parameters"] = parameter_counts(
        pretrain_lib.S3RecPretrainer.from_project_config(
            config, metadata["num_items"], metadata["num_attributes"], {}
        )
    )
    results["wall_seconds"] = {
        "pretrain": results.get("pretrain", {}).get("seconds", 0.0),
        "finetune": results["finetune"]["seconds"],
    }
    if callbacks_lib.is_chief(strategy):
        _write_json(os.path.join(run_dir, "results.json"), results)
        if export_dir:
            results["export"] = saved_model.export_run(run_dir, export_dir)
            logger.info("Exported a SavedModel to %s.", export_dir)
    return results


def main(argv: Optional[List[str]] = None) -> dict:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Our progress at INFO; other libraries' INFO chatter (checkpoint sharding, ...) stays out.
    logging.getLogger("s3rec_tf").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    try:
        config = resolve_config(args)
        results = run(config, export_dir=args.export, verbose=args.verbose)
    except config_lib.ConfigError as e:
        # Bad configuration stops before any work (every check in run() comes first), with the
        # reason.
        sys.exit(f"error: {e}")
    test = results["test"]
    logger.info(
        "Test: sampled HR@10 %.4f NDCG@10 %.4f | full HR@10 %.4f NDCG@10 %.4f",
        test["sampled"].get("hr@10", float("nan")),
        test["sampled"].get("ndcg@10", float("nan")),
        test["full"].get("hr@10", float("nan")),
        test["full"].get("ndcg@10", float("nan")),
    )
    return results


if __name__ == "__main__":
    main()
