"""What the benchmarks share: the machine they ran on, and pretraining checkpoints named on the
command line."""

import argparse
import json
import os
import sys

import tensorflow as tf

from s3rec_tf import builders
from s3rec_tf import config as config_lib
from s3rec_tf.study import sweep


def machine() -> str:
    """CPU model, core count and OS (as sweep.json records them), with the load average, e.g.
    for a report's `machine` field."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{sweep.machine()} (load average {load} at the end)"


def named_checkpoints(parser: argparse.ArgumentParser, specs: list[str]) -> list[tuple[str, str]]:
    """`NAME=RUN_DIR/pretrain/checkpoints/ckpt-N` arguments -> [(name, checkpoint prefix)];
    stops with the parser's error for a malformed one or a checkpoint that does not exist."""
    named = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not tf.io.gfile.glob(path + ".index"):
            parser.error(
                f"--checkpoint {spec!r}: expected NAME=RUN_DIR/pretrain/checkpoints/ckpt-N of an "
                "existing checkpoint"
            )
        named.append((name, path))
    return named


def run_config(checkpoint: str) -> config_lib.Config:
    """The config.json of the run that wrote RUN_DIR/pretrain/checkpoints/ckpt-N."""
    run_dir = os.path.dirname(os.path.dirname(os.path.dirname(checkpoint)))
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        sys.exit(
            f"error: {checkpoint} is not under RUN_DIR/pretrain/checkpoints ({path} is missing)."
        )
    return config_lib.load(path)


def checkpoint_epochs(checkpoint: str) -> int:
    """Epochs done when the checkpoint was written (the training checkpoint's `epoch`)."""
    return int(tf.train.load_variable(checkpoint, "epoch/.ATTRIBUTES/VARIABLE_VALUE"))


def pretrainer_at(checkpoint: str, data_dir: str, metadata: dict, item_attributes):
    """(config, model): the run's config with `data_dir`, and its pretraining model, built and
    holding the checkpoint's weights."""
    config = run_config(checkpoint).replace(**{"data.data_dir": data_dir})
    model = builders.pretrainer_from_config(
        config, metadata["num_items"], metadata["num_attributes"], item_attributes
    )
    model.build()
    tf.train.Checkpoint(model=model).read(
        checkpoint
    ).assert_existing_objects_matched().expect_partial()
    return config, model


def write_report(report: dict, path: str, markdown: str) -> None:
    """The report as JSON at `path` and its markdown beside it (same name, .md); prints the
    markdown."""
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.splitext(path)[0] + ".md", "w") as f:
        f.write(markdown)
    print(markdown)
