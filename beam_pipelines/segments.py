"""Step 7 of the job: blocks of users write the parts of sequences.txt, cut the long sequence
(every user's items in user-id order) into position blocks and look up the positions that the SP
negative segments read, so that no worker holds the long sequence."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from beam_pipelines import algorithms, records, writers
from beam_pipelines.stats import METRICS_NAMESPACE

# Users per block of user ids (one part of sequences.txt, one piece of the long sequence).
USERS_PER_BLOCK = 20_000
# Positions of the long sequence per look-up block.
POSITIONS_PER_BLOCK = 1 << 16


def user_block(user: int) -> int:
    """The block of consecutive user ids (1-based) that `user` belongs to."""
    return (int(user) - 1) // USERS_PER_BLOCK


@beam.typehints.with_output_types(tuple[Any, Any])
class _UserBlockFn(beam.DoFn):
    """(block, [(user, items)]) of consecutive user ids, in user-id order ->
    * main: (block, part path) of sequences.txt;
    * "pieces": (position block, (start, items)): the block's stretch of the long sequence
      (every user's items, in user-id order), cut at position-block bounds;
    * "requests": (position block, (shards, positions)): the positions the block's users'
      negative segments read (`records.segment_positions`), with the shard (user %
      num_shards) that needs each.
    """

    def __init__(self, output, sequences_file, dupe_factor, max_seq_length, seed):
        self._output = output
        self._sequences_file = sequences_file
        self._dupe_factor = dupe_factor
        self._max_seq_length = max_seq_length
        self._seed = seed
        self._blocks = Metrics.counter(METRICS_NAMESPACE, "user_blocks")
        self._requests = Metrics.counter(METRICS_NAMESPACE, "segment_positions_requested")

    def process(self, element, offsets, total_length, num_shards):
        block, users = element
        users = sorted(users, key=lambda u: u[0])
        self._blocks.inc()
        yield writers.write_part(
            self._output,
            self._sequences_file,
            block,
            (algorithms.sequence_line(u, items) + "\n" for u, items in users),
            "",
        )
        start = offsets[block]
        flat = np.fromiter((i for _, items in users for i in items), np.int64)
        step = POSITIONS_PER_BLOCK
        for lo in range(start - start % step, start + len(flat), step):
            a, b = max(lo, start), min(lo + step, start + len(flat))
            yield beam.pvalue.TaggedOutput("pieces", (lo // step, (a, flat[a - start : b - start])))
        shard_of = np.array([int(u) % num_shards for u, _ in users], dtype=np.int64)
        keys = []
        for shard in np.unique(shard_of):
            positions = records.segment_positions(
                [users[k] for k in np.flatnonzero(shard_of == shard)],
                seed=self._seed,
                dupe_factor=self._dupe_factor,
                max_seq_length=self._max_seq_length,
                total_length=total_length,
            )
            keys.append(np.int64(shard) * (total_length + 1) + positions)
        keys = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
        if not len(keys):  # no user of the block has an example with a segment
            return
        self._requests.inc(len(keys))
        shards, positions = np.divmod(keys, total_length + 1)
        target = positions // step
        order = np.argsort(target, kind="stable")
        target, shards, positions = target[order], shards[order], positions[order]
        bounds = np.flatnonzero(np.diff(target)) + 1
        for lo, hi in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(target)]])):
            yield beam.pvalue.TaggedOutput(
                "requests", (int(target[lo]), (shards[lo:hi], positions[lo:hi]))
            )


def _answer(element):
    """(position block, {pieces, requests}) -> (shard, (positions, items)) per requesting shard."""
    block, joined = element
    base = block * POSITIONS_PER_BLOCK
    items = np.zeros(POSITIONS_PER_BLOCK, dtype=np.int64)
    for start, values in joined["pieces"]:
        items[start - base : start - base + len(values)] = values
    for shards, positions in joined["requests"]:
        values = items[positions - base]
        for shard in np.unique(shards):
            mine = shards == shard
            yield int(shard), (positions[mine], values[mine])


class NegativeSegments(beam.PTransform):
    """Histories with ids -> {sequence_parts: (block, path), segments: (shard, (positions,
    items)), num_interactions: one int}.

    The SP negative segments are cut from the long sequence (all users' sequences concatenated
    in user-id order) at random starts. No worker holds it: users are grouped in blocks of
    consecutive ids, whose starts in the long sequence come from a prefix sum over the block
    sizes (a small side input); each block cuts its stretch into pieces keyed by position block
    and names the positions its users' segments read (drawn exactly as the example writer draws
    them); a CoGroupByKey by position block answers them, keyed by the shard that asked.
    """

    def __init__(self, output, sequences_file, *, num_shards, dupe_factor, max_seq_length, seed):
        super().__init__()
        self._num_shards = num_shards
        self._fn = _UserBlockFn(output, sequences_file, dupe_factor, max_seq_length, seed)

    def expand(self, histories):
        sizes = (
            histories
            | "BlockSizes" >> beam.Map(lambda h: (user_block(h[0]), len(h[1])))
            | "SumBlocks" >> beam.CombinePerKey(sum)
        )
        offsets = (
            sizes
            | "SizeDict" >> beam.combiners.ToDict()
            | "Offsets" >> beam.Map(algorithms.rank_offsets)
        )
        total = sizes | "Sizes" >> beam.Values() | "Total" >> beam.CombineGlobally(sum)
        blocks = (
            histories
            | "ToBlock" >> beam.Map(lambda h: (user_block(h[0]), h))
            | "GroupBlocks" >> beam.GroupByKey()
            | "Blocks"
            >> beam.ParDo(
                self._fn,
                beam.pvalue.AsSingleton(offsets),
                beam.pvalue.AsSingleton(total),
                beam.pvalue.AsSingleton(self._num_shards),
            ).with_outputs("pieces", "requests", main="sequence_parts")
        )
        segments = (
            {"pieces": blocks["pieces"], "requests": blocks["requests"]}
            | "JoinPositions" >> beam.CoGroupByKey()
            | "Answer" >> beam.FlatMap(_answer)
        )
        return {
            "sequence_parts": blocks["sequence_parts"],
            "segments": segments,
            "num_interactions": total,
        }
