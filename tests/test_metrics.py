"""Ranking metrics against a plain NumPy oracle: ties, both protocols, history exclusion, any
batch split, and `model.evaluate` with a custom `test_step`."""

import math

import numpy as np
import pytest
import tensorflow as tf  # noqa: E402  (after s3rec_tf selected Keras 2)

from s3rec_tf import metric_names, metrics

import ranking_oracle as oracle

NAMES = {
    protocol: [f"{protocol}_hr@{k}" for k in (1, 5, 10, 20)]
    + [f"{protocol}_ndcg@{k}" for k in (5, 10, 20)]
    + [f"{protocol}_mrr"]
    for protocol in ("sampled", "full")
}


def _results(metric_list):
    return {m.name: float(m.result()) for m in metric_list}


def _assert_close(actual, expected):
    assert actual.keys() == expected.keys()
    for name in expected:
        assert actual[name] == pytest.approx(expected[name], abs=1e-6), name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_ranks_match_oracle_with_ties(seed):
    case = oracle.random_case(seed)
    ranks = metrics.sampled_ranks(case["target_scores"], case["negative_scores"])
    assert ranks.dtype == tf.int32
    expected = oracle.sampled_ranks(case["target_scores"], case["negative_scores"])
    np.testing.assert_array_equal(ranks.numpy(), expected)
    # Integer scores in 0..5 against 99 negatives: ties are everywhere, and they matter.
    strict = [1 + np.sum(n > t) for t, n in zip(case["target_scores"], case["negative_scores"])]
    assert np.all(expected >= strict) and np.any(expected > strict)
    # Padding columns (users with fewer negatives than the batch's width) do not count.
    padded = np.pad(case["negative_scores"], [(0, 0), (0, 3)], constant_values=99.0)
    mask = np.arange(padded.shape[1]) < case["negative_scores"].shape[1]
    masked = metrics.sampled_ranks(case["target_scores"], padded, np.tile(mask, (len(padded), 1)))
    np.testing.assert_array_equal(masked.numpy(), expected)


