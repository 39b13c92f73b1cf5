"""Plain NumPy/Python reference for the ranking metrics, written independently of TensorFlow.

Ranks with pessimistic ties: 1 + the number of counted candidates scoring >= the target.
"""

import math

import numpy as np

HIT_RATE_KS = (1, 5, 10, 20)
NDCG_KS = (5, 10, 20)


def rank_of(target_score, candidate_scores):
    return 1 + sum(1 for s in candidate_scores if s >= target_score)


def sampled_ranks(target_scores, negative_scores):
    return np.array([rank_of(t, negs) for t, negs in zip(target_scores, negative_scores)])


def full_ranks(scores, targets, history=None, exclude_history=False):
    """scores [B, N + 2]; candidates are the items 1..N other than the target (and history)."""
    num_items = scores.shape[1] - 2
    ranks = []
    for b, target in enumerate(targets):
        banned = {int(target)}
        if exclude_history:
            banned |= {int(i) for i in history[b] if i != 0}
        candidates = [scores[b, i] for i in range(1, num_items + 1) if i not in banned]
        ranks.append(rank_of(scores[b, target], candidates))
    return np.array(ranks)


def metric_values(ranks, protocol, sample_weight=None):
    """{name: value} with the names of `s3rec_tf.metrics.ranking_metrics(protocol)`."""
    weights = np.ones(len(ranks)) if sample_weight is None else np.asarray(sample_weight, float)
    total = weights.sum()

    def mean(values):
        return float(sum(w * v for w, v in zip(weights, values)) / total)

    out = {}
    for k in HIT_RATE_KS:
        out[f"{protocol}_hr@{k}"] = mean([1.0 if r <= k else 0.0 for r in ranks])
    for k in NDCG_KS:
        gains = [1.0 / math.log2(r + 1) if r <= k else 0.0 for r in ranks]
        out[f"{protocol}_ndcg@{k}"] = mean(gains)
    out[f"{protocol}_mrr"] = mean([1.0 / r for r in ranks])
    return out


def random_case(seed, batch=37, num_items=40, num_negatives=99, history_length=12, levels=6):
    """Integer-valued scores (many ties), targets, 0-padded histories (containing the target
    for some users) and negative scores."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, size=(batch, num_items + 2)).astype(np.float32)
    # Padding and mask ids score highest: they must never count.
    scores[:, 0] = levels
    scores[:, -1] = levels
    targets = rng.integers(1, num_items + 1, size=batch)
    history = rng.integers(1, num_items + 1, size=(batch, history_length))
    lengths = rng.integers(0, history_length + 1, size=batch)
    history[np.arange(history_length)[None, :] >= lengths[:, None]] = 0
    history[::5, 0] = targets[::5]
    negative_scores = rng.integers(0, levels, size=(batch, num_negatives)).astype(np.float32)
    target_scores = scores[np.arange(batch), targets]
    return {
        "scores": scores,
        "targets": targets,
        "history": history,
        "target_scores": target_scores,
        "negative_scores": negative_scores,
    }
