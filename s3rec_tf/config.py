"""Configuration: nested dataclasses, YAML presets (`configs/`), validation with clear
messages.

Only `s3rec_tf.train.main()` applies command-line overrides; everything else receives a finished,
validated `Config` and never mutates it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

import yaml

from s3rec_tf import jsonfile

# The YAML presets: the package data s3rec_tf/configs/ of a regular install (setup.py ships the
# repository's top-level configs/ there); else, in a checkout or an editable install, configs/
# beside the package.
CONFIG_DIR = next(
    (
        d
        for d in (os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs"),)
        if os.path.isdir(d)
    ),
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs"),
)

# How the command line spells rank None, the full d x d bilinear form of AAP / MAP (`parse_rank`).
FULL_RANK = "full"
LOSS_NORMALIZERS = ("dataset", "batch")
STRATEGIES = ("default", "mirrored", "multi_worker")
PRECISIONS = ("off", "mixed_float16", "mixed_bfloat16")


class ConfigError(ValueError):
    """A configuration that cannot work; the message names the field and the problem."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    # Output directory of `beam_pipelines.preprocess`. None: the bundled sample, preprocessed on
    # first use.
    data_dir: Optional[str] = None
    # Examples per shuffle buffer; sequences are small, so a large buffer is cheap.
    shuffle_buffer: int = 10_000


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.5
    attention_dropout: float = 0.5
    initializer_range: float = 0.02
    max_seq_length: int = 50
    # Rank of the AAP bilinear form: None = full d x d matrix (the reference).
    aap_rank: Optional[int] = None
    # Rank of the MAP head; "aap" = the same as aap_rank.
    map_rank: Any = "aap"

    @property
    def resolved_map_rank(self) -> Optional[int]:
        return self.aap_rank if self.map_rank == "aap" else self.map_rank


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    epochs: int = 150
    batch_size: int = 100
    learning_rate: float = 1e-3
    # Our specification's weights; the reference_weights preset has the reference code's.
    aap_weight: float = 1.0
    mip_weight: float = 0.2
    map_weight: float = 1.0
    sp_weight: float = 0.5


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 200
    batch_size: int = 256
    learning_rate: float = 1e-3
    # A name registered in s3rec_tf/losses.py: bce (the reference) | gbce | ce (full softmax) |
    # sampled_softmax.
    loss: str = "bce"
    num_negatives: int = 1  # negatives per position drawn by the input pipeline (bce/gbce)
    gbce_t: float = 0.75  # gBCE calibration parameter t (gSASRec)
    num_samples: int = 256  # sampled_softmax: negatives shared by a batch, drawn every step
    sampler: str = "uniform"  # sampled_softmax's proposal: uniform | popularity (logQ-corrected)
    in_batch_negatives: bool = False  # sampled_softmax: also k of the batch's targets (mixed)
    # What a batch's loss sum is divided by. "dataset" (the reference's objective): the expected
    # number of target positions in a batch (batch size x the training users' mean), so every
    # target position weighs the same, as in the reference's randomly composed batches. "batch":
    # the batch's own number of target positions; with length-bucketed batches that gives every
    # batch the same weight, i.e. the positions of short histories far more than long ones.
    loss_normalizer: str = "dataset"
    patience: int = 10
    monitor: str = "sampled_mrr"  # validation metric for early stopping (higher is better)
    # Full-ranking protocol: leave the user's history items out of the ranking (RecBole's default
    # and what the reference's full-sort evaluation approximates by zeroing their scores).
    exclude_history: bool = True
    # Also evaluate with the history items' scores set to 0 (BSARec's and WEARec's protocol),
    # reported as "full_history_zero", for comparison with their published numbers.
    history_zero_metrics: bool = False
    # Full-ranking evaluation scores the catalogue this many items at a time, so that its memory
    # is [batch, eval_item_chunk] whatever the catalogue (the ranks are the same for any value).
    eval_item_chunk: int = 65536
    # Validate (early stopping, the kept epoch, the reported valid metrics) on this many users
    # drawn from the seed; 0: all. On a large catalogue a full-ranking pass over every user each
    # epoch can cost more than the epoch itself; the test split is always evaluated in full.
    valid_users: int = 0


