"""S3RecPretrainer: the four objectives against the reference and a NumPy oracle, train_step."""

import numpy as np
import pytest
import tensorflow as tf
from test_encoder import numpy_encoder

import keras_models  # noqa: F401  (Keras 2 first)
from keras_models import S3RecEncoder, S3RecPretrainHeads
from s3rec_tf import builders, runtime, schema
from s3rec_tf import config as config_lib
from s3rec_tf.pretrain import OBJECTIVES, S3RecPretrainer, attribute_id_table
from s3rec_tf.reference import load_reference_weights

from synthetic_pretrain import item_attributes, make_examples, pad_batch

NUM_ITEMS, NUM_ATTRIBUTES = 20, 6


def _reference_batch(reference_npz):
    return {key: reference_npz[f"pretrain/{key}"] for key in schema.PRETRAIN_SEQUENCES}


def _reference_item_attributes(reference_npz):
    """item -> attributes, read back from the batch's multi-hot targets (all this batch needs)."""
    mapping = {}
    items, targets = reference_npz["pretrain/pos_items"], reference_npz["pretrain/attributes"]
    for item, target in zip(items.ravel(), targets.reshape(-1, targets.shape[-1])):
        if item:
            mapping[int(item)] = np.flatnonzero(target).tolist()
    return {item: attrs for item, attrs in mapping.items() if attrs}


@pytest.mark.real_data
@pytest.mark.parametrize("head_positions", ["gather", "dense"])
def test_losses_match_the_reference(reference_npz, head_positions):
    model = S3RecPretrainer(
        S3RecEncoder(num_items=12101),
        S3RecPretrainHeads(637),
        _reference_item_attributes(reference_npz),
        head_positions=head_positions,
    )
    load_reference_weights(reference_npz, model.encoder, model.heads)
    batch = _reference_batch(reference_npz)
    losses = model.compute_losses(batch, training=False)
    # Our objectives are the reference's sums divided by the (global) batch size, 9 here. The
    # reference's BCE clamps log at -100; at these logits no term gets near the clamp, so the
    # exact softplus form agrees to float32 rounding, which depends on the CPU's kernels: MIP
    # 1.6e-7, MAP 3.2e-8, SP 8.3e-9 on the machines we ran it on; AAP below 1.6e-7 on earlier
    # ones and 6.8e-7 on an AMD EPYC with AVX-512. AAP sums 637 attribute terms at each of the 137
    # items, 8.7e4 terms, and a float32 sum of n terms may drift by log2(n) * 6e-8 = 1e-6, so AAP
    # is pinned at 2e-6 and the others at 5e-7. A LayerNorm epsilon of 1e-5 instead of 1e-12
    # moves every one of them further: AAP 8e-4, MIP 3.3e-6, SP 2.6e-6, MAP 9.4e-7.
    tolerance = {"aap": 2e-6, "mip": 5e-7, "map": 5e-7, "sp": 5e-7}
    errors = {}
    for name in OBJECTIVES:
        expected = float(reference_npz[f"pretrain/{name}_loss"])
        errors[name] = abs(float(losses[name]) * 9 - expected) / abs(expected)
    assert {name: e for name, e in errors.items() if not e <= tolerance[name]} == {}, errors

    # Padding the batch only to its own longest sequence changes nothing.
    lengths = reference_npz["pretrain/example_lengths"]
    width = int(lengths[:-1].max())
    wide = model.compute_losses({k: v[:-1] for k, v in batch.items()}, training=False)
    narrow = model.compute_losses({k: v[:-1, -width:] for k, v in batch.items()}, training=False)
    for name in OBJECTIVES:
        np.testing.assert_allclose(float(narrow[name]), float(wide[name]), rtol=1e-5, atol=1e-6)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _bce(probability, target):
    """PyTorch's BCELoss: log clamped at -100."""
    log_p = np.maximum(np.log(probability), -100.0)
    log_not_p = np.maximum(np.log(1.0 - probability), -100.0)
    return -(target * log_p + (1.0 - target) * log_not_p)


