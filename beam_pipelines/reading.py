"""Step 1 of the job: input files -> parsed records and dead letters.

The PTransforms here read files (keeping every line's number) and hand each line to a parser DoFn
of `beam_pipelines.parse`; which parsers a format uses is its entry in `beam_pipelines.formats`.
Work is spread by file (a Reshuffle after matching), then by line.
"""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam
from apache_beam.io import fileio

from beam_pipelines import parse


class ReadLines(beam.PTransform):
    """File patterns -> (path, line number, line bytes) of every matching file.

    A pattern that matches nothing fails the job with the pattern in the message.
    """

    def __init__(self, patterns: Sequence[str]):
        super().__init__()
        self._patterns = list(patterns)

    def expand(self, pbegin):
        return (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "Match" >> fileio.MatchAll(fileio.EmptyMatchTreatment.DISALLOW)
            | "Paths" >> beam.Map(lambda metadata: metadata.path)
            | "SpreadFiles" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(parse.ReadFileLines())
        )


class ParseLines(beam.PTransform):
    """Files of a line-based format -> {main: what `parser` yields per line, dead_letters}.

    `parser`: a `parse._ParseLine` DoFn taking (path, line number, bytes); `main`: the name of its
    main output in the returned dict ("events", "attributes", "lines").
    """

    def __init__(self, patterns: Sequence[str], parser: beam.DoFn, main: str):
        super().__init__()
        self._patterns = patterns
        self._parser = parser
        self._main = main

    def expand(self, pbegin):
        main = self._main
        results = (
            pbegin
            | "ReadLines" >> ReadLines(self._patterns)
            | "Parse" >> beam.ParDo(self._parser).with_outputs(parse.DEAD_LETTER, main=main)
        )
        return {main: results[main], "dead_letters": results[parse.DEAD_LETTER]}


class ParseReviews(ParseLines):
    """Amazon review files (2014, 2018 or 2023; .gz or plain) -> {events, dead_letters}.

    `layout`: parse.AUTO (recognized per line), parse.FORMAT_2014 or parse.FORMAT_2023.
    """

    def __init__(self, patterns: Sequence[str], layout: str = parse.AUTO):
        super().__init__(patterns, parse.ParseReviewLine(layout), "events")


class ParseMetadata(ParseLines):
    """Amazon metadata files -> {attributes: (item, attribute names), dead_letters}."""

    def __init__(self, patterns: Sequence[str], layout: str = parse.AUTO):
        super().__init__(patterns, parse.ParseMetaLine(layout), "attributes")


class ParseS3RecSequences(ParseLines):
    """S3-Rec sequence files -> {lines: (user, (path, line, items)), dead_letters}."""

    def __init__(self, patterns: Sequence[str]):
        super().__init__(patterns, parse.ParseSequenceLine(), "lines")


class ParseS3RecItemAttributes(beam.PTransform):
    """S3-Rec item2attributes files -> {attributes: (item id, attribute ids), dead_letters}."""

    def __init__(self, patterns: Sequence[str]):
        super().__init__()
        self._patterns = list(patterns)

    def expand(self, pbegin):
        results = (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "Match" >> fileio.MatchAll(fileio.EmptyMatchTreatment.DISALLOW)
            | "Paths" >> beam.Map(lambda metadata: metadata.path)
            | "Parse"
            >> beam.ParDo(parse.ParseItemAttributesFile()).with_outputs(
                parse.DEAD_LETTER, main="attributes"
            )
        )
        return {"attributes": results["attributes"], "dead_letters": results[parse.DEAD_LETTER]}