@dataclasses.dataclass(frozen=True)
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    pretrain: PretrainConfig = dataclasses.field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    seed: int = 42
    output_dir: str = "runs/default"
    strategy: str = "default"  # default | mirrored | multi_worker
    jit_compile: bool = False
    # Keras dtype policy of the models: off (float32) | mixed_float16 | mixed_bfloat16. A run
    # directory written before this field existed reads it as "off", which is what it used.
    mixed_precision: str = "off"
    no_pretrain: bool = False
    init_from: Optional[str] = None  # a checkpoint or the reference .npz

    @property
    def pretrains(self) -> bool:
        """Whether the run has a pretraining phase (not SASRec, no encoder given to start from)."""
        return not self.no_pretrain and self.init_from is None and self.pretrain.epochs > 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, **overrides: Any) -> Config:
        """A copy with dotted overrides applied, e.g. replace(**{"model.aap_rank": 16})."""
        return from_dict(_merge(self.to_dict(), _undot(overrides)))

    def validate(self) -> Config:
        model = self.model
        _require(model.hidden_size > 0, "model.hidden_size", model.hidden_size, "must be positive")
        _require(model.num_heads > 0, "model.num_heads", model.num_heads, "must be positive")
        _require(
            model.hidden_size % model.num_heads == 0,
            "model.hidden_size",
            model.hidden_size,
            f"must be divisible by model.num_heads ({model.num_heads})",
        )
        _require(model.num_layers > 0, "model.num_layers", model.num_layers, "must be positive")
        _require(0 <= model.dropout < 1, "model.dropout", model.dropout, "must be in [0, 1)")
        _require(
            0 <= model.attention_dropout < 1,
            "model.attention_dropout",
            model.attention_dropout,
            "must be in [0, 1)",
        )
        _require(
            model.max_seq_length > 0,
            "model.max_seq_length",
            model.max_seq_length,
            "must be positive",
        )
        # The one check of a rank's range, whichever way it came (a preset, --rank, a sweep).
        for name, rank in (
            ("model.aap_rank", model.aap_rank),
            ("model.map_rank", model.resolved_map_rank),
        ):
            if rank is not None:
                _require(
                    isinstance(rank, int) and 0 < rank <= model.hidden_size,
                    name,
                    rank,
                    f"must be None (full rank, '{FULL_RANK}' on the command line) or an integer in "
                    f"1..hidden_size ({model.hidden_size})",
                )
        for name in ("pretrain", "finetune"):
            phase = getattr(self, name)
            _require(
                phase.batch_size > 0, f"{name}.batch_size", phase.batch_size, "must be positive"
            )
            _require(phase.epochs >= 0, f"{name}.epochs", phase.epochs, "must be >= 0")
            _require(
                phase.learning_rate > 0,
                f"{name}.learning_rate",
                phase.learning_rate,
                "must be positive",
            )
        finetune = self.finetune
        from s3rec_tf import losses  # the registry (TensorFlow): config.py itself stays light

        loss_names = losses.names()
        _require(finetune.loss in loss_names, "finetune.loss", finetune.loss, _one_of(loss_names))
        _require(
            finetune.eval_item_chunk > 0,
            "finetune.eval_item_chunk",
            finetune.eval_item_chunk,
            "must be positive",
        )
        _require(
            finetune.valid_users >= 0,
            "finetune.valid_users",
            finetune.valid_users,
            "must be 0 (every user) or positive",
        )
        _require(
            finetune.num_samples > 0,
            "finetune.num_samples",
            finetune.num_samples,
            "must be positive",
        )
        from s3rec_tf import metric_names

        protocols = ("sampled", "full") + (
            ("full_history_zero",) if finetune.history_zero_metrics else ()
        )
        monitors = metric_names.names(protocols)
        _require(
            finetune.monitor in monitors,
            "finetune.monitor",
            finetune.monitor,
            "must be a validation metric: " + ", ".join(monitors),
        )
        _require(
            finetune.sampler in losses.SAMPLERS,
            "finetune.sampler",
            finetune.sampler,
            _one_of(losses.SAMPLERS),
        )
        _require(
            finetune.num_negatives > 0,
            "finetune.num_negatives",
            finetune.num_negatives,
            "must be positive",
        )
        _require(
            finetune.loss_normalizer in LOSS_NORMALIZERS,
            "finetune.loss_normalizer",
            finetune.loss_normalizer,
            _one_of(LOSS_NORMALIZERS),
        )
        _require(self.strategy in STRATEGIES, "strategy", self.strategy, _one_of(STRATEGIES))
        _require(
            self.mixed_precision in PRECISIONS,
            "mixed_precision",
            self.mixed_precision,
            _one_of(PRECISIONS),
        )
        return self


