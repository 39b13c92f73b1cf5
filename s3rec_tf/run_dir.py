"""The contract of a run directory (`--output`): its files, and the rules for reusing it.

`s3rec_tf.schema` is the contract of a data directory; this module is the one of a run directory,
written by `python -m s3rec_tf.train` and read by the export, the sweep and the reports:

  config.json               the resolved Config (`config.save`)
  data_metadata.json        a copy of the data's metadata.json (the data the run started on)
  {pretrain,finetune}/checkpoints/   epoch-end checkpoints of `callbacks.ResumableTraining`
  {pretrain,finetune}/epochs.csv     one row per finished epoch (`callbacks.EpochLog`)
  logs/{pretrain,finetune}/ TensorBoard
  pretrain/encoder          tf.train.Checkpoint(encoder=...) of the pretrained encoder
  pretrain/summary.json     what pretraining cost, written with the pretrained encoder
  final/encoder             tf.train.Checkpoint(encoder=...) of the fine-tuned encoder
  results.json              everything above summed up, written last
  run.lock                  the PID of the process training in the directory, while it runs

A rerun of the same command continues the run (`check_resumable` says what it may change; a
longer pretraining moves the earlier fine-tuning to `finetune-after-{N}-pretrain-epochs/` and
fine-tunes again); a second process is refused while the first holds the lock (`lock`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
from typing import Optional

import tensorflow as tf

from s3rec_tf import callbacks as callbacks_lib
from s3rec_tf import config as config_lib
from s3rec_tf import data_files, jsonfile, lockfile

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
DATA_METADATA_FILE = "data_metadata.json"
RESULTS_FILE = "results.json"
PRETRAINED_ENCODER = "pretrain/encoder"
# Written with the pretrained encoder: what the pretraining cost, readable before fine-tuning ends
# (another run can fine-tune the encoder meanwhile; results.json comes only after fine-tuning).
PRETRAIN_SUMMARY = "pretrain/summary.json"
FINAL_ENCODER = "final/encoder"
EPOCH_LOG = "epochs.csv"  # per phase: one row per finished epoch
LOGS_DIR = "logs"
LOCK_FILE = "run.lock"
PHASES = ("pretrain", "finetune")

# What a rerun may change and still continue the run in its directory: how many epochs each phase
# has (to extend a run, or to run it in chunks), where the data and the run directory are, and how
# the steps execute. Any other change alters what is trained: continuing would splice two
# experiments into one set of checkpoints and one results.json.
RESUMABLE_CHANGES = frozenset(
    {
        "pretrain.epochs",
        "finetune.epochs",
        "finetune.eval_item_chunk",
        "data.data_dir",
        "output_dir",
        "strategy",
        "jit_compile",
    }
)


class RunDirError(config_lib.ConfigError):
    """A run directory that cannot be used as asked; the message names the file and the problem."""


def path(run_dir: str, name: str) -> str:
    """`run_dir`/`name` (posixpath: run directories may be on any TF file system)."""
    return posixpath.join(run_dir, name)


def checkpoint_dir(run_dir: str, phase: str) -> str:
    """Where ResumableTraining keeps a phase's ("pretrain" or "finetune") epoch checkpoints."""
    return posixpath.join(run_dir, phase, "checkpoints")


def epoch_log(run_dir: str, phase: str) -> str:
    return posixpath.join(run_dir, phase, EPOCH_LOG)


def tensorboard_dir(run_dir: str, phase: str) -> str:
    return posixpath.join(run_dir, LOGS_DIR, phase)


def read_json(file: str) -> dict:
    """A JSON object from a run directory; RunDirError names the file when it cannot be read."""
    try:
        values = jsonfile.read(file)
    except json.JSONDecodeError as e:
        raise RunDirError(f"{file}: not valid JSON ({e}).") from e
    if values is None:
        raise RunDirError(f"{file} not found: not a run directory of s3rec_tf.train.")
    if not isinstance(values, dict):
        raise RunDirError(f"{file}: the top level must be an object.")
    return values


def read_config(run_dir: str) -> config_lib.Config:
    """The run's validated Config (keys added since the run started read as their defaults)."""
    file = path(run_dir, CONFIG_FILE)
    read_json(file)  # a clear error for a missing or malformed file
    try:
        return config_lib.load_saved(file).validate()
    except (config_lib.ConfigError, TypeError) as e:
        raise RunDirError(f"{file}: {e}") from e


def read_data_metadata(run_dir: str) -> dict:
    """The metadata of the data the run started on (checked as `data_files.check_metadata` does)."""
    file = path(run_dir, DATA_METADATA_FILE)
    try:
        return data_files.check_metadata(read_json(file), file)
    except data_files.DataError as e:
        raise RunDirError(str(e)) from e


def has_progress(run_dir: str) -> bool:
    return any(tf.train.latest_checkpoint(checkpoint_dir(run_dir, phase)) for phase in PHASES)


