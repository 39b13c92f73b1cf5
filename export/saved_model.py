"""Exports a trained run directory as a SavedModel for serving (TensorFlow Serving or plain TF).

    python -m export.saved_model --run_dir RUN --output DIR [--k 10] \
        [--index brute_force|scann] [--keep_history_items] [--data_dir DATA] [--overwrite]

or `python -m s3rec_tf.train ... --export DIR`, which calls `export_run` at the end of training.

What is read (the run directory's contract is `s3rec_tf.run_dir`):
  RUN/config.json          the resolved Config (model shape, data.data_dir)
  RUN/data_metadata.json   the data's metadata (num_items; format version checked)
  RUN/final/encoder        tf.train.Checkpoint(encoder=S3RecEncoder), the fine-tuned encoder
  DATA/vocab/items.txt     line k = raw id of item k (DATA = --data_dir or config.data.data_dir)
  DATA/train/part-*.tfrecord   item popularity = how often each item occurs in the training
                           histories (schema.TRAIN_FEATURES "history"; no valid/test targets)

What is written (DIR):
  saved_model.pb, variables/   the encoder, the popularity, the top-k index (export/serving.py)
  assets/items.txt             the vocabulary (raw id <-> item id tables are built from it)
  assets.extra/export.json     how the export was made (k, index, exclusion, sources)

Signatures, for any batch of histories of raw item ids (oldest first, right-padded with ""):
  serving_default: history (string [batch, None]) -> item_ids (string [batch, k]),
                   scores (float32 [batch, k])
  user_embedding:  history (string [batch, None]) -> embedding (float32 [batch, hidden])
Unknown ids are dropped; an empty or all-unknown history gets the k most popular items; only the
last max_seq_length known items reach the encoder; items of the history are not recommended
unless the export used --keep_history_items. See export/serving.py for the exact rules.

Loading:
  BruteForce (default): `tf.saved_model.load(DIR)` in any process with TensorFlow; no project code
  and no TensorFlow Recommenders needed. TensorFlow Serving serves DIR as it is.
  ScaNN (--index scann, needs `pip install 's3rec-tf[scann]'` to export): the SavedModel uses
  ScaNN's custom ops, so a loading process must register them first:
      import scann  # noqa: F401  (registers the Scann>* TensorFlow ops)
      model = tf.saved_model.load(DIR)
  TensorFlow Serving needs a build with the ScaNN ops (e.g. the google/tf-serving-scann image).
"""

import argparse
import logging
import posixpath
import sys
from collections.abc import Mapping
from typing import Optional

import tensorflow as tf

from export import serving
from keras_models import S3RecEncoder
from s3rec_tf import builders, data_files, jsonfile, schema
from s3rec_tf import config as config_lib
from s3rec_tf import run_dir as run_dir_lib

logger = logging.getLogger(__name__)

EXPORT_INFO_FILE = "assets.extra/export.json"


class ExportError(ValueError):
    """A run or data directory that cannot be exported; the message names the file and problem."""


