"""The two training models rebuild from their configs (`get_config` -> `from_config`), checked by
the shared layer-test helper: the same config, the same outputs once the weights are copied, one
fit step reaching every weight, and a Keras SavedModel round trip."""

import numpy as np
import pytest
import tensorflow as tf

from keras_models import S3RecEncoder, S3RecPretrainHeads
from s3rec_tf.finetune import S3RecRecommender
from s3rec_tf.pretrain import S3RecPretrainer

from layer_test_case import check_layer
from synthetic_pretrain import item_attributes, make_examples, pad_batch

NUM_ITEMS, NUM_ATTRIBUTES, HIDDEN = 30, 7, 16


def _encoder():
    return S3RecEncoder(
        NUM_ITEMS, max_seq_length=8, hidden_size=HIDDEN, num_heads=2, name="encoder"
    )


@pytest.mark.slow
def test_pretrainer_config_round_trip(tmp_path):
    model = S3RecPretrainer(
        _encoder(),
        S3RecPretrainHeads(NUM_ATTRIBUTES, hidden_size=HIDDEN, aap_rank=4, name="heads"),
        item_attributes(NUM_ITEMS, NUM_ATTRIBUTES),
        aap_weight=0.2,
        mip_weight=1.0,
        sp_weight=0.25,
        head_positions="gather",
    )
    config = model.get_config()
    assert config["name"] == model.name and config["aap_weight"] == 0.2
    assert config["sp_weight"] == 0.25 and config["head_positions"] == "gather"
    clone = S3RecPretrainer.from_config(config)
    np.testing.assert_array_equal(clone.item_attribute_ids, model.item_attribute_ids)
    assert clone.encoder.get_config() == model.encoder.get_config()
    assert clone.heads.get_config() == model.heads.get_config()

    batch = pad_batch(make_examples(12, NUM_ITEMS, 8, seed=3, mask_rate=0.4), width=8)
    check_layer(
        model,
        batch,
        tmp_path,
        expected_output_shapes={"aap": (), "map": (), "mip": (), "sp": ()},
        learning_rate=0.05,
    )


@pytest.mark.slow
def test_recommender_config_round_trip(tmp_path):
    model = S3RecRecommender(
        _encoder(),
        loss="gbce",
        loss_config={"gbce_t": 0.5},
        exclude_history=True,
        targets_per_example=3.5,
    )
    config = model.get_config()
    assert config["encoder"]["config"]["num_items"] == NUM_ITEMS
    assert {k: config[k] for k in ("loss", "loss_config", "exclude_history")} == {
        "loss": "gbce",
        "loss_config": {"gbce_t": 0.5},
        "exclude_history": True,
    }
    restored = S3RecRecommender.from_config(config)
    assert restored.targets_per_example == 3.5
    assert restored.next_item_loss.gbce_t == 0.5
    sampled = S3RecRecommender(
        _encoder(), loss="sampled_softmax", loss_config={"num_samples": 7, "seed": 3}
    )
    assert S3RecRecommender.from_config(sampled.get_config()).next_item_loss.get_config() == {
        "num_samples": 7,
        "sampler": "uniform",
        "logq_correction": True,
        "seed": 3,
        "in_batch_negatives": False,
    }

    rng = np.random.default_rng(0)
    inputs = rng.integers(1, NUM_ITEMS + 1, [6, 8])
    inputs[0, :5] = 0  # a left-padded row
    check_layer(model, tf.constant(inputs), tmp_path, expected_output_shapes=[(6, HIDDEN)])
