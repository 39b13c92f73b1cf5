"""Test helpers for export/: a small run directory, a NumPy recommender, TF Serving's REST mapping.

Independent of the code under test on purpose: the run directory is written straight from the
contracts (s3rec_tf.schema, the run-dir layout of the brief), the oracle ranks items with NumPy from
the encoder run on each unpadded history alone, and the REST helper follows TensorFlow Serving's
documented JSON mapping rather than the export code.
"""

import json
import os

import numpy as np
import tensorflow as tf

import keras_models  # noqa: F401  (Keras 2 before tf.keras is touched)
from s3rec_tf import builders, schema
from s3rec_tf import config as config_lib


def raw_item_id(item: int) -> str:
    """Raw ids of several shapes (spaces, non-ASCII), as real catalogues have."""
    return (f"B{item:05d}", f"sku é-{item}", f"x {item} y")[item % 3]


def write_run_dir(
    root,
    num_items=80,
    num_users=40,
    max_seq_length=8,
    hidden_size=16,
    num_layers=1,
    num_heads=2,
    seed=7,
):
    """Writes ROOT/data (vocabulary, train split, metadata.json) and ROOT/run (as s3rec_tf.train).

    Returns a dict with run_dir, data_dir, config, encoder (the one written), vocab (list of raw
    ids, item k at index k - 1), sequences (user -> items) and popularity (counts of ids 0..N in
    the training histories, computed here with NumPy).
    """
    rng = np.random.default_rng(seed)
    data_dir = os.path.join(root, "data")
    run_dir = os.path.join(root, "run")
    os.makedirs(os.path.join(data_dir, schema.VOCAB_DIR))
    os.makedirs(os.path.join(run_dir, "final"))

    vocab = [raw_item_id(i) for i in range(1, num_items + 1)]
    with open(os.path.join(data_dir, schema.ITEM_VOCAB), "w", encoding="utf-8") as f:
        f.writelines(raw + "\n" for raw in vocab)

    # A skewed popularity (low ids more frequent) with ties, so the tie-break is exercised.
    weights = 1.0 / np.arange(1, num_items + 1)
    sequences = {
        user: (
            rng.choice(num_items, size=int(rng.integers(4, 14)), p=weights / weights.sum()) + 1
        ).tolist()
        for user in range(1, num_users + 1)
    }
    popularity = np.zeros(num_items + 1, np.int64)
    for split_shard in range(2):
        path = os.path.join(data_dir, schema.split_prefix("train")) + (
            f"-{split_shard:05d}-of-00002{schema.TFRECORD_SUFFIX}"
        )
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tf.io.TFRecordWriter(path) as writer:
            for user, items in sequences.items():
                if user % 2 != split_shard:
                    continue
                history, heldout = items[:-2], items[-2:]
                np.add.at(popularity, history, 1)
                feature = {
                    schema.USER: [user],
                    schema.HISTORY: history,
                    schema.HELDOUT: heldout,
                }
                example = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            name: tf.train.Feature(int64_list=tf.train.Int64List(value=values))
                            for name, values in feature.items()
                        }
                    )
                )
                writer.write(example.SerializeToString())

    metadata = {
        "format_version": schema.FORMAT_VERSION,
        "num_users": num_users,
        "num_items": num_items,
        "num_attributes": 1,
        "num_interactions": int(sum(map(len, sequences.values()))),
        "num_pretrain_examples": 0,
        "dupe_factor": 0,
        "max_seq_length": max_seq_length,
        "mask_id": num_items + 1,
        "num_negatives": 0,
        "num_bad_records": {},
        "config": {"source": "tests/export_testlib.py", "seed": seed},
    }
    for path in (
        os.path.join(data_dir, schema.METADATA_FILE),
        os.path.join(run_dir, "data_metadata.json"),
    ):
        with open(path, "w") as f:
            json.dump(metadata, f)

    config = (
        config_lib.Config()
        .replace(
            **{
                "data.data_dir": data_dir,
                "model.hidden_size": hidden_size,
                "model.num_layers": num_layers,
                "model.num_heads": num_heads,
                "model.max_seq_length": max_seq_length,
                # Wide initial weights spread the scores, so no two items tie within float error.
                "model.initializer_range": 0.5,
                "output_dir": run_dir,
                "seed": seed,
            }
        )
        .validate()
    )
    config_lib.save(config, os.path.join(run_dir, "config.json"))

    tf.keras.utils.set_random_seed(seed)
    # The same constructor the training CLI uses, so the checkpoint matches what export rebuilds.
    encoder = builders.encoder_from_config(config.model, num_items)
    encoder.build(None)
    tf.train.Checkpoint(encoder=encoder).write(os.path.join(run_dir, "final", "encoder"))
    return {
        "run_dir": run_dir,
        "data_dir": data_dir,
        "config": config,
        "encoder": encoder,
        "vocab": vocab,
        "sequences": sequences,
        "popularity": popularity,
    }


def popular_items(popularity, k):
    """Item ids 1..N by training count, most first, ties by the lower id (plain Python sort)."""
    return sorted(range(1, len(popularity)), key=lambda item: (-int(popularity[item]), item))[:k]


