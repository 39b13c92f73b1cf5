"""The fine-tuning loss registry and the sampled softmax against NumPy."""

import os

import numpy as np
import pytest
import tensorflow as tf

from s3rec_tf import config as config_lib
from s3rec_tf import losses

N, D = 9, 4


def _inputs(seed=0, batch=3, width=4):
    rng = np.random.default_rng(seed)
    states = rng.normal(size=[batch, width, D]).astype(np.float32)
    table = rng.normal(size=[N + 2, D]).astype(np.float32)
    targets = rng.integers(1, N + 1, size=[batch, width]).astype(np.int32)
    targets[0, :2] = 0  # positions without a target
    return states, targets, table


def _oracle(states, targets, table, negatives, log_q):
    """−log softmax of the target among {target} ∪ (negatives other than the target), with
    log q(item) subtracted from every logit; float64, one position at a time."""
    out = np.zeros(targets.shape)
    for b, w in np.ndindex(*targets.shape):
        h, t = states[b, w].astype(np.float64), targets[b, w]
        pos = h @ table[t] - log_q[t]
        neg = [h @ table[n] - log_q[n] for n in negatives if n not in (t, 0)]
        logits = np.array([pos, *neg])
        out[b, w] = np.logaddexp.reduce(logits) - pos
    return out


def test_registry_lists_every_loss_and_config_validates_against_it():
    assert set(losses.names()) == {"bce", "gbce", "ce", "sampled_softmax"}
    with pytest.raises(config_lib.ConfigError, match="finetune.loss"):
        config_lib.Config().replace(**{"finetune.loss": "softmax"}).validate()
    with pytest.raises(config_lib.ConfigError, match="finetune.sampler"):
        config_lib.Config().replace(**{"finetune.sampler": "zipf"}).validate()
    with pytest.raises(ValueError, match="registered: bce"):
        losses.make("softmax", N)
    with pytest.raises(ValueError, match="already registered"):
        losses.register("bce")(type("Again", (losses.NextItemLoss,), {}))


def test_sampled_softmax_with_logq_and_accidental_hits_matches_numpy():
    states, targets, table = _inputs()
    rng = np.random.default_rng(1)
    q = rng.uniform(0.5, 2.0, N)
    q /= q.sum()
    log_q = np.log(np.concatenate([[1.0], q, [1.0]])).astype(np.float32)
    negatives = np.array([targets[1, 0], 2, 5, 5, 7], np.int32)  # a hit for one position
    got = losses.sampled_softmax_per_position(states, targets, table, negatives, log_q).numpy()
    want = _oracle(states, targets, table, negatives, log_q)
    real = targets > 0
    np.testing.assert_allclose(got[real], want[real], rtol=2e-6, atol=2e-6)


def test_mixed_in_batch_negatives_with_their_logq_match_numpy():
    states, targets, table = _inputs(seed=3, batch=4, width=5)
    counts = np.arange(N + 2, dtype=np.float64) % 4 * 10  # a popularity, ids 0..N + 1
    k, step = 6, 7
    loss = losses.make(
        "sampled_softmax", N, num_samples=k, popularity=counts, seed=3, in_batch_negatives=True
    )
    assert loss.get_config()["in_batch_negatives"] is True
    sampled = loss.sample(step).numpy()
    in_batch = loss.in_batch_sample(targets, step).numpy()
    # Targets of the batch's positions, drawn by (seed, step): padding positions give 0.
    assert set(in_batch) <= set(targets.ravel()) and 0 in in_batch
    np.testing.assert_array_equal(in_batch, loss.in_batch_sample(targets, step).numpy())
    assert not np.array_equal(in_batch, loss.in_batch_sample(targets, step + 1).numpy())
    share = (counts[1 : N + 1] + 1) / (counts[1 : N + 1] + 1).sum()
    expected_count = k / N + np.count_nonzero(in_batch) * share  # uniform q = 1 / N
    log_q = np.log(np.concatenate([[1.0], expected_count, [1.0]]))
    want = _oracle(states, targets, table, np.concatenate([sampled, in_batch]), log_q)
    got = loss(states, targets, table, {}, step).numpy()
    real = targets > 0
    np.testing.assert_allclose(got[real], want[real], rtol=2e-6, atol=2e-6)
    with pytest.raises(ValueError, match="in_batch_negatives needs the items' training counts"):
        losses.make("sampled_softmax", N, in_batch_negatives=True)


def test_sampled_softmax_over_the_whole_catalogue_is_the_full_softmax():
    states, targets, table = _inputs(seed=2)
    every_item = np.arange(1, N + 1, dtype=np.int32)
    uniform = np.log(np.full(N + 2, 1.0 / N)).astype(np.float32)
    full = losses.make("ce", N)(states, targets, table, {}, 0).numpy()
    real = targets > 0
    for log_q in (uniform, None):
        sampled = losses.sampled_softmax_per_position(states, targets, table, every_item, log_q)
        np.testing.assert_allclose(sampled.numpy()[real], full[real], rtol=1e-5, atol=1e-6)


