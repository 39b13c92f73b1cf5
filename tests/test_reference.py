"""Import of the original S3-Rec weights: names, layouts and the errors on mismatches."""

import numpy as np
import pytest
import tensorflow as tf

import keras_models  # noqa: F401  (Keras 2 first)
from keras_models import S3RecEncoder, S3RecPretrainHeads
from s3rec_tf.reference import load_reference_weights

NUM_ITEMS, NUM_ATTRIBUTES, D, MAX_LEN = 12, 5, 8, 6


def _state_dict(num_layers=2, rng=None):
    """Random arrays named and laid out as the reference PyTorch state dict (Linear: [out, in])."""
    rng = rng or np.random.default_rng(0)

    def rand(*shape):
        return rng.normal(size=shape).astype(np.float32)

    state = {
        "item_embeddings.weight": rand(NUM_ITEMS + 2, D),
        "attribute_embeddings.weight": rand(NUM_ATTRIBUTES + 1, D),
        "position_embeddings.weight": rand(MAX_LEN, D),
        "LayerNorm.weight": rand(D),
        "LayerNorm.bias": rand(D),
    }
    for i in range(num_layers):
        prefix = f"item_encoder.layer.{i}."
        for name in ("query", "key", "value", "dense"):
            state[f"{prefix}attention.{name}.weight"] = rand(D, D)
            state[f"{prefix}attention.{name}.bias"] = rand(D)
        state[f"{prefix}attention.LayerNorm.weight"] = rand(D)
        state[f"{prefix}attention.LayerNorm.bias"] = rand(D)
        state[f"{prefix}intermediate.dense_1.weight"] = rand(4 * D, D)
        state[f"{prefix}intermediate.dense_1.bias"] = rand(4 * D)
        state[f"{prefix}intermediate.dense_2.weight"] = rand(D, 4 * D)
        state[f"{prefix}intermediate.dense_2.bias"] = rand(D)
        state[f"{prefix}intermediate.LayerNorm.weight"] = rand(D)
        state[f"{prefix}intermediate.LayerNorm.bias"] = rand(D)
    for name in ("aap_norm", "mip_norm", "map_norm", "sp_norm"):
        state[f"{name}.weight"] = rand(D, D)
        state[f"{name}.bias"] = rand(D)
    return {"weights/" + key: value for key, value in state.items()}


def _encoder(num_layers=2, num_items=NUM_ITEMS):
    return S3RecEncoder(
        num_items=num_items,
        max_seq_length=MAX_LEN,
        hidden_size=D,
        num_layers=num_layers,
        num_heads=2,
    )


def _heads(aap_rank=None):
    return S3RecPretrainHeads(NUM_ATTRIBUTES, hidden_size=D, aap_rank=aap_rank)


