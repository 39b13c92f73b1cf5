"""The real evaluation path against the NumPy oracle.

`S3RecRecommender` built from a Config evaluates the eval split as tf.data serves it (negatives
gathered from the data, padded where users have fewer, `finetune.exclude_history` passed from
the config); the oracle reads the same TFRecords with plain protobuf parsing, computes the
scores with the NumPy encoder and ranks with `ranking_oracle`.
"""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf  # noqa: E402  (after s3rec_tf selected Keras 2)
from test_encoder import numpy_encoder  # noqa: E402

from keras_models import S3RecEncoder
from s3rec_tf import builders, schema
from s3rec_tf import config as config_lib
from s3rec_tf import data as data_lib
from s3rec_tf import finetune as finetune_lib

import ranking_oracle  # noqa: E402
from dataset_fixture import structured_sequences, write_dataset  # noqa: E402

NUM_ITEMS, MAX_LEN = 40, 6


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data"))
    sequences = structured_sequences(num_users=45, num_items=NUM_ITEMS, seed=3)
    attributes = {i: [1 + i % 4] for i in range(1, NUM_ITEMS + 1)}
    # 30 negatives where some users have fewer unseen items: batches hold padded negatives.
    write_dataset(out, sequences, NUM_ITEMS, attributes, 4, max_seq_length=16, num_negatives=30)
    return out


def _examples(data_dir, split):
    """The split's examples, parsed with protobuf alone (not through s3rec_tf.data)."""
    out = []
    for path in sorted(glob.glob(os.path.join(data_dir, schema.split_prefix(split)) + "*")):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            features = tf.train.Example.FromString(record).features.feature
            out.append({k: list(v.int64_list.value) for k, v in features.items()})
    return out


def _model(data_dir, exclude_history, eval_item_chunk=65536):
    config = (
        config_lib.Config()
        .replace(
            **{
                "model.hidden_size": 16,
                "model.num_heads": 2,
                "model.max_seq_length": MAX_LEN,
                "finetune.exclude_history": exclude_history,
                "finetune.eval_item_chunk": eval_item_chunk,
            }
        )
        .validate()
    )
    tf.keras.utils.set_random_seed(11)
    encoder = S3RecEncoder(
        NUM_ITEMS, max_seq_length=MAX_LEN, hidden_size=16, num_heads=2, num_layers=2
    )
    encoder.build(None)
    rng = np.random.default_rng(5)  # spread-out scores: no rank hangs on float rounding
    for weight in encoder.weights:
        weight.assign(rng.normal(scale=0.3, size=weight.shape).astype(np.float32))
    model = builders.recommender_from_config(config, encoder, targets_per_example=3.0)
    model.compile(optimizer="adam")
    return model


def _oracle(model, examples, exclude_history):
    histories = [e[schema.HISTORY] for e in examples]
    ids = np.zeros([len(examples), MAX_LEN], np.int64)  # the last MAX_LEN items, left-padded
    for row, history in enumerate(histories):
        window = history[-MAX_LEN:]
        ids[row, MAX_LEN - len(window) :] = window
    states = numpy_encoder(model.encoder, ids, causal=True)[:, -1].astype(np.float64)
    scores = states @ model.encoder.item_embeddings.numpy().astype(np.float64).T
    targets = np.array([e[schema.TARGET][0] for e in examples])
    sampled = np.array(
        [
            ranking_oracle.rank_of(scores[b, t], scores[b, e[schema.NEGATIVES]])
            for b, (t, e) in enumerate(zip(targets, examples))
        ]
    )
    width = max(map(len, histories))
    padded = np.array([h + [0] * (width - len(h)) for h in histories])
    full = ranking_oracle.full_ranks(scores, targets, padded, exclude_history=exclude_history)
    return {
        **ranking_oracle.metric_values(sampled, "sampled"),
        **ranking_oracle.metric_values(full, "full"),
    }


@pytest.mark.parametrize("split", ["valid", "test"])
@pytest.mark.parametrize("exclude_history", [True, False])
def test_model_evaluation_equals_the_numpy_oracle(data_dir, split, exclude_history):
    examples = _examples(data_dir, split)
    negatives = {len(e[schema.NEGATIVES]) for e in examples}
    assert len(negatives) > 1  # some users' negatives are padded in their batch
    assert max(len(e[schema.HISTORY]) for e in examples) > MAX_LEN  # inputs are cut
    model = _model(data_dir, exclude_history)
    assert model.exclude_history is exclude_history
    # Batches of 7: an uneven last batch, and each batch padded to its own widths.
    got = finetune_lib.evaluate(model, data_lib.eval_dataset(data_dir, split, 7, MAX_LEN))
    want = _oracle(model, examples, exclude_history)
    assert set(got) == set(want)
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-5, abs=1e-6), name
    # The setting matters on these data: the other one gives other full-protocol metrics.
    other = _oracle(model, examples, not exclude_history)
    assert other["full_mrr"] != pytest.approx(want["full_mrr"], rel=1e-3)
    assert {k: v for k, v in other.items() if k.startswith("sampled")} == {
        k: v for k, v in want.items() if k.startswith("sampled")
    }
    # Scored 9 items at a time (40 items + padding + mask: 5 chunks, the last one short): the
    # same metrics to the last digit.
    chunked = _model(data_dir, exclude_history, eval_item_chunk=9)
    assert chunked.eval_item_chunk == 9
    assert finetune_lib.evaluate(chunked, data_lib.eval_dataset(data_dir, split, 7, MAX_LEN)) == got
