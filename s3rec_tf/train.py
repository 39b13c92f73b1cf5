"""`python -m s3rec_tf.train`: pretraining (AAP, MIP, MAP, SP), fine-tuning, evaluation.

    python -m s3rec_tf.train --rank 16                       # on the bundled sample
    python -m s3rec_tf.train --data DIR --output runs/beauty --rank 16 --config sample

The entry point: flags -> Config -> (the bundled sample, built once) -> phases -> results.json ->
(an export). What a run directory holds is `s3rec_tf.run_dir`; the phases are `s3rec_tf.phases`.
Rerunning the same command after a kill continues from the last finished epoch of whichever phase
was running.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import sys
from typing import Optional

import tensorflow as tf

from s3rec_tf import config as config_lib
from s3rec_tf import data_files, jsonfile, losses, metric_names, phases, runtime, schema
from s3rec_tf import run_dir as run_dir_lib

logger = logging.getLogger("s3rec_tf.train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m s3rec_tf.train",
        description="S3-Rec: self-supervised pretraining, fine-tuning and evaluation.",
    )
    p.add_argument(
        "--config",
        help="YAML preset: a path or a name in configs/ (sample, reference_weights, full_ranking)",
    )
    p.add_argument("--data", help="output dir of beam_pipelines.preprocess (default: the sample)")
    p.add_argument("--output", help="run directory (default: runs/default)")
    p.add_argument(
        "--rank", help=f"AAP/MAP rank: an integer in 1..hidden, or '{config_lib.FULL_RANK}'"
    )
    p.add_argument(
        "--map_rank",
        help=f"MAP rank if different from --rank: integer or '{config_lib.FULL_RANK}'",
    )
    p.add_argument("--pretrain_epochs", type=int)
    p.add_argument("--finetune_epochs", type=int)
    p.add_argument("--pretrain_batch_size", type=int, help="global batch (all replicas)")
    p.add_argument("--finetune_batch_size", type=int, help="global batch (all replicas)")
    p.add_argument("--no_pretrain", action="store_true", help="fine-tune from scratch (SASRec)")
    p.add_argument(
        "--init_from",
        help="encoder to fine-tune: RUN_DIR/pretrain/encoder, a pretraining checkpoint "
        "(RUN_DIR/pretrain/checkpoints/ckpt-N) or the reference .npz",
    )
    p.add_argument("--loss", choices=losses.names(), help="fine-tuning loss")
    p.add_argument(
        "--num_samples", type=int, help="sampled_softmax: negatives shared by a batch (k)"
    )
    p.add_argument("--sampler", choices=losses.SAMPLERS, help="sampled_softmax's proposal")
    p.add_argument(
        "--in_batch_negatives",
        action="store_true",
        default=None,
        help="sampled_softmax: k of the batch's own targets as negatives too (mixed sampling)",
    )
    p.add_argument(
        "--monitor",
        help="validation metric for early stopping and the kept checkpoint, e.g. sampled_mrr "
        "or full_ndcg@10",
    )
    p.add_argument(
        "--eval_item_chunk",
        type=int,
        help="items scored at a time by full-ranking evaluation (memory: eval batch x this)",
    )
    p.add_argument(
        "--valid_users",
        type=int,
        help="validate on this many users drawn from the seed (0: all; test uses all)",
    )
    p.add_argument("--num_negatives", type=int, help="negatives per position (bce/gbce)")
    p.add_argument("--hidden_size", type=int)
    p.add_argument("--num_heads", type=int)
    p.add_argument("--num_layers", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--strategy", choices=config_lib.STRATEGIES)
    p.add_argument("--jit_compile", action="store_true", help="XLA-compile the train steps")
    p.add_argument(
        "--mixed_precision",
        choices=config_lib.PRECISIONS,
        help="Keras dtype policy (default off: float32); mixed_* for GPUs",
    )
    p.add_argument(
        "--intra_op_threads",
        type=int,
        help="threads one op may use (0: one per core). Default: "
        f"{runtime.PRETRAINING_INTRA_OP_THREADS} when the run pretrains (small ops, run side "
        "by side instead), else 0",
    )
    p.add_argument(
        "--inter_op_threads",
        type=int,
        default=0,
        help="ops run side by side (0: TensorFlow's default, one per core)",
    )
    p.add_argument("--export", metavar="DIR", help="export a SavedModel here at the end")
    p.add_argument(
        "--verbose",
        type=int,
        choices=[0, 1, 2],
        help="Keras fit verbosity (default: 1 on a terminal, else 2: one line per epoch)",
    )
    return p


def resolve_config(args: argparse.Namespace) -> config_lib.Config:
    """Preset, then command-line overrides; validated."""
    overrides = {
        "data.data_dir": args.data,
        "output_dir": args.output,
        "pretrain.epochs": args.pretrain_epochs,
        "finetune.epochs": args.finetune_epochs,
        "pretrain.batch_size": args.pretrain_batch_size,
        "finetune.batch_size": args.finetune_batch_size,
        "finetune.loss": args.loss,
        "finetune.num_samples": args.num_samples,
        "finetune.sampler": args.sampler,
        "finetune.in_batch_negatives": args.in_batch_negatives,
        "finetune.monitor": args.monitor,
        "finetune.eval_item_chunk": args.eval_item_chunk,
        "finetune.valid_users": args.valid_users,
        "finetune.num_negatives": args.num_negatives,
        "model.hidden_size": args.hidden_size,
        "model.num_heads": args.num_heads,
        "model.num_layers": args.num_layers,
        "seed": args.seed,
        "strategy": args.strategy,
        "mixed_precision": args.mixed_precision,
        "init_from": args.init_from,
        "no_pretrain": args.no_pretrain or None,
        "jit_compile": args.jit_compile or None,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.rank is not None:
        overrides["model.aap_rank"] = config_lib.parse_rank(args.rank, "--rank")
    if args.map_rank is not None:
        overrides["model.map_rank"] = config_lib.parse_rank(args.map_rank, "--map_rank")
    return config_lib.load(args.config).replace(**overrides).validate()


def sample_data_dir() -> str:
    """The bundled sample (raw 2014 format, in beam_pipelines), preprocessed once into a cache."""
    cache = os.environ.get(
        "S3REC_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "s3rec_tf")
    )
    out = os.path.join(cache, f"sample-v{schema.FORMAT_VERSION}")
    metadata = os.path.join(out, schema.METADATA_FILE)
    if os.path.exists(metadata):
        return out
    os.makedirs(cache, exist_ok=True)
    # Processes started together (a sweep, parallel tests) build it once: the others wait on the
    # lock, then find it complete. The job writes metadata.json last, so a build that was killed
    # leaves none and is redone (the job first removes what it left).
    with open(out + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(metadata):
            from beam_pipelines import preprocess, sample_data

            raw = sample_data.DEFAULT_OUTPUT  # the bundled files, inside the installed package
            logger.info("Preprocessing the bundled sample into %s (once).", out)
            preprocess.run(
                [
                    *("--reviews", os.path.join(raw, sample_data.REVIEWS_FILE)),
                    *("--metadata", os.path.join(raw, sample_data.META_FILE)),
                    *("--output", out, *sample_data.JOB_FLAGS),
                ]
            )
    return out


def run(config: config_lib.Config, export_dir: Optional[str] = None, verbose: int = 1) -> dict:
    """Runs every phase for a validated config; returns (and writes) results.json."""
    if config.data.data_dir is None:
        config = config.replace(**{"data.data_dir": sample_data_dir()})
    metadata = phases.check_inputs(config)  # fails before any work on bad data
    if export_dir:
        from export import saved_model

        saved_model.check_output_dir(export_dir)  # before hours of training, not after
    strategy = runtime.make_strategy(config.strategy)
    if config.jit_compile and config.strategy != "default":
        runtime.check_jit_compile_devices(strategy)
    run_dir = config.output_dir
    chief = runtime.is_chief(strategy)
    tf.io.gfile.makedirs(run_dir)
    with run_dir_lib.lock(run_dir) if chief else contextlib.nullcontext():
        run_dir_lib.start(run_dir, config, metadata)
        tf.keras.utils.set_random_seed(config.seed)
        logger.info(
            "Data %s: %d users, %d items, %d attributes; %d replica(s); precision %s.",
            config.data.data_dir,
            metadata["num_users"],
            metadata["num_items"],
            metadata["num_attributes"],
            strategy.num_replicas_in_sync,
            config.mixed_precision,
        )
        with runtime.precision_policy(config.mixed_precision):
            results = phases.run_phases(config, metadata, strategy, run_dir, verbose)
        if chief:
            jsonfile.write(run_dir_lib.path(run_dir, run_dir_lib.RESULTS_FILE), results)
    if chief and export_dir:
        results["export"] = saved_model.export_run(run_dir, export_dir)
        logger.info("Exported a SavedModel to %s.", export_dir)
    return results


def main(argv: Optional[list[str]] = None) -> dict:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    # Our progress at INFO; other libraries' INFO chatter (checkpoint sharding, ...) stays out.
    logging.getLogger("s3rec_tf").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    # Progress bars redrawn with carriage returns make one endless line in a file or a pipe.
    verbose = args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)
    try:
        config = resolve_config(args)
        intra_op = args.intra_op_threads
        if intra_op is None:
            intra_op = runtime.PRETRAINING_INTRA_OP_THREADS if config.pretrains else 0
        if not runtime.configure_threads(intra_op, args.inter_op_threads):
            logger.warning("TensorFlow had already started: its thread settings are kept.")
        results = run(config, export_dir=args.export, verbose=verbose)
    except (config_lib.ConfigError, data_files.DamagedDataError) as e:
        # Bad configuration stops before any work (every check in run() comes first), and damaged
        # data stops with the file to rebuild: a reason, not a traceback.
        sys.exit(f"error: {e}")
    test = results["test"]
    logger.info(
        "Test: %s",
        " | ".join(
            f"{p} {metric_names.headline(test[p])}" for p in metric_names.HEADLINE_PROTOCOLS
        ),
    )
    return results


if __name__ == "__main__":
    main()