def test_every_array_lands_in_its_layer_with_the_right_layout(tmp_path):
    state = _state_dict()
    path = str(tmp_path / "reference.npz")
    np.savez(path, **state)
    encoder, heads = _encoder(), _heads()
    loaded = load_reference_weights(path, encoder, heads)
    assert loaded == sorted(state)

    np.testing.assert_array_equal(
        encoder.item_embeddings.numpy(), state["weights/item_embeddings.weight"]
    )
    np.testing.assert_array_equal(
        encoder.embedding_layer_norm.gamma.numpy(), state["weights/LayerNorm.weight"]
    )
    block = encoder.blocks[1]
    query = state["weights/item_encoder.layer.1.attention.query.weight"]
    # y = x·Wᵀ + b, split per head: kernel[in, head, head_dim] = Wᵀ reshaped.
    np.testing.assert_array_equal(
        block.attention._query_dense.kernel.numpy(), query.T.reshape(D, 2, D // 2)
    )
    np.testing.assert_array_equal(
        block.attention._query_dense.bias.numpy(),
        state["weights/item_encoder.layer.1.attention.query.bias"].reshape(2, D // 2),
    )
    dense = state["weights/item_encoder.layer.1.attention.dense.weight"]
    np.testing.assert_array_equal(
        block.attention._output_dense.kernel.numpy(), dense.T.reshape(2, D // 2, D)
    )
    np.testing.assert_array_equal(
        block.intermediate_dense.kernel.numpy(),
        state["weights/item_encoder.layer.1.intermediate.dense_1.weight"].T,
    )
    np.testing.assert_array_equal(heads.aap.kernel.numpy(), state["weights/aap_norm.weight"].T)
    np.testing.assert_array_equal(heads.sp_norm.bias.numpy(), state["weights/sp_norm.bias"])
    np.testing.assert_array_equal(
        heads.attribute_embeddings.numpy(), state["weights/attribute_embeddings.weight"]
    )

    # The imported attention computes the reference's query projection h·Wᵀ + b.
    hidden = np.random.default_rng(1).normal(size=[3, D]).astype(np.float32)
    projected = block.attention._query_dense(hidden[:, None, :]).numpy().reshape(3, D)
    expected = hidden @ query.T + state["weights/item_encoder.layer.1.attention.query.bias"]
    np.testing.assert_allclose(projected, expected, rtol=1e-5, atol=1e-5)


def test_encoder_only_import_skips_the_head_weights():
    encoder = _encoder()
    loaded = load_reference_weights(_state_dict(), encoder)
    assert len(loaded) == 4 + 16 * 2
    assert not any("norm." in key and "LayerNorm" not in key for key in loaded)


def _assert_untouched(encoder, before):
    for weight, value in zip(encoder.weights, before):
        np.testing.assert_array_equal(weight.numpy(), value)


def test_shape_mismatch_names_the_array_and_assigns_nothing():
    encoder = _encoder(num_items=NUM_ITEMS + 1)
    encoder.build(None)
    before = [w.numpy() for w in encoder.weights]
    with pytest.raises(ValueError, match=r"item_embeddings.weight' has shape \(14, 8\)") as error:
        load_reference_weights(_state_dict(), encoder)
    assert "(15, 8)" in str(error.value)
    _assert_untouched(encoder, before)


def test_fewer_layers_than_the_file_is_refused():
    with pytest.raises(ValueError, match="nothing consumes.*item_encoder.layer.1"):
        load_reference_weights(_state_dict(num_layers=2), _encoder(num_layers=1))


def test_more_layers_than_the_file_is_refused():
    with pytest.raises(ValueError, match="missing 'weights/item_encoder.layer.2.attention.query"):
        load_reference_weights(_state_dict(num_layers=2), _encoder(num_layers=3))


def test_low_rank_heads_cannot_take_the_full_reference_matrix():
    with pytest.raises(ValueError, match="aap_norm: the reference head is a full d x d matrix"):
        load_reference_weights(_state_dict(), _encoder(), _heads(aap_rank=2))


def test_wrong_prefix_and_missing_file_are_reported(tmp_path):
    bare = {key[len("weights/") :]: value for key, value in _state_dict().items()}
    with pytest.raises(ValueError, match="no array name starts with 'weights/'"):
        load_reference_weights(bare, _encoder())
    assert len(load_reference_weights(bare, _encoder(), prefix="")) == 36
    with pytest.raises(FileNotFoundError, match="not found"):
        load_reference_weights(str(tmp_path / "absent.npz"), _encoder())
    not_npz = tmp_path / "bad.npz"
    not_npz.write_text("not an npz")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_reference_weights(str(not_npz), _encoder())


@pytest.mark.real_data
def test_the_shipped_reference_file_loads_completely(reference_npz):
    encoder, heads = S3RecEncoder(num_items=12101), S3RecPretrainHeads(637)
    loaded = load_reference_weights(reference_npz, encoder, heads)
    assert loaded == sorted(key for key in reference_npz if key.startswith("weights/"))
    assert len(loaded) == 45
    tf.debugging.assert_equal(
        encoder.position_embeddings, reference_npz["weights/position_embeddings.weight"]
    )