def numpy_losses(model, batch, multi_hot):
    """The four loss sums exactly as the reference computes them (sigmoid scores, BCE, masks)."""
    encoder, heads = model.encoder, model.heads
    items = batch[schema.MASKED_ITEM_SEQUENCE]
    hidden = numpy_encoder(encoder, items, causal=False).astype(np.float64)

    def last(key):
        return numpy_encoder(encoder, batch[key], causal=False)[:, -1].astype(np.float64)

    table = heads.attribute_embeddings.numpy().astype(np.float64)

    def attribute_scores(head, h):
        if head.rank is None:
            logits = (h @ head.kernel.numpy() + head.bias.numpy()) @ table.T
        else:
            u, v = head.kernel_u.numpy(), head.kernel_v.numpy()
            logits = (h @ u) @ (table @ v).T + table @ head.bias.numpy()
        return _sigmoid(logits)

    def dense(layer, x):
        return x @ layer.kernel.numpy() + layer.bias.numpy()

    targets = multi_hot[batch[schema.POS_ITEMS]]  # [B, W, A]
    is_masked = items == encoder.mask_id
    is_item = (items != 0) & ~is_masked
    aap = (_bce(attribute_scores(heads.aap, hidden), targets).sum(-1) * is_item).sum()
    map_ = (_bce(attribute_scores(heads.map, hidden), targets).sum(-1) * is_masked).sum()

    embeddings = encoder.item_embeddings.numpy().astype(np.float64)
    projected = dense(heads.mip_norm, hidden)
    pos = _sigmoid((projected * embeddings[batch[schema.POS_ITEMS]]).sum(-1))
    neg = _sigmoid((projected * embeddings[batch[schema.NEG_ITEMS]]).sum(-1))
    mip = (_bce(_sigmoid(pos - neg), 1.0) * is_masked).sum()

    context = dense(heads.sp_norm, last(schema.MASKED_SEGMENT_SEQUENCE))
    pos = _sigmoid((context * last(schema.POS_SEGMENT)).sum(-1))
    neg = _sigmoid((context * last(schema.NEG_SEGMENT)).sum(-1))
    sp = _bce(_sigmoid(pos - neg), 1.0).sum()
    return {"aap": aap, "mip": mip, "map": map_, "sp": sp}


def _tiny_model(
    seed=0,
    aap_rank=2,
    map_rank=None,
    dropout=0.0,
    head_positions="auto",
    attention_implementation="matmul",
    **kw,
):
    tf.keras.utils.set_random_seed(seed)
    encoder = S3RecEncoder(
        num_items=NUM_ITEMS,
        max_seq_length=8,
        hidden_size=8,
        num_layers=2,
        num_heads=2,
        dropout=dropout,
        attention_dropout=dropout,
        attention_implementation=attention_implementation,
    )
    heads = S3RecPretrainHeads(NUM_ATTRIBUTES, hidden_size=8, aap_rank=aap_rank, map_rank=map_rank)
    return S3RecPretrainer(
        encoder,
        heads,
        item_attributes(NUM_ITEMS, NUM_ATTRIBUTES),
        head_positions=head_positions,
        **kw,
    )


def _multi_hot():
    table = np.zeros([NUM_ITEMS + 2, NUM_ATTRIBUTES + 1])
    for item, attributes in item_attributes(NUM_ITEMS, NUM_ATTRIBUTES).items():
        table[item, attributes] = 1.0
    return table