def numpy_recommend(encoder, vocab, popularity, histories, k, exclude_history=True):
    """The expected answer of serving_default, one history at a time, ranked with NumPy.

    Each history's known ids (in order, unknowns dropped) are cut to the last max_seq_length and run
    through the encoder unpadded, as a batch of one; scores = that output . item embeddings of
    1..N; items outside the history rank first (history items only fill up a tiny catalogue),
    then by score, ties by the lower id. Histories without a known id get the k most popular
    items scored by their counts.

    Returns (raw ids [B][k] as str, scores [B, k] float32, embeddings [B, hidden] float32).
    """
    to_id = {raw: item for item, raw in enumerate(vocab, start=1)}
    table = encoder.item_embeddings.numpy()[1 : len(vocab) + 1]  # [N, hidden], rows of ids 1..N
    all_ids, all_scores, embeddings = [], [], []
    for history in histories:
        ids = [to_id[raw] for raw in history if raw in to_id]
        if not ids:
            best = popular_items(popularity, k)
            all_ids.append([vocab[item - 1] for item in best])
            all_scores.append([float(popularity[item]) for item in best])
            embeddings.append(np.zeros(encoder.hidden_size, np.float32))
            continue
        window = np.array([ids[-encoder.max_seq_length :]], np.int64)
        user = encoder(window, causal=True, training=False).numpy()[0, -1]
        scores = table @ user
        in_history = np.zeros(len(vocab), bool)
        if exclude_history:
            in_history[np.array(ids) - 1] = True
        # Outside the history first, then by score; equal scores keep the lower id (stable).
        best = np.lexsort((-scores, in_history))[:k]
        all_ids.append([vocab[i] for i in best])
        all_scores.append(scores[best].tolist())
        embeddings.append(user)
    return all_ids, np.array(all_scores, np.float32), np.array(embeddings, np.float32)


def pad_histories(histories):
    """A client's right padding with "" to the batch's longest history (at least one column)."""
    width = max([len(h) for h in histories] + [1])
    return [list(h) + [""] * (width - len(h)) for h in histories]


class RestError(ValueError):
    """What TensorFlow Serving would answer with HTTP 400."""


def _json_shape(value):
    if isinstance(value, list):
        shapes = {_json_shape(v) for v in value}
        if len(shapes) > 1:
            raise RestError(f"ragged list: elements of shapes {sorted(shapes)}")
        return (len(value),) + (shapes.pop() if shapes else ())
    return ()


def _to_tensor(name, value, spec):
    _json_shape(value)  # Serving refuses ragged JSON arrays
    try:
        return tf.constant(value, dtype=spec.dtype)
    except (TypeError, ValueError) as e:
        raise RestError(f"input {name!r}: cannot convert to {spec.dtype.name}: {e}") from e


def _to_json(value):
    array = value.numpy()
    if array.dtype == object:  # DT_STRING: Serving writes UTF-8 text (base64 only for *_bytes)
        return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(array).tolist()
    return array.tolist()


def rest_predict(loaded, body: str) -> dict:
    """Maps a TF Serving REST `:predict` body onto a loaded SavedModel's signature and back.

    Row format {"instances": [...]}: each instance is an object of named inputs (or a bare value
    when the signature has one input); instances are stacked into the batch dimension, so they must
    all have the same shape. Columnar format {"inputs": {...} or value}: each input is one tensor.
    JSON values are converted to the signature's dtypes. Answers {"predictions": [...]} (one object
    per instance, or bare values for a single output) and {"outputs": {...} or value}.
    """
    request = json.loads(body)
    name = request.get("signature_name", "serving_default")
    if name not in loaded.signatures:
        raise RestError(f"Serving signature name: {name!r} not found in signature def")
    signature = loaded.signatures[name]
    specs = signature.structured_input_signature[1]
    if ("instances" in request) == ("inputs" in request):
        raise RestError('JSON body must have exactly one of "instances" or "inputs"')

    if "instances" in request:
        instances = request["instances"]
        if not isinstance(instances, list) or not instances:
            raise RestError('"instances" must be a non-empty list')
        if all(isinstance(i, dict) for i in instances):
            for instance in instances:
                if set(instance) != set(specs):
                    raise RestError(
                        f"instance inputs {sorted(instance)} != signature inputs {sorted(specs)}"
                    )
            columns = {key: [instance[key] for instance in instances] for key in specs}
        elif len(specs) == 1:
            columns = {next(iter(specs)): instances}
        else:
            raise RestError("bare instances need a signature with exactly one input")
        tensors = {key: _to_tensor(key, value, specs[key]) for key, value in columns.items()}
        outputs = {key: _to_json(value) for key, value in signature(**tensors).items()}
        batch = len(instances)
        if len(outputs) == 1:
            return {"predictions": next(iter(outputs.values()))}
        return {
            "predictions": [{key: value[i] for key, value in outputs.items()} for i in range(batch)]
        }

    inputs = request["inputs"]
    if not isinstance(inputs, dict):
        if len(specs) != 1:
            raise RestError('a bare "inputs" value needs a signature with exactly one input')
        inputs = {next(iter(specs)): inputs}
    if set(inputs) != set(specs):
        raise RestError(f"inputs {sorted(inputs)} != signature inputs {sorted(specs)}")
    tensors = {key: _to_tensor(key, value, specs[key]) for key, value in inputs.items()}
    outputs = {key: _to_json(value) for key, value in signature(**tensors).items()}
    if len(outputs) == 1:
        return {"outputs": next(iter(outputs.values()))}
    return {"outputs": outputs}