def test_samplers_draw_from_their_proposal_and_depend_only_on_seed_and_step():
    counts = np.zeros(N + 2)
    counts[1 : N + 1] = [50, 0, 10, 3, 200, 7, 1, 0, 30]
    sampler = losses.make(
        "sampled_softmax", N, num_samples=40_000, sampler="popularity", popularity=counts, seed=5
    )
    draws = sampler.sample(3).numpy()
    assert draws.min() >= 1 and draws.max() <= N
    q = (counts[1 : N + 1] + 1) / (counts[1 : N + 1] + 1).sum()
    freq = np.bincount(draws, minlength=N + 1)[1:] / len(draws)
    # Binomial sd of a frequency is sqrt(q (1 - q) / n) <= 0.0025 here: 5 sd.
    np.testing.assert_allclose(freq, q, atol=0.0125)
    np.testing.assert_array_equal(draws, sampler.sample(tf.constant(3, tf.int64)).numpy())
    assert not np.array_equal(draws, sampler.sample(4).numpy())
    uniform = losses.make("sampled_softmax", N, num_samples=40_000, seed=5).sample(0).numpy()
    np.testing.assert_allclose(np.bincount(uniform, minlength=N + 1)[1:] / 40_000, 1 / N, atol=0.01)
    with pytest.raises(ValueError, match="popularity"):
        losses.make("sampled_softmax", N, sampler="popularity")


def test_sampled_softmax_holds_no_catalogue_sized_activation():
    """Memory: [B, W, k] logits and the k gathered rows; nothing [.., N + 2] but the table."""
    num_items = 5_000
    loss = losses.make("sampled_softmax", num_items, num_samples=16, sampler="uniform")
    spec = (
        tf.TensorSpec([3, 4, D], tf.float32),
        tf.TensorSpec([3, 4], tf.int32),
        tf.TensorSpec([num_items + 2, D], tf.float32),
    )

    @tf.function(input_signature=spec)
    def step(states, targets, table):
        with tf.GradientTape() as tape:
            tape.watch(table)
            value = tf.reduce_sum(loss(states, targets, table, {}, 0))
        return tape.gradient(value, table)

    graph = step.get_concrete_function().graph
    shapes = [t.shape for op in graph.get_operations() for t in op.outputs]
    big = [s for s in shapes if s.rank and s.rank >= 2 and num_items + 2 in s.as_list()]
    # The table itself and its dense gradient only (Adam keeps slots of that size anyway).
    assert all(s.as_list() == [num_items + 2, D] for s in big), big
    full = losses.make("ce", num_items)
    graph = tf.function(lambda s, t, e: full(s, t, e, {}, 0)).get_concrete_function(*spec).graph
    assert any(
        t.shape.as_list() == [3, 4, num_items + 2]
        for op in graph.get_operations()
        for t in op.outputs
    )


def test_ce_whose_logits_cannot_fit_stops_before_any_work_naming_size_and_alternative(
    data_dir, monkeypatch
):
    gib = 2**30
    with pytest.raises(ValueError) as e:
        losses.LOSSES["ce"].check_fits(1_000_000, 256, 50, 8 * gib)
    message = str(e.value)
    assert "[batch 256, positions 50, items 1,000,002]" in message
    assert "47.7 GiB in float32, about 143.1 GiB live" in message and "8.0 GiB" in message
    assert "--loss sampled_softmax --num_samples 1024" in message
    losses.LOSSES["ce"].check_fits(12_101, 256, 50, 8 * gib)  # Beauty: 1.7 GiB live
    for name in ("bce", "gbce", "sampled_softmax"):  # nothing of theirs grows with N
        losses.LOSSES[name].check_fits(10**9, 256, 50, gib)

    # The training run's input check refuses it, on a machine whose memory is 1 MiB.
    from s3rec_tf import phases, runtime

    config = config_lib.Config().replace(
        **{"data.data_dir": data_dir, "finetune.loss": "ce", "model.max_seq_length": 10}
    )
    phases.check_inputs(config.validate())
    monkeypatch.setattr(runtime, "memory_bytes", lambda: 2**20)
    with pytest.raises(config_lib.ConfigError, match=f"{data_dir}: --loss ce computes"):
        phases.check_inputs(config.validate())
    phases.check_inputs(config.replace(**{"finetune.loss": "bce"}).validate())


def test_memory_bytes_is_the_machines_or_a_lower_cgroup_limit():
    from s3rec_tf import runtime

    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < runtime.memory_bytes() <= physical
