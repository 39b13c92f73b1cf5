"""The input formats of --input_format: one registered `InputFormat` per name.

Everything outside `parse` (the parsers) and this registry looks a format up here instead of
testing its name: the options take its name, `auto` and the input checks from `names`, `resolve`
and `InputFormat.inputs`; the job reads with `InputFormat.read` and lists `InputFormat.kinds` in
metadata.json; ids are kept when `InputFormat.keep_raw_ids`. A new format is its parser DoFns in
`beam_pipelines/parse.py` plus one `register(...)` below (docs/extending.md has an example).

A reader turns the input files into the job's common records; from there on (`KCore` ->
`AssignIds` -> ... -> files) no step knows the format.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from beam_pipelines import filtering, histories, parse, reading

# --input_format auto: the first registered format whose input options are given.
AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class InputFormat:
    """How the job reads one input format.

    name: the --input_format value (also metadata.json's `input_format`).
    help: one sentence for --input_format's help.
    inputs: the two options naming its files, (interactions, item attributes); both required.
    kinds: the dead-letter kinds metadata.json's `num_bad_records` always lists (zero if absent).
    read: (pbegin, config: `config.PreprocessConfig`) -> {"histories": PCollection of (user,
      items oldest first), "attributes": PCollection of (item, attribute names or ids),
      "dead_letters": [PCollection of dead letters], "stats": [PCollection of (stat, count)]}.
      Transform labels must be unique within the job ("ParseReviews", ...).
    keep_raw_ids: the input's ids are the project's ids (positive integers), kept as they are.
    has_ratings: whether --min_rating can apply.
    """

    name: str
    help: str
    inputs: tuple[str, str]
    kinds: tuple[str, ...]
    read: Callable[[Any, Any], dict]
    keep_raw_ids: bool = False
    has_ratings: bool = True


_FORMATS: dict[str, InputFormat] = {}


def register(input_format: InputFormat) -> InputFormat:
    """Adds a format (names are unique; `auto` picks among formats in registration order)."""
    if input_format.name in _FORMATS or input_format.name == AUTO:
        raise ValueError(f"input format {input_format.name!r} is already registered")
    _FORMATS[input_format.name] = input_format
    return input_format


def get(name: str) -> InputFormat:
    """The format registered as `name` (KeyError naming the known ones otherwise)."""
    if name not in _FORMATS:
        raise KeyError(f"unknown input format {name!r}; known: {', '.join(_FORMATS)}")
    return _FORMATS[name]


def names() -> tuple[str, ...]:
    """The values of --input_format: `auto`, then every registered format."""
    return (AUTO, *_FORMATS)


def input_options() -> tuple[tuple[str, str], ...]:
    """The distinct input option pairs of the registered formats, in registration order."""
    return tuple(dict.fromkeys(f.inputs for f in _FORMATS.values()))


def resolve(input_format: str, given: set[str]) -> str:
    """The format the job reads: `input_format`, or for `auto` the first registered format whose
    input options are among `given` (the input options with values)."""
    if input_format != AUTO:
        return input_format
    for candidate in _FORMATS.values():
        if given & set(candidate.inputs):
            return candidate.name
    raise ValueError("no input options given")


# ---------------------------------------------------------------------------------------------
# Readers.
# ---------------------------------------------------------------------------------------------
def read_events(review_parser: Callable[[Any], Any], meta_parser: Callable[[Any], Any]):
    """A reader for formats of rated, timed events plus item metadata (`--reviews`/`--metadata`):
    parse both with the DoFns the factories make from the config, then `FilterRatings` and
    `BuildHistories` (which order each user's events by time)."""

    def read(pbegin, config) -> dict:
        reviews = pbegin | "ParseReviews" >> reading.ParseLines(
            config.reviews, review_parser(config), "events"
        )
        meta = pbegin | "ParseMetadata" >> reading.ParseLines(
            config.metadata, meta_parser(config), "attributes"
        )
        rated = reviews["events"] | "FilterRatings" >> filtering.FilterRatings(config.min_rating)
        built = rated["events"] | "BuildHistories" >> histories.BuildHistories()
        return {
            "histories": built["histories"],
            "attributes": meta["attributes"],
            "dead_letters": [reviews["dead_letters"], meta["dead_letters"]],
            "stats": [rated["stats"], built["stats"]],
        }

    return read


def _read_s3rec(pbegin, config) -> dict:
    lines = pbegin | "ParseSequences" >> reading.ParseS3RecSequences(config.sequences)
    table = pbegin | "ParseItemAttributes" >> reading.ParseS3RecItemAttributes(
        config.item2attributes
    )
    built = lines["lines"] | "S3RecHistories" >> histories.S3RecHistories()
    return {
        "histories": built["histories"],
        "attributes": table["attributes"],
        "dead_letters": [lines["dead_letters"], table["dead_letters"], built["dead_letters"]],
        "stats": [],
    }


def _amazon_layout(config) -> str:
    # Registered as "amazon", but `auto` recognizes 2014/2018 and 2023 lines one by one.
    return parse.AUTO if config.input_format == AUTO else parse.FORMAT_2014


register(
    InputFormat(
        name="amazon",
        help="Amazon 2014/2018 reviews (JSON lines) and metadata (Python literals or JSON); "
        "with auto, lines with the 2023 fields are read as 2023.",
        inputs=("reviews", "metadata"),
        kinds=parse.AMAZON_KINDS,
        read=read_events(
            lambda c: parse.ParseReviewLine(_amazon_layout(c)),
            lambda c: parse.ParseMetaLine(_amazon_layout(c)),
        ),
    )
)
register(
    InputFormat(
        name="amazon2023",
        help="Amazon Reviews 2023 (strict JSON; user_id, parent_asin, timestamp in ms).",
        inputs=("reviews", "metadata"),
        kinds=parse.AMAZON_2023_KINDS,
        read=read_events(
            lambda c: parse.ParseReviewLine(parse.FORMAT_2023),
            lambda c: parse.ParseMetaLine(parse.FORMAT_2023),
        ),
    )
)
register(
    InputFormat(
        name="s3rec",
        help="the S3-Rec benchmark files (Beauty.txt, Beauty_item2attributes.json); ids kept.",
        inputs=("sequences", "item2attributes"),
        kinds=parse.ALL_S3REC_KINDS,
        read=_read_s3rec,
        keep_raw_ids=True,
        has_ratings=False,
    )
)
