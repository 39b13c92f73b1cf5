"""Fine-tuning losses against NumPy, and training that learns on structured data."""

import numpy as np
import pytest
import tensorflow as tf  # noqa: E402

from keras_models import S3RecEncoder
from s3rec_tf import builders
from s3rec_tf import data as data_lib
from s3rec_tf import finetune as finetune_lib

from dataset_fixture import small_dataset  # noqa: E402


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _gbce_beta(k, num_items, t):
    """gSASRec (Petrov & Macdonald, RecSys 2023): with k negatives sampled uniformly from the
    |I| - 1 non-positive items, the sampling rate is alpha = k / (|I| - 1), and the positive's
    predicted probability is raised to beta = alpha (t (1 - 1/alpha) + 1/alpha). Multiplied
    out: beta = t alpha - t + 1 = 1 - t (1 - alpha), i.e. a straight line in t from 1 (t = 0,
    plain BCE) to alpha (t = 1, fully calibrated: sigmoid(s+)^alpha undoes the sampling)."""
    alpha = k / (num_items - 1)
    return 1.0 - t * (1.0 - alpha)


def _batch(rng, num_items, batch=4, width=6, k=3):
    lengths = rng.integers(1, width + 1, size=batch)
    inputs = np.zeros([batch, width], np.int32)
    targets = np.zeros([batch, width], np.int32)
    negatives = np.zeros([batch, width, k], np.int32)
    for b, n in enumerate(lengths):
        inputs[b, width - n :] = rng.integers(1, num_items + 1, n)
        targets[b, width - n :] = rng.integers(1, num_items + 1, n)
        negatives[b, width - n :] = rng.integers(1, num_items + 1, [n, k])
    return {
        data_lib.INPUT_IDS: tf.constant(inputs),
        data_lib.TARGET_IDS: tf.constant(targets),
        data_lib.NEGATIVE_IDS: tf.constant(negatives),
    }


def _oracle(loss, states, table, batch, num_items, gbce_t=0.75):
    targets = batch[data_lib.TARGET_IDS].numpy()
    negatives = batch[data_lib.NEGATIVE_IDS].numpy()
    total, count = 0.0, 0
    for b, w in zip(*np.nonzero(targets)):
        h = states[b, w]
        pos = h @ table[targets[b, w]]
        if loss == "ce":
            logits = table[1 : num_items + 1] @ h
            total += np.logaddexp.reduce(logits) - pos
        else:
            neg = table[negatives[b, w]] @ h
            beta = _gbce_beta(len(neg), num_items, gbce_t) if loss == "gbce" else 1.0
            # -log(sigmoid(s+) ** beta) - sum log(1 - sigmoid(s-))
            total += -beta * np.log(_sigmoid(pos)) - np.log(1.0 - _sigmoid(neg)).sum()
        count += 1
    return total / count


@pytest.mark.parametrize("loss", ["bce", "gbce", "ce"])
def test_losses_match_numpy(loss):
    num_items = 30
    encoder = S3RecEncoder(
        num_items, max_seq_length=8, hidden_size=16, num_heads=2, dropout=0.0, attention_dropout=0.0
    )
    model = finetune_lib.S3RecRecommender(encoder, loss=loss)
    batch = _batch(np.random.default_rng(0), num_items)
    loss_sum, count = model.compute_loss_terms(batch, training=False)
    states = encoder(batch[data_lib.INPUT_IDS], causal=True).numpy()
    want = _oracle(loss, states, encoder.item_embeddings.numpy(), batch, num_items)
    np.testing.assert_allclose(float(loss_sum / count), want, rtol=1e-5)


@pytest.mark.parametrize("t", [0.0, 0.5, 1.0])
def test_gbce_raises_the_positive_probability_to_the_papers_beta(t):
    """At t = 0 gBCE is BCE; at t = 1 the positive term is alpha = k / (N - 1) times BCE's."""
    num_items, k = 30, 3
    encoder = S3RecEncoder(
        num_items, max_seq_length=8, hidden_size=16, dropout=0.0, attention_dropout=0.0
    )
    batch = _batch(np.random.default_rng(3), num_items, k=k)
    gbce = finetune_lib.S3RecRecommender(encoder, loss="gbce", loss_config={"gbce_t": t})
    loss_sum, _ = gbce.compute_loss_terms(batch, training=False)
    states = encoder(batch[data_lib.INPUT_IDS], causal=True).numpy().astype(np.float64)
    table = encoder.item_embeddings.numpy().astype(np.float64)
    targets, negatives = batch[data_lib.TARGET_IDS].numpy(), batch[data_lib.NEGATIVE_IDS].numpy()
    real = targets > 0
    pos = np.einsum("bwd,bwd->bw", states, table[targets])[real]
    neg = np.einsum("bwd,bwkd->bwk", states, table[negatives])[real]
    positive_term = -np.log(_sigmoid(pos)).sum()
    negative_term = -np.log(1.0 - _sigmoid(neg)).sum()
    beta = {0.0: 1.0, 0.5: 0.5 + 0.5 * k / (num_items - 1), 1.0: k / (num_items - 1)}[t]
    np.testing.assert_allclose(float(loss_sum), beta * positive_term + negative_term, rtol=1e-5)