@pytest.mark.parametrize("head_positions", ["gather", "dense"])
def test_losses_match_a_numpy_oracle(head_positions):
    model = _tiny_model(head_positions=head_positions)
    rng = np.random.default_rng(1)
    for weight in model.weights:  # every weight random and of moderate size
        weight.assign(rng.normal(scale=0.4, size=weight.shape).astype(np.float32))
    batch = pad_batch(make_examples(5, NUM_ITEMS, 8, seed=2))
    assert (batch[schema.MASKED_ITEM_SEQUENCE] == NUM_ITEMS + 1).any()
    losses = model.compute_losses(batch, training=False)
    expected = numpy_losses(model, batch, _multi_hot())
    for name in OBJECTIVES:
        assert expected[name] > 0
        np.testing.assert_allclose(float(losses[name]) * 5, expected[name], rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("training", [False, True], ids=["inference", "dropout"])
def test_matmul_attention_computes_the_objectives_of_keras_attention(training):
    """The fast path (attention by matmuls on MultiHeadAttention's weights) and the plain one
    (the Keras layer's call) give the same objectives and gradients on the same batch, dropout
    masks included (same seeded draws in the same order)."""
    batch = pad_batch(make_examples(6, NUM_ITEMS, 8, seed=5))
    results = {}
    for implementation in ("keras", "matmul"):
        with runtime.seeded_dropout():
            model = _tiny_model(seed=7, dropout=0.3, attention_implementation=implementation)
        rng = np.random.default_rng(3)  # weights of moderate size: attention far from uniform
        for weight in model.weights:
            weight.assign(rng.normal(scale=0.4, size=weight.shape).astype(np.float32))
        tf.keras.utils.set_random_seed(11)
        # The objectives move little with the attention; the encodings show any difference.
        encodings = model.encoder(batch[schema.MASKED_ITEM_SEQUENCE], training=training).numpy()
        tf.keras.utils.set_random_seed(11)
        with tf.GradientTape() as tape:
            losses = model.compute_losses(batch, training=training)
            total = model.total_loss(losses)
        gradients = tape.gradient(total, model.trainable_variables)
        results[implementation] = (
            {name: float(losses[name]) for name in OBJECTIVES},
            [tf.convert_to_tensor(g).numpy() for g in gradients],
            encodings,
        )
    keras_losses, keras_grads, keras_encodings = results["keras"]
    fast_losses, fast_grads, fast_encodings = results["matmul"]
    np.testing.assert_allclose(fast_encodings, keras_encodings, rtol=0, atol=1e-6)
    for name in OBJECTIVES:
        np.testing.assert_allclose(fast_losses[name], keras_losses[name], rtol=1e-6, err_msg=name)
    for fast, plain in zip(fast_grads, keras_grads):
        np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-7)


def test_batch_padded_to_its_own_width_gives_the_same_losses():
    model = _tiny_model(seed=3)
    examples = make_examples(6, NUM_ITEMS, 5, seed=4)
    narrow = model.compute_losses(pad_batch(examples), training=False)
    wide = model.compute_losses(pad_batch(examples, width=8), training=False)
    for name in OBJECTIVES:
        np.testing.assert_allclose(float(narrow[name]), float(wide[name]), rtol=1e-5, atol=1e-6)


def _dataset(examples, batch_size):
    batches = [pad_batch(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)]

    def generate():
        yield from batches

    spec = {key: tf.TensorSpec([None, None], tf.int64) for key in schema.PRETRAIN_SEQUENCES}
    return tf.data.Dataset.from_generator(generate, output_signature=spec)


