"""LowRankAAP and the pretraining heads against NumPy oracles."""

import numpy as np
import pytest
import tensorflow as tf

import keras_models  # noqa: F401  (Keras 2 first)
from keras_models import LowRankAAP, S3RecPretrainHeads

from layer_test_case import check_layer


def _random(shape, seed):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("rank", [None, 1, 5, 8])
def test_low_rank_aap_matches_numpy(rank):
    d, num_attributes = 8, 11
    hidden, attributes = _random([3, 4, d], 0), _random([num_attributes, d], 1)
    layer = LowRankAAP(rank)
    logits = layer(hidden, attributes).numpy()
    assert logits.shape == (3, 4, num_attributes)

    bias = _random([d], 2)
    layer.bias.assign(bias)
    logits = layer(hidden, attributes).numpy()
    if rank is None:
        kernel = layer.kernel.numpy()
        expected = np.einsum("bwi,ij,aj->bwa", hidden, kernel, attributes)
    else:
        u, v = layer.kernel_u.numpy(), layer.kernel_v.numpy()
        assert u.shape == v.shape == (d, rank)
        expected = np.einsum("bwi,ir,jr,aj->bwa", hidden, u, v, attributes)
    expected += attributes @ bias
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_full_rank_is_the_reference_bilinear_form():
    # The reference: aap_norm(h) = h·Wᵀ + b (Linear, W stored [out, in]); score = aap_norm(h)·E_aᵀ.
    d, num_attributes = 6, 9
    hidden, attributes = _random([5, d], 3), _random([num_attributes, d], 4)
    weight, bias = _random([d, d], 5), _random([d], 6)
    layer = LowRankAAP(None)
    layer(hidden, attributes)
    layer.kernel.assign(weight.T)
    layer.bias.assign(bias)
    expected = (hidden @ weight.T + bias) @ attributes.T
    np.testing.assert_allclose(layer(hidden, attributes).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_parameter_counts():
    full, low = LowRankAAP(None), LowRankAAP(16)
    for layer in (full, low):
        layer.build([None, 64])
    # The bilinear factors alone (bias excluded), as in the issue: d² vs 2·d·r.
    assert full.factor_parameter_count == 4096
    assert low.factor_parameter_count == 2048
    # Keras' count includes the d bias terms.
    assert full.count_params() == 4096 + 64
    assert low.count_params() == 2048 + 64
    no_bias = LowRankAAP(16, use_bias=False)
    no_bias.build([None, 64])
    assert no_bias.count_params() == no_bias.factor_parameter_count == 2048


def test_low_rank_never_forms_the_d_by_d_product():
    # Only factor-sized tensors (d x r, A x r, positions x r) and the bias term are computed.
    layer = LowRankAAP(4)
    hidden, attributes = tf.constant(_random([7, 32], 7)), tf.constant(_random([13, 32], 8))
    graph = tf.function(layer).get_concrete_function(hidden, attributes).graph
    shapes = {tuple(t.shape) for op in graph.get_operations() for t in op.outputs}
    assert (32, 32) not in shapes
    assert (13, 4) in shapes and (7, 4) in shapes


def test_gradients_reach_both_factors_and_the_bias():
    layer = LowRankAAP(3)
    hidden, attributes = tf.constant(_random([4, 6], 9)), tf.constant(_random([5, 6], 10))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(hidden, attributes)))
    grads = tape.gradient(loss, [layer.kernel_u, layer.kernel_v, layer.bias])
    for variable, grad in zip([layer.kernel_u, layer.kernel_v, layer.bias], grads):
        assert grad is not None and np.abs(grad.numpy()).sum() > 0, variable.name

    # And they are the right gradients: compare with central differences on a few entries.
    u = layer.kernel_u
    for index in [(0, 0), (5, 2)]:
        eps = 1e-2
        original = u.numpy()
        values = []
        for sign in (1, -1):
            changed = original.copy()
            changed[index] += sign * eps
            u.assign(changed)
            values.append(float(tf.reduce_sum(tf.square(layer(hidden, attributes)))))
        u.assign(original)
        numeric = (values[0] - values[1]) / (2 * eps)
        np.testing.assert_allclose(grads[0].numpy()[index], numeric, rtol=2e-2, atol=1e-3)


def test_low_rank_initialisation_matches_full_rank_scale():
    tf.keras.utils.set_random_seed(0)
    layer = LowRankAAP(16, initializer_range=0.02)
    layer.build([None, 64])
    product = layer.kernel_u.numpy() @ layer.kernel_v.numpy().T
    assert 0.015 < product.std() < 0.025