def parse_rank(text: str, flag: str = "--rank") -> Optional[int]:
    """An AAP / MAP rank as the command line spells it -> the config's `model.aap_rank` /
    `map_rank`: "16" -> 16, "full" -> None (the full d x d matrix). The range against
    model.hidden_size is checked by `Config.validate`, with the rest of the model."""
    if text == FULL_RANK:
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{flag} must be an integer or '{FULL_RANK}', not {text!r}.") from None


def _one_of(choices) -> str:
    return f"must be {', '.join(choices[:-1])} or {choices[-1]}"


def _require(ok: bool, field: str, value: Any, problem: str) -> None:
    if not ok:
        raise ConfigError(f"Invalid configuration: {field} = {value!r} {problem}.")


def _undot(flat: dict) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
}


def from_dict(values: dict, source: str = "config") -> Config:
    """Builds a Config, refusing unknown keys (a typo must not be silently ignored)."""
    top_fields = {f.name for f in dataclasses.fields(Config)}
    unknown = set(values) - top_fields
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {sorted(unknown)}; known: {sorted(top_fields)}."
        )
    kwargs: dict = {}
    for key, value in values.items():
        if key in _SECTIONS:
            cls = _SECTIONS[key]
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: section {key!r} must be a mapping, got {value!r}.")
            known = {f.name for f in dataclasses.fields(cls)}
            bad = set(value) - known
            if bad:
                raise ConfigError(
                    f"{source}: unknown key(s) {sorted(bad)} in section {key!r}; known: "
                    f"{sorted(known)}."
                )
            kwargs[key] = cls(**value)
        else:
            kwargs[key] = value
    return Config(**kwargs)


def load(path_or_name: Optional[str] = None) -> Config:
    """Loads a YAML preset (a path, or a name in configs/) over the defaults."""
    if path_or_name is None:
        return Config()
    path = path_or_name
    if not os.path.exists(path):
        candidate = os.path.join(CONFIG_DIR, path if path.endswith(".yaml") else path + ".yaml")
        if not os.path.exists(candidate):
            raise ConfigError(
                f"Config file {path_or_name!r} not found (also looked in {CONFIG_DIR})."
            )
        path = candidate
    with open(path) as f:
        try:
            values = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping.")
    return from_dict(_merge(Config().to_dict(), values), source=path)


def load_saved(path: str) -> Config:
    """Reads a config written by `save` (a run's config.json), missing keys at their defaults."""
    try:
        values = jsonfile.read(path)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from e
    if values is None:
        raise ConfigError(f"{path} not found.")
    return from_dict(_merge(Config().to_dict(), values), source=path)


def differences(a: Config, b: Config) -> dict:
    """{"model.aap_rank": (value in a, value in b), ...} for every field where they differ."""
    flat_a, flat_b = flatten(a.to_dict()), flatten(b.to_dict())
    return {key: (flat_a[key], flat_b[key]) for key in flat_a if flat_a[key] != flat_b[key]}


def flatten(nested: dict, prefix: str = "") -> dict:
    """{"model": {"hidden_size": 64}} -> {"model.hidden_size": 64}."""
    flat = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


# Fields added after run directories existed, with the value every earlier run had: written to
# config.json only when they differ from it, so that a run directory of default settings stays
# readable by code from before the field (which refuses unknown keys).
_WRITTEN_WHEN_SET = {
    "mixed_precision": "off",
    "finetune.num_samples": 256,
    "finetune.sampler": "uniform",
    "finetune.in_batch_negatives": False,
    "finetune.history_zero_metrics": False,
    "finetune.eval_item_chunk": 65536,
    "finetune.valid_users": 0,
}


def save(config: Config, path: str) -> None:
    """Writes the resolved config as JSON (beside checkpoints, so a run can be reproduced)."""

    values = config.to_dict()
    for key, default in _WRITTEN_WHEN_SET.items():
        *parents, name = key.split(".")
        section = values
        for parent in parents:
            section = section[parent]
        if section[name] == default:
            del section[name]
    jsonfile.write(path, values)
