"""The preprocessing job: Amazon reviews (or the S3-Rec format) -> TFRecords for S3Rec-TF.

    python -m beam_pipelines.preprocess --runner=DirectRunner \\
        --reviews 'data/reviews_Beauty_5.json.gz' --metadata 'data/meta_Beauty.json.gz' \\
        --output data/beauty

    python -m beam_pipelines.preprocess --sequences Beauty.txt \\
        --item2attributes Beauty_item2attributes.json --output data/beauty

Flags this module does not know are Beam pipeline options and go to the runner unchanged
(--runner, --direct_num_workers, --project, --temp_location, ...). All paths may be any Beam file
system (gs://, s3://, ...). The steps are described in `beam_pipelines.job` (one module each),
the outputs in `s3rec_tf.schema`; the options, their defaults and help are
`beam_pipelines.config.PreprocessOptions`.
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
from beam_pipelines.config import INPUT_OPTIONS, PreprocessConfig, PreprocessOptions

_LOG = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The command line: the flags of `PreprocessOptions` (their defaults shown by --help)."""
    parser = argparse.ArgumentParser(
        prog="python -m beam_pipelines.preprocess",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    PreprocessOptions._add_argparse_args(parser)
    return parser


def parse_args(argv: Optional[Sequence[str]] = None):
    """-> (validated PreprocessConfig, the remaining arguments for Beam)."""
    parser = build_parser()
    args, pipeline_args = parser.parse_known_args(argv)
    if args.output is None:
        parser.error("the following arguments are required: --output")
    config = PreprocessConfig.from_options(vars(args))
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
    """Runs the job to completion; returns the Beam PipelineResult.

    `argv`: the command line without the program name (None: sys.argv[1:]). Bad options and
    missing or unreadable inputs exit (SystemExit 2) with a message naming them.
    """
    # The job's example writer loads TensorFlow (tf.train.Example); imported here so that
    # parsing options and --help stay light.
    from beam_pipelines import job

    config, pipeline_args = parse_args(argv)
    try:
        for name in INPUT_OPTIONS:
            job_config.check_inputs(f"--{name}", getattr(config, name))
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