@pytest.mark.parametrize("rank", [0, -3, 2.5, True, "8"])
def test_invalid_rank_is_refused_at_construction(rank):
    with pytest.raises(ValueError, match="rank"):
        LowRankAAP(rank)


def test_rank_above_hidden_size_is_refused():
    layer = LowRankAAP(65)
    with pytest.raises(ValueError, match="rank 65 exceeds the hidden size 64"):
        layer(tf.zeros([2, 64]), tf.zeros([3, 64]))


def test_attribute_width_mismatch_is_refused():
    layer = LowRankAAP(4)
    with pytest.raises(ValueError, match="width 32"):
        layer(tf.zeros([2, 64]), tf.zeros([3, 32]))


@pytest.mark.parametrize("rank", [None, 4])
def test_low_rank_aap_layer_checks(rank, tmp_path):
    d = 8
    check_layer(
        LowRankAAP(rank),
        _random([6, 5, d], 11),
        tmp_path,
        constants=[_random([10, d], 12)],
        expected_output_shapes=[(6, 5, 10)],
        expected_num_weights=2 if rank is None else 3,
        expected_num_params=(d * d if rank is None else 2 * d * rank) + d,
    )


def test_pretrain_heads_layer_checks(tmp_path):
    d, num_attributes = 8, 6
    heads = S3RecPretrainHeads(num_attributes, hidden_size=d, aap_rank=2, map_rank=None)
    check_layer(
        heads,
        _random([4, 3, d], 13),
        tmp_path,
        expected_output_shapes={
            "aap_logits": (4, 3, 7),
            "map_logits": (4, 3, 7),
            "mip_projection": (4, 3, d),
            "sp_projection": (4, 3, d),
        },
        # attribute table, aap (u, v, bias), map (kernel, bias), mip_norm and sp_norm (kernel,
        # bias each).
        expected_num_weights=10,
        expected_num_params=7 * d + (2 * d * 2 + d) + (d * d + d) + 2 * (d * d + d),
    )


def test_pretrain_heads_scores_match_numpy():
    d = 4
    heads = S3RecPretrainHeads(3, hidden_size=d, aap_rank=None, map_rank=2)
    heads.build()
    rng = np.random.default_rng(16)  # every weight random, the zero-initialized biases too
    for weight in heads.weights:
        weight.assign(rng.normal(size=weight.shape).astype(np.float32))
    hidden, candidates = _random([5, d], 14), _random([5, 2, d], 15)
    kernel, bias = heads.mip_norm.kernel.numpy(), heads.mip_norm.bias.numpy()
    expected = np.einsum("pd,pcd->pc", hidden @ kernel + bias, candidates)
    np.testing.assert_allclose(
        heads.mip_logits(hidden, candidates).numpy(), expected, rtol=1e-5, atol=1e-6
    )
    kernel, bias = heads.sp_norm.kernel.numpy(), heads.sp_norm.bias.numpy()
    expected = np.einsum("pd,pcd->pc", hidden @ kernel + bias, candidates)
    np.testing.assert_allclose(
        heads.sp_logits(hidden, candidates).numpy(), expected, rtol=1e-5, atol=1e-6
    )
    table = heads.attribute_embeddings.numpy()
    expected = (hidden @ heads.aap.kernel.numpy() + heads.aap.bias.numpy()) @ table.T
    np.testing.assert_allclose(heads.aap_logits(hidden).numpy(), expected, rtol=1e-5, atol=1e-6)
    # MAP at rank 2: (h·U)·(E·V)ᵀ + E·b, its own weights (not AAP's).
    map_ = heads.map
    expected = (hidden @ map_.kernel_u.numpy()) @ (table @ map_.kernel_v.numpy()).T
    expected += table @ map_.bias.numpy()
    assert expected.shape == (5, 4)
    np.testing.assert_allclose(heads.map_logits(hidden).numpy(), expected, rtol=1e-5, atol=1e-5)
    # On [batch, width, d] positions too, as pretraining applies it.
    grid = _random([2, 3, d], 17)
    expected = (grid @ map_.kernel_u.numpy()) @ (table @ map_.kernel_v.numpy()).T
    expected += table @ map_.bias.numpy()
    np.testing.assert_allclose(heads.map_logits(grid).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_mip_and_sp_kernels_start_different():
    # tf-keras initializers are stateless: a shared instance would give both the same values.
    tf.keras.utils.set_random_seed(1)
    heads = S3RecPretrainHeads(3, hidden_size=8)
    heads.build()
    assert not np.allclose(heads.mip_norm.kernel.numpy(), heads.sp_norm.kernel.numpy())
    assert not np.allclose(heads.aap.kernel.numpy(), heads.map.kernel.numpy())