def test_bce_with_one_negative_is_the_reference_formula():
    """The reference: -log(sigmoid(s+) + 1e-24) - log(1 - sigmoid(s-) + 1e-24), mean over
    targets."""
    num_items = 30
    encoder = S3RecEncoder(
        num_items, max_seq_length=8, hidden_size=16, dropout=0.0, attention_dropout=0.0
    )
    model = finetune_lib.S3RecRecommender(encoder, loss="bce")
    batch = _batch(np.random.default_rng(1), num_items, k=1)
    loss_sum, count = model.compute_loss_terms(batch, training=False)
    states = encoder(batch[data_lib.INPUT_IDS], causal=True).numpy()
    table = encoder.item_embeddings.numpy()
    targets = batch[data_lib.TARGET_IDS].numpy()
    negatives = batch[data_lib.NEGATIVE_IDS].numpy()[..., 0]
    pos = np.einsum("bwd,bwd->bw", states, table[targets])
    neg = np.einsum("bwd,bwd->bw", states, table[negatives])
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    is_target = (targets > 0).astype(np.float64)
    want = np.sum(-np.log(sig(pos) + 1e-24) * is_target - np.log(1 - sig(neg) + 1e-24) * is_target)
    want /= is_target.sum()
    np.testing.assert_allclose(float(loss_sum / count), want, rtol=1e-5)


def test_dataset_normalizer_weighs_each_target_position_the_same():
    """With targets_per_example t, a step follows the gradient of loss_sum / (batch size * t),
    whatever the batch's own number of targets (the reference's objective)."""
    num_items, t = 30, 2.5
    encoder = S3RecEncoder(
        num_items, max_seq_length=8, hidden_size=16, dropout=0.0, attention_dropout=0.0
    )
    model = finetune_lib.S3RecRecommender(encoder, loss="bce", targets_per_example=t)
    batch = _batch(np.random.default_rng(2), num_items, batch=5)
    model(batch[data_lib.INPUT_IDS])
    with tf.GradientTape() as tape:
        loss_sum, count = model.compute_loss_terms(batch, training=False)
        want_loss = loss_sum / (5 * t)
    assert float(count) != 5 * t  # the two normalizers differ on this batch
    gradients = tape.gradient(want_loss, model.trainable_variables)
    before = [v.numpy() for v in model.trainable_variables]
    model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=1.0))
    model.train_step(batch)
    for g, b, v in zip(gradients, before, model.trainable_variables):
        np.testing.assert_allclose(
            b - v.numpy(), tf.convert_to_tensor(g).numpy(), rtol=1e-4, atol=1e-7
        )
    # Its logged loss stays the mean per target position seen.
    np.testing.assert_allclose(
        float(model.loss_tracker.result()), float(loss_sum / count), rtol=1e-5
    )


def test_build_recommender_needs_the_data_mean_for_the_dataset_normalizer():
    from s3rec_tf import config as config_lib

    encoder = S3RecEncoder(10, max_seq_length=4, hidden_size=8, num_heads=2)
    config = config_lib.Config()
    assert config.finetune.loss_normalizer == "dataset"
    with pytest.raises(ValueError, match="targets_per_example"):
        builders.recommender_from_config(config, encoder)
    assert builders.recommender_from_config(config, encoder, 3.0).targets_per_example == 3.0
    batch_config = config.replace(**{"finetune.loss_normalizer": "batch"}).validate()
    assert builders.recommender_from_config(batch_config, encoder, 3.0).targets_per_example is None
    with pytest.raises(config_lib.ConfigError, match="finetune.loss_normalizer"):
        config.replace(**{"finetune.loss_normalizer": "mean"}).validate()
    with pytest.raises(ValueError, match="positive"):
        finetune_lib.S3RecRecommender(encoder, targets_per_example=0.0)


def test_scores_are_last_position_times_item_table():
    encoder = S3RecEncoder(20, max_seq_length=8, hidden_size=16, dropout=0.0, attention_dropout=0.0)
    model = finetune_lib.S3RecRecommender(encoder)
    x = tf.constant([[0, 0, 3, 4], [1, 2, 3, 4]])
    scores = model.score_all(x).numpy()
    states = encoder(x, causal=True).numpy()[:, -1]
    np.testing.assert_allclose(
        scores, states @ encoder.item_embeddings.numpy().T, rtol=1e-5, atol=1e-6
    )
    assert scores.shape == (2, 22)


@pytest.mark.parametrize(
    "loss, loss_config",
    [("bce", None), ("ce", None), ("sampled_softmax", {"num_samples": 16, "seed": 1})],
)
@pytest.mark.slow
def test_training_learns_and_beats_popularity(tmp_path, loss, loss_config):
    """On ring-structured sequences the next item is predictable: loss falls, HR@5 is high."""
    metadata, sequences = small_dataset(
        str(tmp_path), num_users=120, num_items=40, max_seq_length=10
    )
    num_items = metadata["num_items"]
    tf.keras.utils.set_random_seed(0)
    encoder = S3RecEncoder(
        num_items,
        max_seq_length=10,
        hidden_size=32,
        num_heads=2,
        dropout=0.1,
        attention_dropout=0.1,
    )
    model = finetune_lib.S3RecRecommender(encoder, loss=loss, loss_config=loss_config)
    model.compile(optimizer=tf.keras.optimizers.Adam(5e-3))
    train = data_lib.finetune_train_dataset(str(tmp_path), num_items, 32, 10, 1, seed=0)
    test = data_lib.eval_dataset(str(tmp_path), "test", 64, 10)
    history = model.fit(train, epochs=25, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.6 * losses[0], losses
    results = finetune_lib.evaluate(model, test)
    # Popularity on the full protocol: top-5 by training counts.
    counts = np.zeros(num_items + 2)
    for s in sequences.values():
        np.add.at(counts, s[:-2], 1)
    top5 = set(np.argsort(-counts[1 : num_items + 1], kind="stable")[:5] + 1)
    popularity_hr5 = np.mean([s[-1] in top5 for s in sequences.values()])
    assert results["full_hr@5"] > popularity_hr5 + 0.3, (results, popularity_hr5)
