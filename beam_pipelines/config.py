"""The preprocessing job's options: `PreprocessOptions` (every flag, its default and its help, as
a Beam `PipelineOptions` subclass), `PreprocessConfig` (the parsed, validated values the job
reads), and the pre-flight checks: inputs that exist and can be read, and removing an earlier
run's outputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import posixpath
from collections.abc import Sequence
from typing import Optional

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines import formats

# The options that name input files (lists of globs): each format reads one pair of them.
INPUT_OPTIONS = ("reviews", "metadata", "sequences", "item2attributes")


class PreprocessOptions(PipelineOptions):
    """The job's flags, defaults and help (the one place they are defined).

    `python -m beam_pipelines.preprocess --help` lists them; `PipelineOptions(argv).view_as(
    PreprocessOptions)` reads them the Beam way. --output is not `required` here: Beam adds the
    flags of every PipelineOptions subclass to every options parser in the process, so the job's
    own parser (`preprocess.parse_args`) checks it instead.
    """

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        inputs = parser.add_argument_group("inputs: either Amazon files or the S3-Rec format")
        inputs.add_argument(
            "--reviews",
            nargs="+",
            default=[],
            metavar="GLOB",
            help="Amazon review files (2014 or 2018 JSON lines, 2023 JSON; .gz or plain).",
        )
        inputs.add_argument(
            "--metadata",
            nargs="+",
            default=[],
            metavar="GLOB",
            help="Amazon metadata files (2014 Python literals, 2018 or 2023 JSON lines).",
        )
        inputs.add_argument(
            "--sequences",
            nargs="+",
            default=[],
            metavar="GLOB",
            help="S3-Rec sequences ('user item item ...' per line); ids are kept.",
        )
        inputs.add_argument(
            "--item2attributes",
            nargs="+",
            default=[],
            metavar="GLOB",
            help="S3-Rec item2attributes JSON ({item id: [attribute ids]}).",
        )
        inputs.add_argument(
            "--input_format",
            choices=formats.names(),
            default=formats.AUTO,
            help="auto: the first of the formats below whose input flags are given (for "
            "--reviews/--metadata each line's fields then say 2014/2018 or 2023). "
            + " ".join(f"{name}: {formats.get(name).help}" for name in formats.names()[1:]),
        )
        parser.add_argument(
            "--output", default=None, help="Output directory, required (any Beam file system path)."
        )
        parser.add_argument(
            "--max_seq_length",
            type=int,
            default=50,
            help="Pretraining window: the last N items of each training sequence.",
        )
        parser.add_argument(
            "--mask_prob",
            type=float,
            default=0.2,
            help="Probability of masking an item that is not the last one.",
        )
        parser.add_argument(
            "--dupe_factor",
            type=int,
            default=1,
            help="Pretraining duplicates, each with its own masks and shards.",
        )
        parser.add_argument(
            "--num_negatives",
            type=int,
            default=99,
            help="Sampled negatives per user for validation and test.",
        )
        parser.add_argument("--seed", type=int, default=42, help="Seed of every random choice.")
        parser.add_argument(
            "--user_core", type=int, default=5, help="k-core: minimum interactions per user (>= 3)."
        )
        parser.add_argument(
            "--item_core", type=int, default=5, help="k-core: minimum interactions per item."
        )
        parser.add_argument(
            "--kcore_max_rounds",
            type=int,
            default=20,
            help="k-core rounds to unroll; the job fails, naming this flag, if the data needs "
            "more.",
        )
        parser.add_argument(
            "--min_rating",
            type=float,
            default=None,
            help="Keep reviews rated at least this; unset keeps all.",
        )
        parser.add_argument(
            "--attribute_min_count",
            type=int,
            default=1,
            help="Keep attributes carried by at least this many items.",
        )
        parser.add_argument(
            "--num_shards",
            type=int,
            default=0,
            help="Shards per output split / duplicate (users are spread by id); 0: "
            "max(4, ceil(users / --users_per_shard)).",
        )
        parser.add_argument(
            "--users_per_shard",
            type=int,
            default=100_000,
            help="With --num_shards 0: at most this many users per shard.",
        )


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """The job's options as read from `PreprocessOptions` (which holds their defaults and help);
    the input globs as tuples, `output` without a trailing slash."""

    output: str
    reviews: tuple[str, ...]
    metadata: tuple[str, ...]
    sequences: tuple[str, ...]
    item2attributes: tuple[str, ...]
    input_format: str
    max_seq_length: int
    mask_prob: float
    dupe_factor: int
    num_negatives: int
    seed: int
    user_core: int
    item_core: int
    kcore_max_rounds: int
    min_rating: Optional[float]
    attribute_min_count: int
    num_shards: int  # 0: grow with the data, max(4, ceil(users / users_per_shard))
    users_per_shard: int

    @classmethod
    def from_options(cls, values: dict) -> PreprocessConfig:
        """From {option name: value} of `PreprocessOptions` (argparse's `vars(args)` or
        `options.view_as(PreprocessOptions).get_all_options()`); other keys are ignored."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kept = {name: value for name, value in values.items() if name in fields}
        kept.update({name: tuple(kept[name] or ()) for name in INPUT_OPTIONS})
        output = kept["output"] or ""
        kept["output"] = output.rstrip("/") or output
        return cls(**kept)

    @property
    def resolved_format(self) -> str:
        """The registered format the job reads (`formats.resolve`: `auto` picks by the inputs)."""
        return formats.resolve(self.input_format, {n for n in INPUT_OPTIONS if getattr(self, n)})

    @property
    def format(self) -> formats.InputFormat:
        return formats.get(self.resolved_format)

    @property
    def keep_raw_ids(self) -> bool:
        return self.format.keep_raw_ids

    def validate(self) -> PreprocessConfig:
        """Returns self, or raises ValueError naming the option and the problem."""
        pairs = formats.input_options()
        given = [pair for pair in pairs if any(getattr(self, name) for name in pair)]
        if len(given) != 1:
            either = " or ".join(f"--{a} and --{b}" for a, b in pairs)
            raise ValueError(f"Give either {either}, not both and not neither.")
        (pair,) = given
        if not all(getattr(self, name) for name in pair):
            raise ValueError(f"--{pair[0]} and --{pair[1]} must be given together.")
        if self.input_format not in formats.names():
            raise ValueError(
                f"--input_format={self.input_format!r} must be one of {', '.join(formats.names())}."
            )
        if self.format.inputs != pair:
            raise ValueError(
                f"--input_format={self.input_format} does not match the inputs: it reads "
                f"--{self.format.inputs[0]} and --{self.format.inputs[1]}."
            )
        if self.min_rating is not None and not self.format.has_ratings:
            raise ValueError(
                f"--min_rating needs ratings; the {self.resolved_format} format has none."
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
