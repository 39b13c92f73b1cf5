"""Seconds per pretraining epoch on the Beauty output of the Beam job.

    python benchmarks/pretrain_speed.py --data DIR [--report reports/pretrain_speed.json]

For each setting (rank, jit_compile) it builds a fresh S3RecPretrainer, runs one epoch to trace,
compile and fill the tf.data cache, then times a second, steady-state epoch (a different masking
duplicate when the data has several). It also times the input pipeline alone (the floor the
model cannot go below on this machine) and reports the padding efficiency of the bucketed batches.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from benchmarks.common import machine  # noqa: E402
from s3rec_tf import (
    builders,  # noqa: E402
    runtime,  # noqa: E402
    schema,  # noqa: E402
)
from s3rec_tf import config as config_lib  # noqa: E402
from s3rec_tf import data as data_lib  # noqa: E402

REPORTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reports")


def time_input_pipeline(data: data_lib.PretrainData, epoch: int) -> dict:
    start = time.perf_counter()
    batches = real = padded = 0
    for batch in data.dataset(epoch):
        items = batch[schema.POS_ITEMS]
        batches += 1
        real += int(tf.math.count_nonzero(items))
        padded += int(tf.size(items))
    return {
        "seconds": time.perf_counter() - start,
        "batches": batches,
        "real_positions": real,
        "padded_positions": padded,
    }


def time_setting(config, metadata, item_attributes, data, rank, jit, epochs) -> dict:
    config = config.replace(**{"model.aap_rank": rank, "jit_compile": jit})
    tf.keras.utils.set_random_seed(config.seed)
    model = builders.pretrainer_from_config(
        config, metadata["num_items"], metadata["num_attributes"], item_attributes
    )
    model.build()
    # As the training CLI compiles it (optimizer slots made before the first traced step).
    runtime.compile_for_training(model, config.pretrain.learning_rate, jit)
    seconds, logs = [], {}
    for epoch in range(epochs):
        start = time.perf_counter()
        history = model.fit(data.dataset(epoch), verbose=0)
        seconds.append(time.perf_counter() - start)
        logs = {k: float(v[-1]) for k, v in history.history.items()}
        logging.info("rank=%s jit=%s epoch %d: %.1f s %s", rank, jit, epoch + 1, seconds[-1], logs)
    steady = seconds[1:] or seconds
    return {
        "rank": "full" if rank is None else rank,
        "jit_compile": jit,
        "epoch_seconds": min(steady),
        "epoch_seconds_all": seconds,
        "examples_per_second": data.num_examples / min(steady),
        "last_losses": logs,
        "parameters": {
            "aap": model.heads.aap.factor_parameter_count,
            "total": int(model.count_params()),
        },
    }


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", required=True, help="beam_pipelines.preprocess output for Beauty")
    p.add_argument("--report", default=os.path.join(REPORTS, "pretrain_speed.json"))
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--epochs", type=int, default=2, help="per setting; the first one warms up")
    p.add_argument(
        "--settings",
        default="16:off,16:on,full:off",
        help="comma-separated rank:jit pairs (rank an integer or 'full', jit on/off)",
    )
    args = p.parse_args(argv)
    # As `python -m s3rec_tf.train` runs pretraining.
    runtime.configure_threads(runtime.PRETRAINING_INTRA_OP_THREADS)

    config = config_lib.Config().replace(**{"pretrain.batch_size": args.batch_size}).validate()
    metadata = data_lib.read_metadata(args.data)
    item_attributes = data_lib.load_item_attributes(
        args.data, metadata["num_items"], metadata["num_attributes"]
    )
    data = {
        fixed: data_lib.PretrainData(
            args.data,
            metadata,
            args.batch_size,
            config.model.max_seq_length,
            config.seed,
            fixed_widths=fixed,
        )
        for fixed in (False, True)
    }
    pipeline_first = time_input_pipeline(data[False], 0)  # parses and fills the cache
    pipeline = time_input_pipeline(
        data[False], 0
    )  # from the cache: the per-epoch floor of the input

    rows = []
    for setting in args.settings.split(","):
        rank, jit = setting.split(":")
        rows.append(
            time_setting(
                config,
                metadata,
                item_attributes,
                data[jit == "on"],
                None if rank == "full" else int(rank),
                jit == "on",
                args.epochs,
            )
        )
    default = rows[0]
    report = {
        "machine": machine(),
        "data": {
            "num_pretrain_examples": metadata["num_pretrain_examples"],
            "dupe_factor": metadata["dupe_factor"],
        },
        "batch_size": args.batch_size,
        "batches_per_epoch": pipeline["batches"],
        "padding": {
            "real_positions": pipeline["real_positions"],
            "padded_positions_bucketed": pipeline["padded_positions"],
            "padded_positions_if_50": metadata["num_pretrain_examples"] * 50,
        },
        "input_pipeline_seconds": {
            "first_pass": pipeline_first["seconds"],
            "cached": pipeline["seconds"],
        },
        # The default settings of `python -m s3rec_tf.train --rank 16`.
        "epoch_seconds": default["epoch_seconds"],
        "examples_per_second": default["examples_per_second"],
        "jit_compile": default["jit_compile"],
        "settings": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
    with open(args.report, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
