"""Step 2 of the job: the rating filter (`--min_rating`), per event."""

from __future__ import annotations

from typing import Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_pipelines import parse
from beam_pipelines.stats import DROPPED_BELOW_MIN_RATING, DROPPED_WITHOUT_RATING, METRICS_NAMESPACE


@beam.typehints.with_output_types(parse.Event)
class _FilterRatingsFn(beam.DoFn):
    def __init__(self, min_rating: float):
        self._min_rating = min_rating
        self._below = Metrics.counter(METRICS_NAMESPACE, DROPPED_BELOW_MIN_RATING)
        self._unrated = Metrics.counter(METRICS_NAMESPACE, DROPPED_WITHOUT_RATING)

    def process(self, event: parse.Event):
        if event.rating is None:
            self._unrated.inc()
            yield beam.pvalue.TaggedOutput("stats", (DROPPED_WITHOUT_RATING, 1))
        elif event.rating < self._min_rating:
            self._below.inc()
            yield beam.pvalue.TaggedOutput("stats", (DROPPED_BELOW_MIN_RATING, 1))
        else:
            yield event


class FilterRatings(beam.PTransform):
    """Keeps events rated >= min_rating (None: keeps all) -> {events, stats}.

    With a threshold, events without a rating are dropped too.
    """

    def __init__(self, min_rating: Optional[float]):
        super().__init__()
        self._min_rating = min_rating

    def expand(self, events):
        if self._min_rating is None:
            return {"events": events, "stats": events.pipeline | "NoStats" >> beam.Create([])}
        results = events | "Filter" >> beam.ParDo(_FilterRatingsFn(self._min_rating)).with_outputs(
            "stats", main="events"
        )
        stats = results["stats"] | "Sum" >> beam.CombinePerKey(sum)
        return {"events": results["events"], "stats": stats}
