"""The preprocessing job: Amazon reviews (or the S3-Rec format) -> TFRecords for S3Rec-TF.

    python -m beam_pipelines.preprocess --runner=DirectRunner \\
        --reviews 'data/reviews_Beauty_5.json.gz' --metadata 'data/meta_Beauty.json.gz' \\
        --output data/beauty

    python -m beam_pipelines.preprocess --sequences Beauty.txt \\
        --item2attributes Beauty_item2attributes.json --output data/beauty

Flags this module does not know are Beam pipeline options and go to the runner unchanged
(--runner, --direct_num_workers, --project, --temp_location, ...). All paths may be any Beam file
system (gs://, s3://, ...). The steps are described in `beam_pipelines.steps` and
`beam_pipelines.job`, the outputs in `s3rec_tf.schema`; the defaults of the options are those of
`beam_pipelines.config.PreprocessConfig`.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
from collections.abc import Sequence
from typing import Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines import config as job_config
from beam_pipelines.config import PreprocessConfig, default

_LOG = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipelines.preprocess",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    inputs = parser.add_argument_group("inputs: either Amazon files or the S3-Rec format")
    inputs.add_argument(
        "--reviews",
        nargs="+",
        default=[],
        metavar="GLOB",
        help="Amazon review files (2014 or 2018 JSON lines, .gz or plain).",
    )
    inputs.add_argument(
        "--metadata",
        nargs="+",
        default=[],
        metavar="GLOB",
        help="Amazon metadata files (2014 Python literals or 2018 JSON lines).",
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
        choices=job_config.INPUT_FORMATS,
        default=default("input_format"),
        help="auto: the S3-Rec format for --sequences; for --reviews/--metadata "
        "each line's fields say 2014/2018 or 2023. amazon2023 forces the 2023 "
        "format (strict JSON), amazon the 2014/2018 one.",
    )
    parser.add_argument(
        "--output", required=True, help="Output directory (any Beam file system path)."
    )
    parser.add_argument(
        "--max_seq_length",
        type=int,
        default=default("max_seq_length"),
        help="Pretraining window: the last N items of each training sequence.",
    )
    parser.add_argument(
        "--mask_prob",
        type=float,
        default=default("mask_prob"),
        help="Probability of masking an item that is not the last one.",
    )
    parser.add_argument(
        "--dupe_factor",
        type=int,
        default=default("dupe_factor"),
        help="Pretraining duplicates, each with its own masks and shards.",
    )
    parser.add_argument(
        "--num_negatives",
        type=int,
        default=default("num_negatives"),
        help="Sampled negatives per user for validation and test.",
    )
    parser.add_argument(
        "--seed", type=int, default=default("seed"), help="Seed of every random choice."
    )
    parser.add_argument(
        "--user_core",
        type=int,
        default=default("user_core"),
        help="k-core: minimum interactions per user (>= 3).",
    )
    parser.add_argument(
        "--item_core",
        type=int,
        default=default("item_core"),
        help="k-core: minimum interactions per item.",
    )
    parser.add_argument(
        "--kcore_max_rounds",
        type=int,
        default=default("kcore_max_rounds"),
        help="k-core rounds to unroll; the job fails, naming this flag, if the data needs more.",
    )
    parser.add_argument(
        "--min_rating",
        type=float,
        default=default("min_rating"),
        help="Keep reviews rated at least this; unset keeps all.",
    )
    parser.add_argument(
        "--attribute_min_count",
        type=int,
        default=default("attribute_min_count"),
        help="Keep attributes carried by at least this many items.",
    )
    parser.add_argument(
        "--num_shards",
        type=int,
        default=default("num_shards"),
        help="Shards per output split / duplicate (users are spread by id); 0: "
        "max(4, ceil(users / --users_per_shard)).",
    )
    parser.add_argument(
        "--users_per_shard",
        type=int,
        default=default("users_per_shard"),
        help="With --num_shards 0: at most this many users per shard.",
    )
    return parser


def parse_args(argv: Optional[Sequence[str]] = None):
    """-> (validated PreprocessConfig, the remaining arguments for Beam)."""
    parser = build_parser()
    args, pipeline_args = parser.parse_known_args(argv)
    config = PreprocessConfig(
        output=args.output.rstrip("/") or args.output,
        **{
            name: tuple(getattr(args, name))
            for name in ("reviews", "metadata", "sequences", "item2attributes")
        },
        **{
            name: getattr(args, name)
            for name in vars(args)
            if name not in ("output", "reviews", "metadata", "sequences", "item2attributes")
        },
    )
    try:
        config.validate()
    except ValueError as e:
        parser.error(str(e))
    _check_pipeline_args(parser, ["--" + name for name in vars(args)], pipeline_args)
    return config, pipeline_args


def _check_pipeline_args(
    parser: argparse.ArgumentParser, ours: Sequence[str], pipeline_args: Sequence[str]
) -> None:
    """Flags neither this job nor Beam knows go to the runner (runners may define more), but one
    that looks like a misspelt job option is an error rather than silently ignored."""
    beam_options = PipelineOptions(pipeline_args).get_all_options(retain_unknown_options=False)
    for arg in pipeline_args:
        flag = arg.split("=", 1)[0]
        if not flag.startswith("--") or flag[2:].replace("-", "_") in beam_options:
            continue
        close = difflib.get_close_matches(flag, ours, n=1, cutoff=0.8)
        if close:
            parser.error(f"unrecognized argument {flag}; did you mean {close[0]}?")
        _LOG.warning("%s is not an option of this job or of Beam; passing it to the runner.", flag)


def run(argv: Optional[Sequence[str]] = None):
    # The job's steps load TensorFlow (through the data contract, s3rec_tf.schema); imported
    # here so that parsing options and --help stay light.
    from beam_pipelines import job

    """Runs the job to completion; returns the Beam PipelineResult.

    Bad options and missing or unreadable inputs exit (SystemExit 2) with a message naming them.
    """
    config, pipeline_args = parse_args(argv)
    try:
        for flag, patterns in (
            ("--reviews", config.reviews),
            ("--metadata", config.metadata),
            ("--sequences", config.sequences),
            ("--item2attributes", config.item2attributes),
        ):
            job_config.check_inputs(flag, patterns)
    except OSError as e:
        build_parser().error(str(e))
    removed = job_config.remove_previous_outputs(config.output, job.JOB_FILES)
    if removed:
        _LOG.info("Removed %d files of an earlier run under %s", len(removed), config.output)
    options = PipelineOptions(pipeline_args)
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | "Preprocess" >> job.Preprocess(config)
    result = pipeline.run()
    result.wait_until_finish()
    _log_counters(result)
    return result


def _log_counters(result) -> None:
    try:
        counters = result.metrics().query()["counters"]
    except (AttributeError, NotImplementedError, KeyError):  # runners without metrics support
        return
    totals: dict = {}
    for counter in counters:
        name = f"{counter.key.metric.namespace}/{counter.key.metric.name}"
        totals[name] = totals.get(name, 0) + (counter.committed or counter.attempted or 0)
    for name in sorted(totals):
        _LOG.info("counter %s = %d", name, totals[name])


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.getLogger().setLevel(logging.INFO)
    run(sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
