"""The preprocessing job's options (`PreprocessConfig`, whose defaults are the command line's) and
its pre-flight checks: inputs that exist and can be read, and removing an earlier run's outputs.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Sequence
from typing import Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

# The input formats of --input_format. "auto": the S3-Rec format for --sequences, else Amazon
# files whose format (2014/2018 or 2023) is recognized per line from its fields.
INPUT_FORMATS = ("auto", "amazon", "amazon2023", "s3rec")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """The job's options (see `beam_pipelines.preprocess` for their command-line help)."""

    output: str
    reviews: tuple[str, ...] = ()
    metadata: tuple[str, ...] = ()
    sequences: tuple[str, ...] = ()
    item2attributes: tuple[str, ...] = ()
    input_format: str = "auto"
    max_seq_length: int = 50
    mask_prob: float = 0.2
    dupe_factor: int = 1
    num_negatives: int = 99
    seed: int = 42
    user_core: int = 5
    item_core: int = 5
    kcore_max_rounds: int = 20
    min_rating: Optional[float] = None
    attribute_min_count: int = 1
    # 0: grow with the data, max(4, ceil(users / users_per_shard)).
    num_shards: int = 0
    users_per_shard: int = 100_000

    @property
    def resolved_format(self) -> str:
        """'amazon' (raw 2014/2018 reviews and metadata, 2023 lines recognized by their fields),
        'amazon2023' (forced) or 's3rec' (the benchmark format, ids kept)."""
        if self.input_format != "auto":
            return self.input_format
        return "s3rec" if self.sequences else "amazon"

    @property
    def keep_raw_ids(self) -> bool:
        return self.resolved_format == "s3rec"

    def validate(self) -> PreprocessConfig:
        """Returns self, or raises ValueError naming the option and the problem."""
        amazon = bool(self.reviews or self.metadata)
        s3rec = bool(self.sequences or self.item2attributes)
        if amazon == s3rec:
            raise ValueError(
                "Give either --reviews and --metadata (Amazon files) or --sequences and "
                "--item2attributes (S3-Rec format), not both and not neither."
            )
        if amazon and not (self.reviews and self.metadata):
            raise ValueError("--reviews and --metadata must be given together.")
        if s3rec and not (self.sequences and self.item2attributes):
            raise ValueError("--sequences and --item2attributes must be given together.")
        if s3rec and self.min_rating is not None:
            raise ValueError("--min_rating needs ratings; the S3-Rec format has none.")
        if self.input_format not in INPUT_FORMATS:
            raise ValueError(
                f"--input_format={self.input_format!r} must be one of {', '.join(INPUT_FORMATS)}."
            )
        if (self.input_format == "s3rec") != s3rec and self.input_format != "auto":
            raise ValueError(
                f"--input_format={self.input_format} does not match the inputs "
                "(--sequences/--item2attributes are the s3rec format, "
                "--reviews/--metadata the amazon ones)."
            )
        if not self.output:
            raise ValueError("--output must name a directory.")
        checks = (
            ("max_seq_length", self.max_seq_length >= 1, "must be >= 1"),
            ("mask_prob", 0.0 <= self.mask_prob <= 1.0, "must be in [0, 1]"),
            ("dupe_factor", self.dupe_factor >= 1, "must be >= 1"),
            ("num_negatives", self.num_negatives >= 1, "must be >= 1"),
            ("seed", self.seed >= 0, "must be >= 0"),
            (
                "user_core",
                self.user_core >= 3,
                "must be >= 3 (leave-one-out holds out two items and trains on the rest)",
            ),
            ("item_core", self.item_core >= 1, "must be >= 1"),
            ("kcore_max_rounds", self.kcore_max_rounds >= 1, "must be >= 1"),
            ("attribute_min_count", self.attribute_min_count >= 1, "must be >= 1"),
            ("num_shards", self.num_shards >= 0, "must be >= 0 (0: grow with the data)"),
            ("users_per_shard", self.users_per_shard >= 1, "must be >= 1"),
        )
        for name, ok, problem in checks:
            if not ok:
                raise ValueError(f"--{name}={getattr(self, name)!r} {problem}.")
        return self

    def to_dict(self) -> dict:
        """The options as metadata.json's `config`; `input_format` is the resolved format."""
        return {**dataclasses.asdict(self), "input_format": self.resolved_format}


def default(name: str):
    """The default of option `name` (for the command line)."""
    return PreprocessConfig.__dataclass_fields__[name].default


def remove_previous_outputs(output: str, job_files: Sequence[str]) -> list[str]:
    """Deletes what an earlier run of the job left under `output` (only the job's own file names,
    given as patterns relative to `output`, and temporary files and parts), so that no stale
    shard of a run with more shards or duplicates survives. Returns the paths."""
    removed = []
    for pattern in job_files:
        (match,) = FileSystems.match([posixpath.join(output, pattern)])
        paths = sorted(m.path for m in match.metadata_list)
        if paths:
            FileSystems.delete(paths)
            removed += paths
    return removed


def check_inputs(flag: str, patterns: Sequence[str]) -> list[str]:
    """Fails fast, naming the flag and pattern, when a pattern matches no readable file."""
    files = []
    for pattern in patterns:
        try:
            (match,) = FileSystems.match([pattern])
        except Exception as e:  # each file system raises its own error types
            raise FileNotFoundError(f"{flag} {pattern!r}: cannot list files: {e}") from e
        paths = sorted(m.path for m in match.metadata_list)
        if not paths:
            raise FileNotFoundError(f"{flag} {pattern!r} matches no files.")
        for path in paths:
            try:
                with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                    f.read(1)
            except Exception as e:
                raise OSError(f"{flag} {pattern!r}: cannot read {path}: {e}") from e
        files += paths
    return files
