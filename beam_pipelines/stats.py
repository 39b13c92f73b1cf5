"""Names shared by the job's steps: the Beam metrics namespace and the `stats` entries of
metadata.json (each counted by the step that drops the records; `job` sums them)."""

METRICS_NAMESPACE = "s3rec.preprocess"

DROPPED_BELOW_MIN_RATING = "dropped_below_min_rating"  # filtering
DROPPED_WITHOUT_RATING = "dropped_without_rating"  # filtering
DROPPED_DUPLICATE_EVENTS = "dropped_duplicate_events"  # histories
DROPPED_BY_KCORE_USERS = "dropped_by_kcore_users"  # kcore
DROPPED_BY_KCORE_INTERACTIONS = "dropped_by_kcore_interactions"  # kcore
KCORE_ROUNDS = "kcore_rounds"  # kcore
# Every stat metadata.json lists, zero when nothing was dropped.
STATS = (
    DROPPED_BELOW_MIN_RATING,
    DROPPED_WITHOUT_RATING,
    DROPPED_DUPLICATE_EVENTS,
    DROPPED_BY_KCORE_USERS,
    DROPPED_BY_KCORE_INTERACTIONS,
    KCORE_ROUNDS,
)
