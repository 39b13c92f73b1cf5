"""Ranking metrics for next-item recommendation: HR@K, NDCG@K and MRR as Keras metrics.

Two evaluation protocols produce a 1-based rank of each user's target item:

  * sampled: the target against the user's sampled negatives (99 per user, from preprocessing),
    the protocol of the S3-Rec paper's tables: `sampled_ranks`;
  * full: the target against every item 1..N; the padding id 0 and the mask id N + 1 never
    count, and optionally neither do the user's history items (other than the target):
    `full_ranking_ranks`.

Ties are pessimistic: a candidate whose score is >= the target's score ranks above the target, so

    rank = 1 + #{valid candidates c other than the target : score(c) >= score(target)}.

A model that gives every item the same score therefore gets the worst rank, never the best, and a
NaN score (a diverged model) also ranks the target below every such candidate (a NaN target
score gives the worst rank).

The metrics are updated from ranks, one value per user, and average over users:

    HR@K   = mean(rank <= K)
    NDCG@K = mean(1 / log2(rank + 1) if rank <= K else 0)   (one relevant item, so IDCG = 1)
    MRR    = mean(1 / rank)                                   (not cut off at any K)

API:

    ranks = sampled_ranks(target_scores [B], negative_scores [B, C], negative_mask=None)
    ranks = full_ranking_ranks(scores [B, N + 2], targets [B], history=None, exclude_history=False)
    ranks = pessimistic_rank(target_scores [B], candidate_scores [B, C], candidate_mask=None)
    metrics = ranking_metrics("sampled") + ranking_metrics("full")
    for metric in metrics:                 # e.g. in a custom `test_step`
        metric.update_state(sampled if metric.protocol == "sampled" else full)

`ranking_metrics(protocol)` returns `HitRate`, `NDCG` and `MRR` instances named
`{protocol}_hr@1`, `_hr@5`, `_hr@10`, `_hr@20`, `_ndcg@5`, `_ndcg@10`, `_ndcg@20`, `_mrr`. Each
is a `tf.keras.metrics.Mean` of per-user values, so its state is a (weighted) sum and a count: the
result does not depend on how users are split into batches, and under `tf.distribute` the state
variables are summed over replicas when read in cross-replica context. The protocols, the
metrics' names and the headline metrics are `s3rec_tf.metric_names` (no TensorFlow).

Under `tf.distribute`, create the metrics inside `strategy.scope()`; a custom `test_step` may
return `{m.name: m.result() for m in metrics}`: Keras computes `result()` called in a replica
context from the state summed over replicas (tested on 2 replicas, with an uneven last batch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import tensorflow as tf  # after the s3rec_tf package selected Keras 2

from s3rec_tf.metric_names import HIT_RATE_KS, NDCG_KS, PROTOCOLS, default_name


def _check_rank(tensor: tf.Tensor, rank: int, name: str) -> None:
    if tensor.shape.rank is not None and tensor.shape.rank != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {tensor.shape}.")


def pessimistic_rank(
    target_scores: tf.Tensor,
    candidate_scores: tf.Tensor,
    candidate_mask: Optional[tf.Tensor] = None,
) -> tf.Tensor:
    """1-based rank of each target among its candidates; ties count against the target.

    Args:
      target_scores: [batch] float, the score of each row's target.
      candidate_scores: [batch, candidates] float, the scores of the items the target competes
        with; they must not include the target itself (use `candidate_mask` to leave it out).
      candidate_mask: [batch, candidates] bool, True where a candidate counts; None = all count.

    Returns:
      [batch] int32: 1 + the number of counted candidates with score >= the target's score
      (a NaN score on either side counts the candidate as above the target).
    """
    target_scores = tf.convert_to_tensor(target_scores)
    candidate_scores = tf.convert_to_tensor(candidate_scores, dtype_hint=target_scores.dtype)
    _check_rank(target_scores, 1, "target_scores")
    _check_rank(candidate_scores, 2, "candidate_scores")
    target = target_scores[:, tf.newaxis]
    above = candidate_scores >= target
    if target_scores.dtype.is_floating:
        above = above | tf.math.is_nan(candidate_scores) | tf.math.is_nan(target)
    if candidate_mask is not None:
        candidate_mask = tf.convert_to_tensor(candidate_mask)
        _check_rank(candidate_mask, 2, "candidate_mask")
        above = above & tf.cast(candidate_mask, tf.bool)
    return 1 + tf.reduce_sum(tf.cast(above, tf.int32), axis=1)


def sampled_ranks(
    target_scores: tf.Tensor,
    negative_scores: tf.Tensor,
    negative_mask: Optional[tf.Tensor] = None,
) -> tf.Tensor:
    """Sampled protocol: ranks [batch] int32 of the targets against the users' negatives.

    Args:
      target_scores: [batch] float.
      negative_scores: [batch, num_negatives] float (99 negatives per user in S3-Rec).
      negative_mask: [batch, num_negatives] bool, False for padding where users have fewer
        negatives than the batch's width; None = every column is a negative.
    """
    return pessimistic_rank(target_scores, negative_scores, negative_mask)


def _dense_ids(ids: tf.Tensor) -> tf.Tensor:
    if isinstance(ids, tf.RaggedTensor):
        ids = ids.to_tensor(0)
    return tf.cast(ids, tf.int32)


def full_ranking_ranks(
    scores: tf.Tensor,
    targets: tf.Tensor,
    history: Optional[tf.Tensor] = None,
    exclude_history: bool = False,
) -> tf.Tensor:
    """Full protocol: ranks [batch] int32 of the targets against every item 1..N.

    Args:
      scores: [batch, N + 2] float, a score for every item id: column 0 (padding) and column
        N + 1 (the mask id) never count.
      targets: [batch] int, target item ids in 1..N.
      history: [batch, H] int, the items each user interacted with before the target, padded
        with 0 anywhere (dense or a `tf.RaggedTensor`). Only read when `exclude_history`.
      exclude_history: when True the user's history items do not count as candidates (the
        target itself never does, whether it is in the history or not).

    Raises:
      ValueError: for tensors of the wrong rank, or `exclude_history` without a history.
      tf.errors.InvalidArgumentError: for a target outside 1..N or a history id outside 0..N+1
        (checked eagerly and in `tf.function`; XLA-compiled functions skip the check).
    """
    scores = tf.convert_to_tensor(scores)
    targets = _dense_ids(targets)
    _check_rank(scores, 2, "scores")
    _check_rank(targets, 1, "targets")
    width = tf.shape(scores)[1]  # N + 2
    checks = [
        tf.debugging.assert_greater_equal(targets, 1, message="full ranking: target id < 1"),
        tf.debugging.assert_less_equal(
            targets, width - 2, message="full ranking: target id > N = scores.shape[1] - 2"
        ),
    ]
    ids = tf.range(width)[tf.newaxis, :]
    with tf.control_dependencies(checks):
        valid = (ids >= 1) & (ids <= width - 2) & (ids != targets[:, tf.newaxis])
    if exclude_history:
        if history is None:
            raise ValueError("exclude_history=True needs the users' history items.")
        valid = valid & ~_seen(history, width)
    target_scores = tf.gather(scores, targets, batch_dims=1)
    return pessimistic_rank(target_scores, scores, valid)


def full_ranking_ranks_history_zero(
    scores: tf.Tensor, targets: tf.Tensor, history: tf.Tensor
) -> tf.Tensor:
    """Full protocol with the history items' scores set to 0 (the target's too when the user
    had it before), as BSARec's and WEARec's evaluation (`rating_pred[train_matrix > 0] = 0`):
    history items stay candidates, and outrank the target when its score is negative.

    Args as `full_ranking_ranks`; history is required. Ties count against the target.
    """
    scores = tf.convert_to_tensor(scores)
    _check_rank(scores, 2, "scores")
    # Column 0 (padding) may be marked seen: it is never a candidate anyway.
    seen = _seen(history, tf.shape(scores)[1])
    return full_ranking_ranks(tf.where(seen, tf.zeros_like(scores), scores), targets)


def ranks_by_item_chunks(
    users: tf.Tensor,
    table: tf.Tensor,
    targets: tf.Tensor,
    negatives: tf.Tensor,
    history: tf.Tensor,
    exclude_history: bool = False,
    history_zero: bool = False,
    chunk_size: Optional[int] = None,
) -> dict:
    """The ranks of every protocol, scoring the catalogue `chunk_size` items at a time.

    The same ranks as `sampled_ranks`, `full_ranking_ranks` and `full_ranking_ranks_history_zero`
    on the scores `users @ tableᵀ`, without the `[batch, N + 2]` score matrix: memory is
    `[batch, chunk_size]` whatever the catalogue. The ranks are counts (1 + the candidates at or
    above the target), so a running count per user needs no top-k of the whole row. Two passes
    over the chunks: the first picks the target's and the negatives' scores out of the chunk
    that holds them (the very values the unchunked matmul gives, so ties fall the same way),
    the second counts the candidates at or above the target.

    Args:
      users: [batch, d] float, the users' encodings.
      table: [N + 2, d] float, the item table (ids 0 and N + 1 are never candidates).
      targets: [batch] int, ids in 1..N.
      negatives: [batch, K] int, the sampled protocol's negatives; 0 pads a short row.
      history: [batch, H] int, the users' history items, 0-padded.
      exclude_history: the "full" protocol leaves history items out (as `full_ranking_ranks`).
      history_zero: also rank under "full_history_zero".
      chunk_size: items per chunk; None scores the whole table at once.

    Returns: {"sampled": [batch], "full": [batch] (, "full_history_zero": [batch])} int32.
    """
    users = tf.convert_to_tensor(users)
    table = tf.cast(table, users.dtype)
    targets, negatives, history = _dense_ids(targets), _dense_ids(negatives), _dense_ids(history)
    _check_rank(users, 2, "users")
    _check_rank(table, 2, "table")
    _check_rank(negatives, 2, "negatives")
    width = tf.shape(table)[0]  # N + 2
    chunk = width if chunk_size is None else tf.minimum(tf.constant(chunk_size, tf.int32), width)
    num_chunks = (width + chunk - 1) // chunk
    batch = tf.shape(users)[0]

    def scores_of(c):
        start = c * chunk
        rows = table[start : tf.minimum(start + chunk, width)]
        return tf.matmul(users, rows, transpose_b=True), start  # [B, C]

    with tf.control_dependencies(_id_checks(targets, negatives, history, width)):
        wanted = tf.concat([targets[:, tf.newaxis], negatives], axis=1)  # [B, 1 + K]

    def pick(scores, start, picked):
        """The scores of `wanted` that lie in this chunk, the others kept from `picked`."""
        local = wanted - start
        inside = (local >= 0) & (local < tf.shape(scores)[1])
        values = tf.gather(scores, tf.where(inside, local, 0), batch_dims=1)
        return tf.where(inside, values, picked)

    def count(scores, start, target_scores, zero_target_scores, full, zero):
        """Adds this chunk's candidates at or above the target to the running counts."""
        ids = start + tf.range(tf.shape(scores)[1])[tf.newaxis, :]
        valid = (ids >= 1) & (ids <= width - 2) & (ids != targets[:, tf.newaxis])
        seen = _seen_in(history, start, tf.shape(scores)[1])
        candidates = valid & ~seen if exclude_history else valid
        full += _count_at_or_above(target_scores, scores, candidates)
        if history_zero:
            zeroed = tf.where(seen, tf.zeros_like(scores), scores)
            zero += _count_at_or_above(zero_target_scores, zeroed, valid)
        return full, zero

    target_seen = tf.reduce_any(tf.equal(history, targets[:, tf.newaxis]), axis=1)
    none = tf.zeros([batch], tf.int32)
    nothing_picked = tf.zeros(tf.shape(wanted), users.dtype)
    rows = table.shape[0]
    if chunk_size is None or (rows is not None and chunk_size >= rows):
        # One chunk: one matmul serves both the picking and the counting.
        scores, _ = scores_of(0)
        picked = pick(scores, 0, nothing_picked)
        target_scores = picked[:, 0]
        zero_target_scores = tf.where(target_seen, tf.zeros_like(target_scores), target_scores)
        full, zero = count(scores, 0, target_scores, zero_target_scores, none, none)
    else:
        # Pass 1: the scores of the targets and negatives, each from its chunk. Pass 2: per
        # user, the candidates at or above the target, chunk by chunk. One chunk at a time
        # (parallel_iterations=1): by default a while_loop runs up to 10 iterations at once,
        # i.e. 10 chunks' scores and masks alive together (gigabytes at a million items).
        _, picked = tf.while_loop(
            lambda c, _: c < num_chunks,
            lambda c, picked: (c + 1, pick(*scores_of(c), picked)),
            (0, nothing_picked),
            parallel_iterations=1,
        )
        target_scores = picked[:, 0]
        zero_target_scores = tf.where(target_seen, tf.zeros_like(target_scores), target_scores)
        _, full, zero = tf.while_loop(
            lambda c, *_: c < num_chunks,
            lambda c, full, zero: (
                c + 1,
                *count(*scores_of(c), target_scores, zero_target_scores, full, zero),
            ),
            (0, none, none),
            parallel_iterations=1,
        )
    ranks = {"sampled": sampled_ranks(target_scores, picked[:, 1:], negatives > 0)}
    ranks["full"] = 1 + full
    if history_zero:
        ranks["full_history_zero"] = 1 + zero
    return ranks