@pytest.mark.parametrize("exclude_history", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_full_ranks_match_oracle(seed, exclude_history):
    case = oracle.random_case(seed)
    ranks = metrics.full_ranking_ranks(
        case["scores"], case["targets"], history=case["history"], exclude_history=exclude_history
    )
    expected = oracle.full_ranks(case["scores"], case["targets"], case["history"], exclude_history)
    np.testing.assert_array_equal(ranks.numpy(), expected)


def test_full_ranks_hand_example():
    # N = 4 items; pad 0 and mask id 5 score highest and must not count.
    scores = np.array([[9.0, 1.0, 2.0, 2.0, 3.0, 9.0]] * 3, np.float32)
    targets = np.array([2, 2, 3])
    history = np.array([[4, 0], [2, 4], [0, 0]])
    # Row 0: item 3 ties and item 4 beats the target -> 3; with history {4}: 2.
    # Row 1: the target is in its own history; only item 4 leaves -> 2, and 3 without exclusion.
    np.testing.assert_array_equal(metrics.full_ranking_ranks(scores, targets).numpy(), [3, 3, 3])
    np.testing.assert_array_equal(
        metrics.full_ranking_ranks(scores, targets, history, exclude_history=True).numpy(),
        [2, 2, 3],
    )
    ragged = tf.ragged.constant([[4], [2, 4], []])
    np.testing.assert_array_equal(
        metrics.full_ranking_ranks(scores, targets, ragged, exclude_history=True).numpy(), [2, 2, 3]
    )


def test_full_ranks_with_history_scores_zero_hand_example():
    """BSARec / WEARec: history items keep competing, with score 0 (the target too if seen)."""
    # N = 5 items, ids 1..5; pad 0 and mask id 6 never count.
    scores = np.array(
        [
            [9.0, -1.0, -2.0, 0.5, -3.0, -0.5, 9.0],
            [9.0, -1.0, -2.0, 0.5, -3.0, -0.5, 9.0],
            [9.0, 2.0, 1.0, 0.5, 3.0, -0.5, 9.0],
        ],
        np.float32,
    )
    targets = np.array([1, 1, 2])
    history = np.array([[4, 0], [1, 5], [4, 5]])
    # Row 0: 4 is seen, its -3 becomes 0 and now beats the target's -1; 3 (0.5) beats it; 5
    # (-0.5) beats it; 2 (-2) does not -> rank 4. (Excluding history instead: 3 and 5 -> 3.)
    # Row 1: the target itself was seen: its score becomes 0; 5 becomes 0 and ties (counts
    # against the target); 3 (0.5) beats it -> rank 3.
    # Row 2: 4 (3.0) and 5 (-0.5) become 0; the target scores 1.0; only 1 (2.0) beats it -> 2.
    ranks = metrics.full_ranking_ranks_history_zero(scores, targets, history).numpy()
    np.testing.assert_array_equal(ranks, [4, 3, 2])
    ragged = tf.ragged.constant([[4], [1, 5], [4, 5]])
    np.testing.assert_array_equal(
        metrics.full_ranking_ranks_history_zero(scores, targets, ragged).numpy(), [4, 3, 2]
    )
    assert metric_names.protocol_of("full_history_zero_ndcg@10") == ("full_history_zero", "ndcg@10")
    assert metric_names.protocol_of("full_mrr") == ("full", "mrr")


def test_pessimistic_rank_ties_mask_and_nan():
    ranks = metrics.pessimistic_rank(
        [2.0, 2.0, 2.0], [[3.0, 2.0, 2.0, 1.0], [1.0, 1.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]]
    )
    np.testing.assert_array_equal(ranks.numpy(), [4, 1, 5])
    masked = metrics.pessimistic_rank(
        [2.0, 2.0], [[3.0, 2.0, 2.0, 1.0]] * 2, [[True, False, True, True], [False] * 4]
    )
    np.testing.assert_array_equal(masked.numpy(), [3, 1])
    nan = metrics.pessimistic_rank([np.nan, 1.0], [[0.0, 0.0, 0.0], [np.nan, 0.0, 2.0]])
    np.testing.assert_array_equal(nan.numpy(), [4, 3])


def test_bad_inputs_fail_with_clear_errors():
    scores = np.zeros((2, 6), np.float32)
    with pytest.raises(ValueError, match="needs the users' history"):
        metrics.full_ranking_ranks(scores, [1, 2], exclude_history=True)
    with pytest.raises(ValueError, match="scores must have rank 2"):
        metrics.full_ranking_ranks(np.zeros(6, np.float32), [1])
    with pytest.raises(ValueError, match="target_scores must have rank 1"):
        metrics.sampled_ranks(np.zeros((2, 1), np.float32), np.zeros((2, 3), np.float32))
    for bad_target in (0, 5):
        with pytest.raises(tf.errors.InvalidArgumentError, match="target id"):
            metrics.full_ranking_ranks(scores, [1, bad_target])
    with pytest.raises(tf.errors.InvalidArgumentError, match="history id"):
        metrics.full_ranking_ranks(scores, [1, 2], [[6], [0]], exclude_history=True)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        metrics.HitRate(0)
    with pytest.raises(ValueError, match="Unknown protocol"):
        metrics.ranking_metrics("partial")


def test_metric_formulas_on_known_ranks():
    ranks = [1, 3, 10, 11, 100]
    hr10, ndcg10, mrr = metrics.HitRate(10), metrics.NDCG(10), metrics.MRR()
    for m in (hr10, ndcg10, mrr):
        m.update_state(ranks)
    assert float(hr10.result()) == pytest.approx(3 / 5)
    assert float(ndcg10.result()) == pytest.approx((1 + 0.5 + 1 / math.log2(11)) / 5, abs=1e-7)
    assert float(mrr.result()) == pytest.approx((1 + 1 / 3 + 1 / 10 + 1 / 11 + 1 / 100) / 5)
    assert (hr10.name, ndcg10.name, mrr.name) == ("hr@10", "ndcg@10", "mrr")


@pytest.mark.parametrize("protocol", ["sampled", "full"])
def test_names_and_config_round_trip(protocol):
    metric_list = metrics.ranking_metrics(protocol)
    assert [m.name for m in metric_list] == NAMES[protocol]
    assert {m.protocol for m in metric_list} == {protocol}
    for m in metric_list:
        clone = type(m).from_config(m.get_config())
        assert clone.get_config() == m.get_config()


@pytest.mark.parametrize("protocol", ["sampled", "full"])
def test_any_batch_split_gives_the_oracle(protocol):
    case = oracle.random_case(3, batch=53)
    if protocol == "sampled":
        ranks = oracle.sampled_ranks(case["target_scores"], case["negative_scores"])
    else:
        ranks = oracle.full_ranks(case["scores"], case["targets"], case["history"], True)
    weights = np.random.default_rng(4).uniform(0.5, 2.0, size=len(ranks))
    expected = oracle.metric_values(ranks, protocol)
    expected_weighted = oracle.metric_values(ranks, protocol, weights)

    whole, chunked, weighted = (metrics.ranking_metrics(protocol) for _ in range(3))
    for m in whole:
        m.update_state(ranks)
    cuts = [0, 1, 2, 19, 20, 41, 53]
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        for m in chunked:
            m.update_state(ranks[lo:hi])
        for m in weighted:
            m.update_state(ranks[lo:hi], sample_weight=weights[lo:hi])
    _assert_close(_results(whole), expected)
    _assert_close(_results(chunked), expected)
    _assert_close(_results(weighted), expected_weighted)
    for m in chunked:
        m.reset_state()
        assert float(m.result()) == 0.0


def _chunk_case(seed, num_items=23, batch=9, dim=3):
    """Integer embeddings: integer scores, ties everywhere (across chunk borders too), a NaN
    item, histories holding the target and negatives padded with 0."""
    rng = np.random.default_rng(seed)
    users = rng.integers(-2, 3, (batch, dim)).astype(np.float32)
    table = rng.integers(-1, 2, (num_items + 2, dim)).astype(np.float32)
    table[7] = np.nan
    targets = rng.integers(1, num_items + 1, batch)
    history = rng.integers(0, num_items + 2, (batch, 6))
    history[0, 2] = targets[0]  # a target the user had before
    negatives = rng.integers(1, num_items + 1, (batch, 5))
    negatives[1, 3:] = 0
    return users, table, targets, negatives, history


@pytest.mark.parametrize("exclude_history", [False, True])
def test_ranks_by_item_chunks_equal_the_whole_score_matrix_for_every_chunk_size(exclude_history):
    for seed in range(3):
        users, table, targets, negatives, history = _chunk_case(seed)
        scores = users @ table.T
        target_scores = np.take_along_axis(scores, targets[:, None], 1)[:, 0]
        negative_scores = np.take_along_axis(scores, negatives, 1)
        expected = {
            "sampled": metrics.sampled_ranks(target_scores, negative_scores, negatives > 0),
            "full": metrics.full_ranking_ranks(scores, targets, history, exclude_history),
            "full_history_zero": metrics.full_ranking_ranks_history_zero(scores, targets, history),
        }
        assert np.ptp(expected["full"].numpy()) > 3  # ranks that tell chunkings apart
        for chunk_size in (1, 2, 3, 7, 24, 25, None, 10**6):
            ranks = metrics.ranks_by_item_chunks(
                users, table, targets, negatives, history, exclude_history, True, chunk_size
            )
            assert ranks.keys() == expected.keys()
            for protocol, want in expected.items():
                np.testing.assert_array_equal(
                    ranks[protocol].numpy(), want.numpy(), err_msg=f"{protocol} {chunk_size}"
                )
    # In a graph, with the chunk size fixed and the catalogue not a multiple of it.
    graph = tf.function(
        lambda *a: metrics.ranks_by_item_chunks(*a, exclude_history=exclude_history, chunk_size=4)
    )
    np.testing.assert_array_equal(
        graph(users, table, targets, negatives, history)["full"].numpy(),
        expected["full"].numpy(),
    )
    assert "full_history_zero" not in graph(users, table, targets, negatives, history)


def test_ranks_by_item_chunks_refuse_ids_outside_the_catalogue():
    users, table, targets, negatives, history = _chunk_case(0)
    bad = targets.copy()
    bad[2] = table.shape[0] - 1  # the mask id N + 1
    with pytest.raises(tf.errors.InvalidArgumentError, match="target id > N"):
        metrics.ranks_by_item_chunks(users, table, bad, negatives, history, chunk_size=5)
    bad_history = history.copy()
    bad_history[0, 0] = table.shape[0]
    with pytest.raises(tf.errors.InvalidArgumentError, match="history id > N"):
        metrics.ranks_by_item_chunks(users, table, targets, negatives, bad_history, chunk_size=5)


def test_rank_functions_compile_with_xla():
    case = oracle.random_case(5)

    @tf.function(jit_compile=True)
    def both(scores, targets, history, target_scores, negative_scores):
        return (
            metrics.full_ranking_ranks(scores, targets, history, exclude_history=True),
            metrics.sampled_ranks(target_scores, negative_scores),
        )

    inputs = ("scores", "targets", "history", "target_scores", "negative_scores")
    full, sampled = both(*(case[name] for name in inputs))
    np.testing.assert_array_equal(
        full.numpy(), oracle.full_ranks(case["scores"], case["targets"], case["history"], True)
    )
    np.testing.assert_array_equal(
        sampled.numpy(), oracle.sampled_ranks(case["target_scores"], case["negative_scores"])
    )


class ScoreTable(tf.keras.Model):
    """Tiny ranker: the scores of user u are row u of a fixed table; evaluation by `test_step`."""

    def __init__(self, table, exclude_history):
        super().__init__()
        self.table = tf.keras.layers.Embedding(
            table.shape[0], table.shape[1], embeddings_initializer=tf.constant_initializer(table)
        )
        self.exclude_history = exclude_history
        self.ranking_metrics = metrics.ranking_metrics("sampled") + metrics.ranking_metrics("full")

    @property
    def metrics(self):
        return self.ranking_metrics

    def call(self, users):
        return self.table(users)

    def test_step(self, batch):
        scores = self(batch["user"])
        targets = batch["target"]
        target_scores = tf.gather(scores, targets, batch_dims=1)
        ranks = {
            "sampled": metrics.sampled_ranks(target_scores, batch["negative_scores"]),
            "full": metrics.full_ranking_ranks(
                scores, targets, batch["history"], self.exclude_history
            ),
        }
        for m in self.ranking_metrics:
            m.update_state(ranks[m.protocol])
        return {m.name: m.result() for m in self.metrics}


@pytest.mark.parametrize("exclude_history", [False, True])
def test_model_evaluate_returns_every_metric_by_name(exclude_history):
    case = oracle.random_case(6, batch=45)
    model = ScoreTable(case["scores"], exclude_history)
    model.compile()
    dataset = tf.data.Dataset.from_tensor_slices(
        {
            "user": np.arange(45),
            "target": case["targets"],
            "history": case["history"],
            "negative_scores": case["negative_scores"],
        }
    ).batch(8)
    results = model.evaluate(dataset, return_dict=True, verbose=0)
    expected = {
        **oracle.metric_values(
            oracle.sampled_ranks(case["target_scores"], case["negative_scores"]), "sampled"
        ),
        **oracle.metric_values(
            oracle.full_ranks(case["scores"], case["targets"], case["history"], exclude_history),
            "full",
        ),
    }
    _assert_close({k: float(v) for k, v in results.items()}, expected)


def test_metric_names_are_those_of_the_metric_objects():
    assert metric_names.names() == [
        m.name for protocol in metric_names.PROTOCOLS for m in metrics.ranking_metrics(protocol)
    ]


def test_the_chunk_loops_score_one_chunk_at_a_time():
    """A while_loop runs up to 10 iterations at once by default: 10 chunks' scores alive together
    (5 GB more at a million items in the Keras evaluation); the chunked ranks must not."""
    table = tf.random.stateless_normal([30, 4], seed=[1, 2])
    graph = (
        tf.function(
            lambda users: metrics.ranks_by_item_chunks(
                users,
                table,
                tf.constant([1, 2]),
                tf.constant([[3, 4], [5, 6]]),
                tf.constant([[7], [8]]),
                exclude_history=True,
                chunk_size=8,
            )["full"]
        )
        .get_concrete_function(tf.TensorSpec([2, 4], tf.float32))
        .graph
    )
    loops = [op for op in graph.get_operations() if op.type in ("While", "StatelessWhile")]
    assert len(loops) == 2
    assert [op.get_attr("parallel_iterations") for op in loops] == [1, 1]