def export_run(
    run_dir: str,
    output_dir: str,
    k: int = 10,
    index: str = "brute_force",
    exclude_history: bool = True,
    data_dir: Optional[str] = None,
    scann_options: Optional[Mapping] = None,
    overwrite: bool = False,
) -> str:
    """Exports the final encoder of `run_dir` as a SavedModel in `output_dir`; returns output_dir.

    Args:
      run_dir: a run directory written by `s3rec_tf.train`.
      output_dir: where the SavedModel goes; must be empty or absent unless `overwrite`.
      k: recommendations per request.
      index: "brute_force" (exact) or "scann" (approximate; needs the `scann` extra).
      exclude_history: leave the request's history items out of the recommendations.
      data_dir: the preprocessed data (vocabulary, training split); default: the run's
        config.data.data_dir.
      scann_options: overrides of `serving.default_scann_options` for index="scann".
      overwrite: replace an earlier export in output_dir (a directory with saved_model.pb).

    Raises:
      ExportError: a missing or inconsistent run/data file (the message names it).
      ImportError: index="scann" without ScaNN installed.
    """
    if index not in serving.INDEX_TYPES:
        raise ExportError(f"index must be one of {serving.INDEX_TYPES}, got {index!r}.")
    if index == "scann" and not serving.scann_available():
        raise ImportError(
            "--index scann needs ScaNN's TensorFlow ops: pip install 's3rec-tf[scann]' "
            "(scann[tf]==1.4.2), or export with --index brute_force."
        )
    check_output_dir(output_dir, overwrite)

    try:
        config = run_dir_lib.read_config(run_dir)
        metadata = run_dir_lib.read_data_metadata(run_dir)
    except run_dir_lib.RunDirError as e:
        raise ExportError(str(e)) from e
    num_items = int(metadata["num_items"])
    data_dir = data_dir or config.data.data_dir
    if not data_dir:
        config_file = run_dir_lib.path(run_dir, run_dir_lib.CONFIG_FILE)
        raise ExportError(
            f"{config_file}: data.data_dir is null; pass the data directory the run was trained "
            "on (--data_dir)."
        )
    vocab_file = posixpath.join(data_dir, schema.ITEM_VOCAB)
    check_vocabulary(vocab_file, num_items)
    try:
        popularity = data_files.item_popularity(data_dir, num_items)
    except (data_files.DataError, tf.errors.OpError) as e:
        raise ExportError(
            f"Cannot count item popularity in the training split of {data_dir}: {e}"
        ) from e

    encoder = restore_encoder(run_dir, config, num_items)
    if tf.io.gfile.exists(output_dir) and tf.io.gfile.listdir(output_dir):
        # An earlier export (check_output_dir): no stale file of it may survive in the new one.
        tf.io.gfile.rmtree(output_dir)
    module = serving.S3RecServingModule(
        encoder,
        vocab_file,
        popularity,
        k=k,
        index=index,
        exclude_history=exclude_history,
        scann_options=scann_options,
    )
    serving.save_serving_module(module, output_dir)
    info = {
        "k": module.k,
        "index": index,
        "exclude_history": module.exclude_history,
        "num_items": num_items,
        "hidden_size": module.hidden_size,
        "max_seq_length": module.max_seq_length,
        "scann_options": dict(module.index_options) if index == "scann" else None,
        "run_dir": run_dir,
        "data_dir": data_dir,
        "popularity": "occurrences in the training histories (train split)",
        "signatures": {
            serving.SERVING_SIGNATURE: {
                "inputs": {serving.HISTORY_KEY: "string [batch, None]"},
                "outputs": {
                    serving.ITEM_IDS_KEY: f"string [batch, {module.k}]",
                    serving.SCORES_KEY: f"float32 [batch, {module.k}]",
                },
            },
            serving.EMBEDDING_SIGNATURE: {
                "inputs": {serving.HISTORY_KEY: "string [batch, None]"},
                "outputs": {serving.EMBEDDING_KEY: f"float32 [batch, {module.hidden_size}]"},
            },
        },
    }
    info_path = posixpath.join(output_dir, EXPORT_INFO_FILE)
    tf.io.gfile.makedirs(posixpath.dirname(info_path))
    jsonfile.write(info_path, info, end="\n")
    logger.info(
        "Exported %s (%s index, k=%d, %s history items) to %s",
        run_dir,
        index,
        module.k,
        "excluding" if module.exclude_history else "keeping",
        output_dir,
    )
    return output_dir


def check_output_dir(output_dir: str, overwrite: bool = False) -> None:
    """Fails unless `output_dir` is absent, empty, or (with `overwrite`) a SavedModel directory.

    Cheap, so a caller (s3rec_tf.train --export) can check before hours of training.
    """
    if not tf.io.gfile.exists(output_dir) or not tf.io.gfile.listdir(output_dir):
        return
    if not overwrite:
        raise ExportError(
            f"{output_dir} exists and is not empty; pass overwrite=True (--overwrite)."
        )
    if not tf.io.gfile.exists(posixpath.join(output_dir, "saved_model.pb")):
        # Never delete a directory that is not an earlier export.
        raise ExportError(f"{output_dir} is not empty and holds no saved_model.pb: not replaced.")