def _count_at_or_above(target_scores, scores, mask):
    """[batch] int32: the masked columns of `scores` at or above the row's target score (NaN on
    either side counts, as in `pessimistic_rank`)."""
    target = target_scores[:, tf.newaxis]
    above = (scores >= target) | tf.math.is_nan(scores) | tf.math.is_nan(target)
    return tf.reduce_sum(tf.cast(above & mask, tf.int32), axis=1)


def _id_checks(targets, negatives, history, width) -> list:
    return [
        tf.debugging.assert_greater_equal(targets, 1, message="full ranking: target id < 1"),
        tf.debugging.assert_less_equal(
            targets, width - 2, message="full ranking: target id > N = table rows - 2"
        ),
        tf.debugging.assert_greater_equal(negatives, 0, message="negative id < 0"),
        tf.debugging.assert_less(negatives, width, message="negative id > N + 1"),
        tf.debugging.assert_greater_equal(history, 0, message="history id < 0"),
        tf.debugging.assert_less(history, width, message="history id > N + 1"),
    ]


def _seen(history: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
    """[batch, width] bool: True at the ids in each row of `history` ([batch, H], 0-padded)."""
    history = _dense_ids(history)
    _check_rank(history, 2, "history")
    with tf.control_dependencies(
        [
            tf.debugging.assert_greater_equal(history, 0, message="history id < 0"),
            tf.debugging.assert_less(history, width, message="history id > N + 1"),
        ]
    ):
        history = tf.identity(history)
    return _seen_in(history, 0, width)


def _seen_in(history: tf.Tensor, start, size) -> tf.Tensor:
    """[batch, size] bool: True at column i where the row's history holds id start + i (ids
    outside [start, start + size) are ignored: another chunk's)."""
    local = history - start
    inside = (local >= 0) & (local < size)
    rows = tf.broadcast_to(tf.range(tf.shape(history)[0])[:, tf.newaxis], tf.shape(history))
    indices = tf.stack([rows, tf.where(inside, local, 0)], axis=-1)
    return tf.scatter_nd(indices, tf.cast(inside, tf.int32), [tf.shape(history)[0], size]) > 0


class RankingMetric(tf.keras.metrics.Mean):
    """Base class: the weighted mean over users of a function of their 1-based ranks.

    `update_state(ranks [batch] int, sample_weight [batch] or None)`.

    Args:
      name: the metric's name (the key in `model.evaluate(..., return_dict=True)`).
      protocol: "sampled", "full" or None; tells a `test_step` which ranks to feed.
      dtype: dtype of the state and result (float32 by default).
    """

    def __init__(self, name: str, protocol: Optional[str] = None, dtype=None):
        if protocol is not None and protocol not in PROTOCOLS:
            raise ValueError(f"Unknown protocol {protocol!r}; expected one of {PROTOCOLS}.")
        super().__init__(name=name, dtype=dtype)
        self.protocol = protocol

    def per_user(self, ranks: tf.Tensor) -> tf.Tensor:
        """The metric's value for each rank, [batch] float (ranks already cast to float)."""
        raise NotImplementedError

    def update_state(self, ranks, sample_weight=None):
        ranks = tf.cast(ranks, self.dtype)
        return super().update_state(self.per_user(ranks), sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), "protocol": self.protocol}


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    return k