def run_status(run_dir: str) -> dict:
    """Where a run directory stands, from its files alone (another process may be training in it).

    {"state": "not started" | "pretraining" | "fine-tuning" | "finished", "pretrain" and
    "finetune": checkpoint progress (see callbacks.checkpoint_progress) with the phase's epoch
    budget, "test": results.json's test metrics once finished}.
    """
    saved_config = path(run_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(saved_config):
        return {"state": "not started"}
    config = config_lib.load_saved(saved_config)
    status = {}
    for phase in PHASES:
        progress = callbacks_lib.checkpoint_progress(checkpoint_dir(run_dir, phase))
        status[phase] = dict(progress, epochs=getattr(config, phase).epochs)
    results = path(run_dir, RESULTS_FILE)
    if tf.io.gfile.exists(results):
        status.update(state="finished", test=read_json(results)["test"])
    elif config.pretrains and not tf.io.gfile.exists(path(run_dir, PRETRAIN_SUMMARY)):
        status["state"] = "pretraining"
    else:
        status["state"] = "fine-tuning"
    return status


def _data_identity(metadata: dict) -> dict:
    # Where the Beam job wrote the data is not what the data is (it may be copied or moved).
    identity = json.loads(json.dumps(metadata))
    identity.get("config", {}).pop("output", None)
    return identity


def check_resumable(run_dir: str, config: config_lib.Config, metadata: dict) -> None:
    """Stops before any work when `run_dir` holds a run started with other settings or data."""
    saved_config = path(run_dir, CONFIG_FILE)
    if not (has_progress(run_dir) and tf.io.gfile.exists(saved_config)):
        return
    differences = config_lib.differences(config_lib.load_saved(saved_config), config)
    problems = [
        f"{key} = {was!r} there, {now!r} now"
        for key, (was, now) in sorted(differences.items())
        if key not in RESUMABLE_CHANGES
    ]
    saved_metadata = path(run_dir, DATA_METADATA_FILE)
    if tf.io.gfile.exists(saved_metadata):
        before = _data_identity(read_json(saved_metadata))
        now = _data_identity(metadata)
        fields = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if fields:
            problems.append(
                f"the data in {config.data.data_dir} is not the data the run started on "
                f"(metadata fields {', '.join(fields)} differ from {saved_metadata})"
            )
    if problems:
        raise RunDirError(
            f"{run_dir} holds a run started with other settings: {'; '.join(problems)}. "
            "Continuing it would mix two experiments. Choose another --output, or rerun with the "
            f"settings in {saved_config}; between invocations only "
            f"{', '.join(sorted(RESUMABLE_CHANGES))} may change."
        )


# What fine-tuning leaves in a run directory: it belongs to the pretrained encoder it started from.
FINETUNING_FILES = (RESULTS_FILE, "finetune", "final", posixpath.join(LOGS_DIR, "finetune"))


def archive_finetuning(run_dir: str, pretrain_epochs: int) -> str:
    """Moves the fine-tuning of a `pretrain_epochs`-epoch encoder aside, into
    `finetune-after-{pretrain_epochs}-pretrain-epochs/` (results.json, finetune/, final/,
    logs_finetune/), so that a longer pretraining is fine-tuned afresh; returns that directory."""
    target = path(run_dir, f"finetune-after-{pretrain_epochs}-pretrain-epochs")
    if tf.io.gfile.exists(target):
        raise RunDirError(f"{target} exists: a fine-tuning of that pretraining is there already.")
    tf.io.gfile.makedirs(target)
    for name in FINETUNING_FILES:
        if tf.io.gfile.exists(path(run_dir, name)):
            tf.io.gfile.rename(path(run_dir, name), path(target, name.replace("/", "_")))
    return target


def pretraining_grows_under_finetuning(run_dir: str, config: config_lib.Config) -> Optional[int]:
    """The epochs of the pretraining that `run_dir`'s fine-tuning started from, when `config`
    pretrains longer than that (the fine-tuning no longer belongs to the run); else None."""
    if not config.pretrains:
        return None
    done = callbacks_lib.checkpoint_progress(checkpoint_dir(run_dir, "pretrain"))["epochs_done"]
    started = any(tf.io.gfile.exists(path(run_dir, name)) for name in FINETUNING_FILES)
    return done if started and 0 < done < config.pretrain.epochs else None


def start(run_dir: str, config: config_lib.Config, metadata: dict) -> None:
    """Checks that the run may continue in `run_dir` (`check_resumable`), moves aside a
    fine-tuning whose pretraining is to be extended (`archive_finetuning`), then records the
    config and the data it runs with (config.json, data_metadata.json)."""
    check_resumable(run_dir, config, metadata)
    pretrained = pretraining_grows_under_finetuning(run_dir, config)
    if pretrained is not None:
        moved = archive_finetuning(run_dir, pretrained)
        logger.warning(
            "Pretraining continues from %d to %d epochs: the fine-tuning of the %d-epoch encoder "
            "moved to %s; fine-tuning starts again once pretraining ends.",
            pretrained,
            config.pretrain.epochs,
            pretrained,
            moved,
        )
    config_lib.save(config, path(run_dir, CONFIG_FILE))
    jsonfile.write(path(run_dir, DATA_METADATA_FILE), metadata)


# ------------------------------------------------------------------------------------ the lock


@contextlib.contextmanager
def lock(run_dir: str):
    """Holds `run_dir` for this process (`s3rec_tf.lockfile`): a second process is refused at
    once, naming the first; a lock whose process no longer runs is taken over, so a killed run
    resumes. Run directories on remote file systems (gs://, ...) are not locked.
    """
    if "://" in run_dir:
        logger.warning("%s is not on a local file system: it is not locked.", run_dir)
        yield
        return
    with lockfile.hold(run_dir, LOCK_FILE, RunDirError):
        yield