def restore_encoder(run_dir: str, config: config_lib.Config, num_items: int) -> S3RecEncoder:
    """The run's final encoder, built from its config and restored from `final/encoder`."""
    prefix = run_dir_lib.path(run_dir, run_dir_lib.FINAL_ENCODER)
    if not tf.io.gfile.exists(prefix + ".index"):
        raise ExportError(
            f"No encoder checkpoint at {prefix} ({prefix}.index is missing): the run did not "
            "finish fine-tuning, or this is not a run directory of s3rec_tf.train."
        )
    model = config.model
    encoder = builders.encoder_from_config(model, num_items)  # the same as training builds
    encoder.build(None)
    try:
        # Every checkpointed value must land in a variable and every variable must get one: a
        # config that does not match the checkpoint fails here instead of serving random weights.
        tf.train.Checkpoint(encoder=encoder).read(prefix).assert_consumed()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise ExportError(
            f"{prefix} does not match the encoder described by "
            f"{run_dir_lib.path(run_dir, run_dir_lib.CONFIG_FILE)} (num_items={num_items}, "
            f"model={model}): {e}"
        ) from e
    return encoder


def check_vocabulary(path: str, num_items: int) -> None:
    """Fails unless `path` has exactly num_items distinct, non-empty lines (line k = item k)."""
    if not tf.io.gfile.exists(path):
        raise ExportError(f"Item vocabulary {path} not found.")
    with tf.io.gfile.GFile(path, "rb") as f:
        content = f.read()
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ExportError(f"{path}: not UTF-8 ({e}).") from e
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline
    first_line: dict = {}
    for number, raw_id in enumerate(lines, start=1):
        if raw_id == "" or "\r" in raw_id:
            raise ExportError(
                f"{path}, line {number}: {'empty' if raw_id == '' else 'carriage return in'} item "
                "id (one raw id per line, '\\n' line ends)."
            )
        if raw_id in first_line:
            raise ExportError(
                f"{path}, line {number}: item id {raw_id!r} repeats line {first_line[raw_id]}."
            )
        first_line[raw_id] = number
    if len(lines) != num_items:
        raise ExportError(
            f"{path} has {len(lines)} item ids but the run's data has num_items = {num_items}."
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export.saved_model",
        description="Export a trained S3Rec-TF run as a SavedModel: raw item ids in, top-k out.",
    )
    p.add_argument("--run_dir", required=True, help="run directory written by s3rec_tf.train")
    p.add_argument("--output", required=True, help="SavedModel directory to write")
    p.add_argument("--k", type=int, default=10, help="recommendations per request (default 10)")
    p.add_argument(
        "--index",
        choices=serving.INDEX_TYPES,
        default="brute_force",
        help="top-k index: exact brute_force (default) or approximate scann (the scann extra)",
    )
    p.add_argument(
        "--keep_history_items",
        action="store_true",
        help="allow items of the request's history in the recommendations (default: left out)",
    )
    p.add_argument("--data_dir", help="preprocessed data dir (default: the run's data.data_dir)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --output")
    p.add_argument("--scann_num_leaves", type=int, help="ScaNN partitions (default ~sqrt(items))")
    p.add_argument(
        "--scann_leaves_to_search", type=int, help="ScaNN partitions searched (default 40%%)"
    )
    p.add_argument(
        "--scann_reorder", type=int, help="ScaNN candidates re-scored exactly (default 500)"
    )
    return p


def main(argv: Optional[list[str]] = None) -> str:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    scann_options = {
        name: value
        for name, value in (
            ("num_leaves", args.scann_num_leaves),
            ("num_leaves_to_search", args.scann_leaves_to_search),
            ("num_reordering_candidates", args.scann_reorder),
        )
        if value is not None
    }
    if scann_options and args.index != "scann":
        sys.exit("error: --scann_* options need --index scann.")
    try:
        return export_run(
            args.run_dir,
            args.output,
            k=args.k,
            index=args.index,
            exclude_history=not args.keep_history_items,
            data_dir=args.data_dir,
            scann_options=scann_options or None,
            overwrite=args.overwrite,
        )
    except (ExportError, ImportError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
