"""Step 4 of the job: iterative user/item k-core filtering as unrolled rounds, keyed by item and
by user (see `KCore`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_pipelines import algorithms
from beam_pipelines.stats import (
    DROPPED_BY_KCORE_INTERACTIONS,
    DROPPED_BY_KCORE_USERS,
    KCORE_ROUNDS,
    METRICS_NAMESPACE,
)

_LOG = logging.getLogger(__name__)


@beam.typehints.with_output_types(tuple[Any, tuple[Any, ...]])
class _KCoreRoundFn(beam.DoFn):
    """(user, [(_HISTORY, items), (_RARE, item), ...]) -> (user, kept items); (None, (users
    dropped, interactions dropped)) on the "changes" output."""

    def __init__(self, user_core: int):
        self._user_core = user_core
        self._users = Metrics.counter(METRICS_NAMESPACE, "kcore_round_users_dropped")
        self._interactions = Metrics.counter(METRICS_NAMESPACE, "kcore_round_interactions_dropped")

    def process(self, element):
        user, tagged = element
        histories, rare = [], []
        for tag, value in tagged:
            (histories if tag == _HISTORY else rare).append(value)
        for items in histories:  # exactly one history per user
            kept, dropped = algorithms.apply_kcore_round(items, rare, self._user_core)
            if dropped:
                users = int(kept is None)
                self._users.inc(users)
                self._interactions.inc(dropped)
                yield beam.pvalue.TaggedOutput("changes", (None, (users, dropped)))
            if kept is not None:
                yield user, kept


_HISTORY, _RARE = "h", "r"


def _sum_pairs(pairs):
    users = interactions = 0
    for u, i in pairs:
        users += u
        interactions += i
    return users, interactions


@beam.typehints.with_output_types(tuple[Any, Any])
class _StartRoundFn(beam.DoFn):
    """A round's first step: if the previous round changed nothing, the history is final ("done")
    and the later rounds get nothing to do; else it takes part: the main output passes it on,
    "items" names its distinct items ((item, (user, n)))."""

    def process(self, history, previous_changes):
        # previous_changes: [] or [(users, interactions)] of the previous round (None: round 1).
        if previous_changes is not None and not any(c[1] for c in previous_changes):
            yield beam.pvalue.TaggedOutput("done", history)
            return
        yield history[0], (_HISTORY, history[1])
        for occurrence in algorithms.item_occurrences(history):
            yield beam.pvalue.TaggedOutput("items", occurrence)


def kcore_stats(
    round_changes: Sequence[tuple], max_rounds: int, user_core: int, item_core: int
) -> list:
    """[(round, (users dropped, interactions dropped))] of rounds 1..max_rounds + 1 -> the stats;
    raises RuntimeError when round max_rounds + 1 still had something to remove."""
    changes = dict(round_changes)
    last = changes.get(max_rounds + 1, (0, 0))
    if last[1]:
        raise RuntimeError(
            f"k-core (users {user_core}, items {item_core}) did not converge within "
            f"--kcore_max_rounds={max_rounds} rounds: round {max_rounds + 1} would still remove "
            f"{last[1]} interactions. Rerun with a larger --kcore_max_rounds; no metadata.json "
            "was written."
        )
    rounds = sum(1 for r in range(1, max_rounds + 1) if changes.get(r, (0, 0))[1])
    users = sum(changes.get(r, (0, 0))[0] for r in range(1, max_rounds + 1))
    interactions = sum(changes.get(r, (0, 0))[1] for r in range(1, max_rounds + 1))
    _LOG.info(
        "k-core (users %d, items %d): %d rounds, dropped %d users and %d interactions",
        user_core,
        item_core,
        rounds,
        users,
        interactions,
    )
    return [
        (KCORE_ROUNDS, rounds),
        (DROPPED_BY_KCORE_USERS, users),
        (DROPPED_BY_KCORE_INTERACTIONS, interactions),
    ]


class KCore(beam.PTransform):
    """Histories -> {histories, stats}: iterative user/item k-core filtering (the fixed point of
    `algorithms.kcore`, with the same round count), as `max_rounds` + 1 unrolled rounds.

    A round: every history names its distinct items ((item, (user, n)), grouped by item); an item
    with fewer than item_core interactions sends (user, item) to its users (at most item_core of
    them); each user joins its history with those (CoGroupByKey) and drops them, or drops itself
    if it had fewer than user_core interactions. The round's changes are summed globally into a
    small side input of the next round's first step: after a round that changed nothing every
    history goes to the output, so the later rounds run on empty input. Round max_rounds + 1
    only checks: if it would still remove something the job fails (naming --kcore_max_rounds)
    before anything depends on its output.
    """

    def __init__(self, user_core: int, item_core: int, max_rounds: int):
        super().__init__()
        self._user_core = user_core
        self._item_core = item_core
        self._max_rounds = max_rounds

    def expand(self, histories):
        item_core, user_core = self._item_core, self._user_core
        kept, changes, done, round_changes = histories, None, [], []
        for r in range(1, self._max_rounds + 3):
            started = kept | f"Round{r}Start" >> beam.ParDo(
                _StartRoundFn(), None if changes is None else beam.pvalue.AsList(changes)
            ).with_outputs("done", "items", main="active")
            done.append(started["done"])
            if r == self._max_rounds + 2:  # only routes the check round's output
                break
            rare = (
                started["items"]
                | f"Round{r}ByItem" >> beam.GroupByKey()
                | f"Round{r}Rare"
                >> beam.FlatMap(
                    lambda kv, core: [
                        (user, (_RARE, item))
                        for user, item in algorithms.rare_item_users(kv[0], kv[1], core)
                    ],
                    item_core,
                ).with_output_types(tuple[Any, Any])
            )
            # A join by user as Flatten + GroupByKey of tagged values (a CoGroupByKey expands to
            # many more transforms, and every round has one).
            result = (
                (started["active"], rare)
                | f"Round{r}Flatten" >> beam.Flatten()
                | f"Round{r}Join" >> beam.GroupByKey()
                | f"Round{r}Apply"
                >> beam.ParDo(_KCoreRoundFn(user_core)).with_outputs("changes", main="kept")
            )
            kept = result["kept"]
            # Summed per constant key, not CombineGlobally: no default value to inject (a round
            # that changed nothing gives no element), which saves stages in every round.
            changes = (
                result["changes"]
                | f"Round{r}Changes" >> beam.CombinePerKey(_sum_pairs)
                | f"Round{r}Sum" >> beam.Values()
            )
            round_changes.append(changes | f"Round{r}Number" >> beam.Map(lambda c, r=r: (r, c)))
        max_rounds = self._max_rounds
        stats = (
            round_changes
            | "FlattenChanges" >> beam.Flatten()
            | "AllRounds" >> beam.combiners.ToList()
            | "Check" >> beam.FlatMap(kcore_stats, max_rounds, user_core, item_core)
        )
        # The output waits for the check, so nothing is written when k-core did not converge.
        kept = (
            done
            | "FlattenDone" >> beam.Flatten()
            | "AfterCheck" >> beam.Map(lambda h, _: h, beam.pvalue.AsList(stats))
        )
        return {"histories": kept, "stats": stats}
