"""The contract between the Beam job that writes the data and the tf.data code that reads it.

Everything both sides must agree on lives here once: the format version, the layout of the output
directory, the TFRecord feature names and their parsing specs, and the id conventions.

Id conventions (the same as the S3-Rec reference implementation):
  * items: 0 = padding, 1..N = items, N + 1 = the mask id; the item table has N + 2 rows;
  * attributes: 0 is unused, 1..M = attributes; the attribute table has M + 1 rows;
  * users: 1..U.
Sequences are stored unpadded, oldest item first. Readers pad them (on the left) per batch.

Importing this module does not import TensorFlow: the Beam workers read the names and file layout
from here without loading it. The tf.io parsing specs (`PRETRAIN_FEATURES`, `TRAIN_FEATURES`,
`EVAL_FEATURES`, `split_features`) import TensorFlow when first used.
"""

import posixpath

# Bump when the meaning or layout of anything below changes; `s3rec_tf.train` refuses data from
# another version instead of training on it silently.
FORMAT_VERSION = 1

PAD_ID = 0

# ---------------------------------------------------------------------------------------------
# Output directory layout (relative to the job's --output; joined with posixpath so that the
# same names work on every Beam/TF file system, gs:// included).
# ---------------------------------------------------------------------------------------------
METADATA_FILE = "metadata.json"
SEQUENCES_FILE = "sequences.txt"  # S3-Rec format with project ids: "user item item ..."
ITEM2ATTRIBUTES_FILE = "item2attributes.json"  # S3-Rec format: {"item id": [attribute ids]}
VOCAB_DIR = "vocab"
ITEM_VOCAB = "vocab/items.txt"  # line k (1-based) = raw id of item k
USER_VOCAB = "vocab/users.txt"  # line k (1-based) = raw id of user k
ATTRIBUTE_VOCAB = "vocab/attributes.txt"  # line k (1-based) = raw name of attribute k
DEAD_LETTER_PREFIX = "dead_letter/records"  # JSON lines: {"file", "line", "reason", "record"}
PRETRAIN_DIR = "pretrain"
SPLITS = ("train", "valid", "test")
TFRECORD_SUFFIX = ".tfrecord"


def pretrain_prefix(duplicate: int) -> str:
    """Shard prefix of pretraining duplicate `duplicate` (each duplicate has its own masks)."""
    return posixpath.join(PRETRAIN_DIR, f"dupe-{duplicate:05d}", "part")


def split_prefix(split: str) -> str:
    """Shard prefix of a leave-one-out split: 'train', 'valid' or 'test'."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")
    return posixpath.join(split, "part")


def shard_glob(data_dir: str, prefix: str) -> str:
    """File pattern matching every shard written under `prefix`."""
    return posixpath.join(data_dir, prefix) + "-*" + TFRECORD_SUFFIX


# ---------------------------------------------------------------------------------------------
# Pretraining examples: one tf.train.Example per (user, prefix, duplicate).
# All six sequences have the same length L (1 <= L <= max_seq_length).
# ---------------------------------------------------------------------------------------------
USER = "user"
MASKED_ITEM_SEQUENCE = "masked_item_sequence"  # items, some replaced by the mask id
POS_ITEMS = "pos_items"  # the original items
NEG_ITEMS = "neg_items"  # a negative item at masked positions, the item itself elsewhere
MASKED_SEGMENT_SEQUENCE = "masked_segment_sequence"  # the items with one segment masked
POS_SEGMENT = "pos_segment"  # the masked segment in place, mask id elsewhere
NEG_SEGMENT = "neg_segment"  # a segment of the same length from another place, mask id elsewhere

PRETRAIN_SEQUENCES = (
    MASKED_ITEM_SEQUENCE,
    POS_ITEMS,
    NEG_ITEMS,
    MASKED_SEGMENT_SEQUENCE,
    POS_SEGMENT,
    NEG_SEGMENT,
)


# ---------------------------------------------------------------------------------------------
# Leave-one-out split examples: one tf.train.Example per user and split.
#   train: HISTORY = items[:-2] (the model reads input HISTORY[:-1], targets HISTORY[1:]);
#          HELDOUT = [items[-2], items[-1]] so that sampled training negatives avoid them too.
#   valid: HISTORY = items[:-2], TARGET = items[-2], NEGATIVES = the user's sampled negatives.
#   test:  HISTORY = items[:-1], TARGET = items[-1], NEGATIVES = the same sampled negatives.
# ---------------------------------------------------------------------------------------------
HISTORY = "history"
HELDOUT = "heldout"
TARGET = "target"
NEGATIVES = "negatives"


def _feature_specs() -> dict:
    """{spec name: {feature name: tf.io feature}}, built on first use (the only TensorFlow here)."""
    import tensorflow as tf

    def spec(fixed: dict, ragged: tuple) -> dict:
        """fixed: {name: shape}; ragged: names of variable-length int64 lists."""
        return {
            **{name: tf.io.FixedLenFeature(shape, tf.int64) for name, shape in fixed.items()},
            **{name: tf.io.RaggedFeature(tf.int64) for name in ragged},
        }

    return {
        "PRETRAIN_FEATURES": spec({USER: []}, PRETRAIN_SEQUENCES),
        "TRAIN_FEATURES": spec({USER: [], HELDOUT: [2]}, (HISTORY,)),
        "EVAL_FEATURES": spec({USER: [], TARGET: []}, (HISTORY, NEGATIVES)),
    }


_SPECS: dict = {}


def __getattr__(name: str):
    """`schema.PRETRAIN_FEATURES`, `TRAIN_FEATURES`, `EVAL_FEATURES`: the parsing specs (PEP 562),
    so that they import TensorFlow only when read."""
    if name in ("PRETRAIN_FEATURES", "TRAIN_FEATURES", "EVAL_FEATURES"):
        if not _SPECS:
            _SPECS.update(_feature_specs())
        return _SPECS[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def split_features(split: str) -> dict:
    """Parsing spec of a leave-one-out split: {feature name: tf.io feature}."""
    return __getattr__("TRAIN_FEATURES" if split == "train" else "EVAL_FEATURES")


# Keys that metadata.json always holds (the Beam job writes them, readers check them).
METADATA_KEYS = (
    "format_version",
    "num_users",
    "num_items",
    "num_attributes",
    "num_interactions",
    "num_pretrain_examples",  # per duplicate
    "dupe_factor",
    "max_seq_length",
    "mask_id",
    "num_negatives",
    "num_bad_records",  # {kind: count}
    "config",  # the job's full resolved options
)