@pytest.mark.parametrize("jit_compile", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_fit_logs_every_objective_and_updates_every_weight(jit_compile):
    model = _tiny_model(seed=5, dropout=0.1)
    runtime.compile_for_training(model, 1e-3, jit_compile)  # what the training CLI uses
    examples = make_examples(12, NUM_ITEMS, 8, seed=6)
    if jit_compile:
        # XLA compiles once per batch shape: keep to one shape so the test stays fast.
        data = tf.data.Dataset.from_tensors(pad_batch(examples, width=8)).repeat(2)
    else:
        data = _dataset(examples, 5)  # widths vary per batch, and a partial last batch of 2
    before = [w.numpy() for w in model.trainable_weights]
    history = model.fit(data, epochs=1, verbose=0)
    # The optimizer's slots existed before the first step, so the train step was traced once
    # (a tf.function that creates variables is traced again), whatever the batch widths.
    assert model.train_function.experimental_get_tracing_count() == 1
    assert set(history.history) == {"aap_loss", "mip_loss", "map_loss", "sp_loss", "loss"}
    assert all(np.isfinite(v[0]) for v in history.history.values())
    changed = [not np.array_equal(w.numpy(), b) for w, b in zip(model.trainable_weights, before)]
    assert all(changed)
    # The loss metrics are not model weights (nor checkpointed with them).
    assert len(model.weights) == len(model.trainable_weights)


def test_evaluate_reports_per_example_means_and_the_weighted_total():
    model = _tiny_model(seed=7, aap_weight=0.2, mip_weight=1.0, map_weight=1.0, sp_weight=0.5)
    model.compile(optimizer="adam")
    examples = make_examples(7, NUM_ITEMS, 8, seed=8)
    logs = model.evaluate(_dataset(examples, 4), verbose=0, return_dict=True)
    sums = {name: 0.0 for name in OBJECTIVES}
    for start in (0, 4):
        losses = model.compute_losses(pad_batch(examples[start : start + 4]), training=False)
        size = len(examples[start : start + 4])
        for name in OBJECTIVES:
            sums[name] += float(losses[name]) * size
    for name in OBJECTIVES:
        np.testing.assert_allclose(logs[f"{name}_loss"], sums[name] / 7, rtol=1e-5)
    total = 0.2 * sums["aap"] + sums["mip"] + sums["map"] + 0.5 * sums["sp"]
    np.testing.assert_allclose(logs["loss"], total / 7, rtol=1e-5)


def test_jit_compiled_evaluation_equals_the_gathered_one():
    # jit_compile selects the static-shape ("dense") head positions; same values.
    model = _tiny_model(seed=9)
    data = _dataset(make_examples(6, NUM_ITEMS, 8, seed=10), 6)
    model.compile(optimizer="adam", jit_compile=False)
    plain = model.evaluate(data, verbose=0, return_dict=True)
    model.compile(optimizer="adam", jit_compile=True)
    compiled = model.evaluate(data, verbose=0, return_dict=True)
    for key, value in plain.items():
        np.testing.assert_allclose(compiled[key], value, rtol=1e-5, err_msg=key)


@pytest.mark.slow
def test_a_few_hundred_steps_make_every_objective_fall():
    tf.keras.utils.set_random_seed(11)
    num_items, num_attributes = 40, 8
    encoder = S3RecEncoder(
        num_items=num_items,
        max_seq_length=10,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        dropout=0.1,
        attention_dropout=0.1,
    )
    heads = S3RecPretrainHeads(num_attributes, hidden_size=32, aap_rank=8)
    model = S3RecPretrainer(encoder, heads, item_attributes(num_items, num_attributes))
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3))
    held_out_examples = make_examples(256, num_items, 10, seed=12)
    held_out = _dataset(held_out_examples, 128)
    before = model.evaluate(held_out, verbose=0, return_dict=True)
    train = _dataset(make_examples(2048, num_items, 10, seed=13), 32).cache().repeat()
    model.fit(train, steps_per_epoch=300, epochs=1, verbose=0)
    after = model.evaluate(held_out, verbose=0, return_dict=True)
    # MIP and SP are BCE(σ(f_pos − f_neg), 1) with f in (0, 1): each term is at least
    # softplus(-1). Every objective must cover a quarter of the way to its floor.
    floor_per_term = np.log1p(np.exp(-1.0))
    masked_per_example = np.mean(
        [(e[schema.MASKED_ITEM_SEQUENCE] == num_items + 1).sum() for e in held_out_examples]
    )
    floors = {
        "aap": 0.0,
        "map": 0.0,
        "mip": floor_per_term * masked_per_example,
        "sp": floor_per_term,
    }
    for name in OBJECTIVES:
        start, end = before[f"{name}_loss"], after[f"{name}_loss"]
        progress = (start - end) / (start - floors[name])
        assert progress > 0.25, (name, start, end, floors[name])


def test_from_project_config_uses_the_configured_model_and_weights():
    config = config_lib.load("reference_weights").replace(
        **{"model.aap_rank": 16, "model.hidden_size": 32, "model.num_heads": 4}
    )
    model = builders.pretrainer_from_config(
        config, NUM_ITEMS, NUM_ATTRIBUTES, item_attributes(NUM_ITEMS, NUM_ATTRIBUTES)
    )
    assert model.objective_weights == {"aap": 0.2, "mip": 1.0, "map": 1.0, "sp": 0.5}
    assert model.heads.aap.rank == model.heads.map.rank == 16  # map_rank "aap" follows it
    assert model.encoder.hidden_size == 32 and model.encoder.num_heads == 4
    assert model.encoder.dropout == 0.5 and model.encoder.max_seq_length == 50
    defaults = builders.pretrainer_from_config(config_lib.Config(), NUM_ITEMS, NUM_ATTRIBUTES, {})
    assert defaults.objective_weights == {"aap": 1.0, "mip": 0.2, "map": 1.0, "sp": 0.5}
    assert defaults.heads.aap.rank is None