class HitRate(RankingMetric):
    """HR@k: the fraction of users whose target ranks within the top k.

    Named `{protocol}_hr@{k}` (`hr@{k}` without a protocol) unless `name` is given.
    """

    def __init__(
        self, k: int, name: Optional[str] = None, protocol: Optional[str] = None, dtype=None
    ):
        self.k = _check_k(k)
        super().__init__(name or default_name(f"hr@{k}", protocol), protocol, dtype)

    def per_user(self, ranks):
        return tf.cast(ranks <= self.k, self.dtype)

    def get_config(self):
        return {**super().get_config(), "k": self.k}


class NDCG(RankingMetric):
    """NDCG@k with one relevant item: 1 / log2(rank + 1) within the top k, else 0.

    Named `{protocol}_ndcg@{k}` (`ndcg@{k}` without a protocol) unless `name` is given.
    """

    def __init__(
        self, k: int, name: Optional[str] = None, protocol: Optional[str] = None, dtype=None
    ):
        self.k = _check_k(k)
        super().__init__(name or default_name(f"ndcg@{k}", protocol), protocol, dtype)

    def per_user(self, ranks):
        gain = math.log(2.0) / tf.math.log(ranks + 1.0)
        return tf.where(ranks <= self.k, gain, tf.zeros_like(gain))

    def get_config(self):
        return {**super().get_config(), "k": self.k}


class MRR(RankingMetric):
    """Mean reciprocal rank, 1 / rank, not cut off at any k.

    Named `{protocol}_mrr` (`mrr` without a protocol) unless `name` is given.
    """

    def __init__(self, name: Optional[str] = None, protocol: Optional[str] = None, dtype=None):
        super().__init__(name or default_name("mrr", protocol), protocol, dtype)

    def per_user(self, ranks):
        return 1.0 / ranks


def ranking_metrics(
    protocol: str,
    hit_rate_ks: Sequence[int] = HIT_RATE_KS,
    ndcg_ks: Sequence[int] = NDCG_KS,
) -> list[RankingMetric]:
    """HR@k, NDCG@k and MRR of one protocol, named `{protocol}_hr@10`, `{protocol}_mrr`, ...

    Create them inside `strategy.scope()` when evaluating under `tf.distribute`.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}; expected one of {PROTOCOLS}.")
    return (
        [HitRate(k, protocol=protocol) for k in hit_rate_ks]
        + [NDCG(k, protocol=protocol) for k in ndcg_ks]
        + [MRR(protocol=protocol)]
    )
