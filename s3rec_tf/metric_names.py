"""What the ranking metrics are called, without TensorFlow: the evaluation protocols, the
metrics' names (`{protocol}_{metric}`, e.g. "full_ndcg@10") and the headline metrics that
summaries show. The metrics themselves are `s3rec_tf.metrics`.

TensorFlow-free so that a configuration check (`Config.validate`: `finetune.monitor`) starts no
TensorFlow runtime, and the sweep and the report name the metrics without loading it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

# "full_history_zero": the full protocol as BSARec / WEARec evaluate it, for comparison with
# their published numbers: the history items' scores are set to 0 instead of leaving them out.
PROTOCOLS = ("sampled", "full", "full_history_zero")
HIT_RATE_KS = (1, 5, 10, 20)
NDCG_KS = (5, 10, 20)
# The metrics a summary shows (the training CLI's last line, the sweep's progress and --status,
# the report's tables and plots), per protocol in HEADLINE_PROTOCOLS, as results.json keys them.
HEADLINE = ("hr@10", "ndcg@10")
HEADLINE_PROTOCOLS = ("sampled", "full")


def default_name(base: str, protocol: Optional[str]) -> str:
    """ "hr@10", "full" -> "full_hr@10"; the base alone without a protocol."""
    return f"{protocol}_{base}" if protocol else base


def names(protocols: Sequence[str] = PROTOCOLS) -> list[str]:
    """Every metric name `metrics.ranking_metrics` makes for these protocols (e.g. "full_ndcg@10").

    Spelled out rather than read off metric objects: making a Keras metric creates variables,
    which starts TensorFlow's runtime, and a configuration check must not (the training CLI sets
    the thread pools after it, and they cannot change once the runtime runs).
    """
    bases = [f"hr@{k}" for k in HIT_RATE_KS] + [f"ndcg@{k}" for k in NDCG_KS] + ["mrr"]
    return [default_name(base, protocol) for protocol in protocols for base in bases]


def protocol_of(name: str) -> tuple[str, str]:
    """ "full_history_zero_hr@10" -> ("full_history_zero", "hr@10"): a metric's protocol and
    the metric (the longest protocol that prefixes the name)."""
    for protocol in sorted(PROTOCOLS, key=len, reverse=True):
        if name.startswith(protocol + "_"):
            return protocol, name[len(protocol) + 1 :]
    raise ValueError(f"{name!r} names no protocol of {PROTOCOLS}.")


def headline(values: dict) -> str:
    """One protocol's headline metrics of results.json, e.g. "HR@10 0.5507 NDCG@10 0.3695"
    ("nan" for a metric it lacks)."""
    return " ".join(f"{m.upper()} {values.get(m, float('nan')):.4f}" for m in HEADLINE)