def test_every_input_form_of_the_attribute_lookup_gives_the_same_table():
    num_items, num_attributes = 4, 5
    mapping = {1: [2, 4], 3: [5, 2, 2]}
    as_json = {"1": [2, 4], "3": [5, 2, 2]}
    as_list = [[], [2, 4], [], [5, 2], [], []]
    dense = np.zeros([num_items + 2, num_attributes + 1], np.int64)
    dense[1, [2, 4]] = dense[3, [2, 5]] = 1
    expected = np.array([[0, 0], [2, 4], [0, 0], [2, 5], [0, 0], [0, 0]])
    for form in (mapping, as_json, as_list, dense):
        np.testing.assert_array_equal(attribute_id_table(form, num_items, num_attributes), expected)


@pytest.mark.parametrize(
    "lookup, message",
    [
        ({7: [1]}, r"item id 7 is outside 1..4"),
        ({"x": [1]}, "item key 'x' is not an integer"),
        ({2: [6]}, r"item 2 has attribute 6; attribute ids must be integers in 1..5"),
        ({2: [0]}, r"attribute ids must be integers in 1..5"),
        ({2: [1.5]}, r"attribute 1.5"),
        ([[]] * 3, "needs num_items \\+ 2 = 6 entries"),
        ([[1]] + [[]] * 5, "item id 0 is padding/mask"),
        (np.ones([6, 5]), r"must have shape \(6, 6\)"),
        (np.full([6, 6], 2), "must be 0/1"),
        ("items.json", "must be a mapping"),
    ],
)
def test_bad_attribute_lookups_are_refused(lookup, message):
    with pytest.raises((ValueError, TypeError), match=message):
        attribute_id_table(lookup, 4, 5)


def test_bad_batches_are_refused():
    model = _tiny_model()
    batch = pad_batch(make_examples(2, NUM_ITEMS, 5, seed=14))
    with pytest.raises(KeyError, match="lacks \\['neg_segment'\\]"):
        model.compute_losses({k: v for k, v in batch.items() if k != "neg_segment"})
    bad = dict(batch, pos_items=batch["pos_items"][:, 1:])
    with pytest.raises(ValueError, match="'pos_items' has shape"):
        model.compute_losses(bad)
    with pytest.raises(ValueError, match="must be an int tensor"):
        model.compute_losses(dict(batch, neg_items=batch["neg_items"].astype(np.float32)))


def test_bad_constructor_arguments_are_refused():
    encoder = S3RecEncoder(num_items=NUM_ITEMS, hidden_size=8, num_heads=2)
    with pytest.raises(ValueError, match="hidden_size"):
        S3RecPretrainer(encoder, S3RecPretrainHeads(NUM_ATTRIBUTES, hidden_size=16), {})
    with pytest.raises(ValueError, match="head_positions"):
        S3RecPretrainer(
            encoder, S3RecPretrainHeads(NUM_ATTRIBUTES, hidden_size=8), {}, head_positions="all"
        )


@pytest.mark.parametrize("head_positions", ["gather", "dense"])
def test_no_pretraining_tensor_grows_with_the_catalogue_but_the_tables(head_positions):
    """Catalogue scale: a training step's tensors with an N + 2 dimension are the item table, its
    gradient and Adam slots ([N + 2, d]) and the attribute id table ([N + 2, K]): MIP, MAP, AAP
    and SP score only the batch's own items, never [.., items]."""
    num_items, hidden = 5_000, 8
    tf.keras.utils.set_random_seed(0)
    encoder = S3RecEncoder(num_items, max_seq_length=8, hidden_size=hidden, num_heads=2)
    heads = S3RecPretrainHeads(NUM_ATTRIBUTES, hidden_size=hidden, aap_rank=2)
    model = S3RecPretrainer(
        encoder, heads, item_attributes(num_items, NUM_ATTRIBUTES), head_positions=head_positions
    )
    runtime.compile_for_training(model, 1e-3, False)
    batch = pad_batch(make_examples(4, num_items, 6, seed=1), width=6)
    spec = {k: tf.TensorSpec([4, 6], tf.as_dtype(v.dtype)) for k, v in batch.items()}
    model.build()
    model.optimizer.build(model.trainable_variables)
    graph = tf.function(model.train_step).get_concrete_function(spec).graph
    shapes = {
        tuple(t.shape.as_list())
        for op in graph.get_operations()
        for t in op.outputs
        if t.shape.rank and num_items + 2 in t.shape.as_list()
    }
    attribute_width = model.item_attribute_ids.shape[1]
    assert shapes <= {(num_items + 2, hidden), (num_items + 2, attribute_width)}, shapes
    assert (num_items + 2, hidden) in shapes
