"""Step 3 of the job: chronological histories, one per user (grouped by user: a worker holds one
user's events at a time)."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_pipelines import algorithms, parse
from beam_pipelines.stats import DROPPED_DUPLICATE_EVENTS, METRICS_NAMESPACE


@beam.typehints.with_output_types(tuple[Any, tuple[Any, ...]])
class _HistoryFn(beam.DoFn):
    def __init__(self):
        self._duplicates = Metrics.counter(METRICS_NAMESPACE, DROPPED_DUPLICATE_EVENTS)

    def process(self, element):
        user, timed_items = element
        timed_items = list(timed_items)
        distinct = sorted(set(timed_items))
        if len(distinct) < len(timed_items):
            dropped = len(timed_items) - len(distinct)
            self._duplicates.inc(dropped)
            yield beam.pvalue.TaggedOutput("stats", (DROPPED_DUPLICATE_EVENTS, dropped))
        yield user, tuple(item for _, item in distinct)


class BuildHistories(beam.PTransform):
    """Events -> {histories: (user, items oldest first), stats}.

    Exact duplicate (user, item, time) events are dropped; events with equal times are ordered by
    item id, so the order never depends on the input's order.
    """

    def expand(self, events):
        results = (
            events
            | "ByUser" >> beam.Map(lambda e: (e.user, (e.time, e.item)))
            | "Group" >> beam.GroupByKey()
            | "Order" >> beam.ParDo(_HistoryFn()).with_outputs("stats", main="histories")
        )
        stats = results["stats"] | "Sum" >> beam.CombinePerKey(sum)
        return {"histories": results["histories"], "stats": stats}


@beam.typehints.with_output_types(tuple[int, tuple[int, ...]])
class _FirstLineFn(beam.DoFn):
    def __init__(self):
        self._duplicates = Metrics.counter(parse.METRICS_NAMESPACE, parse.DUPLICATE_USER)

    def process(self, element):
        user, lines = element
        first, others = algorithms.first_line(lines)
        for path, line_no, items in others:
            self._duplicates.inc()
            record = algorithms.sequence_line(user, items)
            detail = f"user {user} already has a line in {first[0]} line {first[1]}"
            yield beam.pvalue.TaggedOutput(
                parse.DEAD_LETTER,
                parse.dead_letter(path, line_no, parse.DUPLICATE_USER, detail, record),
            )
        yield user, first[2]


class S3RecHistories(beam.PTransform):
    """S3-Rec lines -> {histories: (user, items), dead_letters}: a line already is a history.

    A user with several lines keeps the first (by file and line); the others are dead letters.
    """

    def expand(self, lines):
        results = (
            lines
            | "Group" >> beam.GroupByKey()
            | "First"
            >> beam.ParDo(_FirstLineFn()).with_outputs(parse.DEAD_LETTER, main="histories")
        )
        return {"histories": results["histories"], "dead_letters": results[parse.DEAD_LETTER]}
