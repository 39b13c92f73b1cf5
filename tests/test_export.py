"""Export for serving: the SavedModel checked the way its clients use it.

A small run directory (export_testlib.write_run_dir) is exported with export.saved_model.export_run;
the answers are compared with a NumPy recommender that runs the same encoder on each unpadded
history alone. ScaNN tests skip with the reason when the optional `scann` package is missing.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from export import saved_model as export_lib
from export import serving

import export_testlib as lib

K = 10
MAX_SEQ_LENGTH = 8

requires_scann = pytest.mark.skipif(
    not serving.scann_available(),
    reason="ScaNN is an optional extra (pip install 's3rec-tf[scann]', i.e. scann[tf]==1.4.2); "
    "it is not installed here",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return lib.write_run_dir(
        str(tmp_path_factory.mktemp("export_run")), max_seq_length=MAX_SEQ_LENGTH
    )


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("saved_model") / "model")
    export_lib.export_run(run["run_dir"], output, k=K)
    return output


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported)


def histories_of(run):
    """Requests covering every rule: plain, unknown ids, empty, all-unknown, over-long, repeats."""
    v = run["vocab"]
    rng = np.random.default_rng(3)
    long_history = [v[i] for i in rng.integers(0, len(v), size=3 * MAX_SEQ_LENGTH)]
    return [
        [v[0], v[1], v[2]],
        [v[4], "not-an-item", v[6], "", v[8]],  # unknown and "" inside: dropped
        [],
        ["nope", "B99999", " "],  # all unknown
        long_history,  # longer than max_seq_length: the last 8 known feed the encoder
        [v[9], v[9], v[9]],
        [v[len(v) - 1]],
    ] + [
        # Enough rows of mixed lengths for the encoder to run them in several chunks.
        [v[i] if i % 7 else "unknown" for i in rng.integers(0, len(v), size=n)]
        for n in rng.integers(1, 2 * MAX_SEQ_LENGTH, size=2 * serving.ENCODER_CHUNK_ROWS)
    ]


def test_fresh_process_serves_numpy_top_k(run, exported, tmp_path):
    histories = histories_of(run)
    request = tmp_path / "request.json"
    request.write_text(json.dumps(lib.pad_histories(histories)))
    answer = tmp_path / "answer.json"
    script = textwrap.dedent("""
        import json, sys
        import tensorflow as tf

        model_dir, request, answer = sys.argv[1:]
        model = tf.saved_model.load(model_dir)
        history = tf.constant(json.load(open(request)), tf.string)
        out = model.signatures["serving_default"](history=history)
        emb = model.signatures["user_embedding"](history=history)
        project = sorted(
            m for m in sys.modules
            if m.split(".")[0]
            in ("tensorflow_recommenders", "keras_models", "s3rec_tf", "export", "scann")
        )
        json.dump(
            {
                "item_ids": [[b.decode("utf-8") for b in row] for row in out["item_ids"].numpy()],
                "scores": out["scores"].numpy().tolist(),
                "embedding": emb["embedding"].numpy().tolist(),
                "imported": project,
            },
            open(answer, "w"),
        )
        """)
    subprocess.run(
        [sys.executable, "-c", script, exported, str(request), str(answer)],
        check=True,
        cwd=str(tmp_path),  # not the repository: nothing of the project on the path by accident
        capture_output=True,
    )
    got = json.loads(answer.read_text())
    assert got["imported"] == []

    want_ids, want_scores, want_embedding = lib.numpy_recommend(
        run["encoder"], run["vocab"], run["popularity"], histories, K
    )
    assert got["item_ids"] == want_ids
    np.testing.assert_allclose(got["scores"], want_scores, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["embedding"], want_embedding, rtol=1e-4, atol=1e-5)

    vocab = set(run["vocab"])
    for history, items in zip(histories, got["item_ids"]):
        assert len(set(items)) == K and set(items) <= vocab  # never "", padding or mask ids
        assert not set(items) & set(history)
    # Empty and all-unknown histories: the most popular items, by count then lower id.
    popular = [run["vocab"][i - 1] for i in lib.popular_items(run["popularity"], K)]
    assert got["item_ids"][2] == got["item_ids"][3] == popular
    assert np.all(np.asarray(got["embedding"][2]) == 0.0)


def test_saved_model_cli_lists_both_signatures(run, exported):
    # The console script that TensorFlow installs; its module where the script is not on PATH.
    cli = (
        [shutil.which("saved_model_cli")]
        if shutil.which("saved_model_cli")
        else [
            sys.executable,
            "-m",
            "tensorflow.python.tools.saved_model_cli",
        ]
    )
    shown = subprocess.run(
        cli + ["show", "--dir", exported, "--all"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    signatures = {}
    for block in shown.split("signature_def['")[1:]:
        name, body = block.split("']", 1)
        signatures[name] = " ".join(body.split())
    hidden = run["config"].model.hidden_size
    assert (
        "inputs['history'] tensor_info: dtype: DT_STRING shape: (-1, -1)"
        in signatures["serving_default"]
    )
    assert (
        f"outputs['item_ids'] tensor_info: dtype: DT_STRING shape: (-1, {K})"
        in signatures["serving_default"]
    )
    assert (
        f"outputs['scores'] tensor_info: dtype: DT_FLOAT shape: (-1, {K})"
        in signatures["serving_default"]
    )
    assert (
        "inputs['history'] tensor_info: dtype: DT_STRING shape: (-1, -1)"
        in signatures["user_embedding"]
    )
    assert (
        f"outputs['embedding'] tensor_info: dtype: DT_FLOAT shape: (-1, {hidden})"
        in signatures["user_embedding"]
    )
    assert "Method name is: tensorflow/serving/predict" in signatures["serving_default"]


def test_rest_predict_bodies_map_onto_the_signatures(run, loaded):
    histories = histories_of(run)
    want_ids, want_scores, want_embedding = lib.numpy_recommend(
        run["encoder"], run["vocab"], run["popularity"], histories, K
    )
    padded = lib.pad_histories(histories)

    rows = lib.rest_predict(loaded, json.dumps({"instances": [{"history": h} for h in padded]}))
    assert [p["item_ids"] for p in rows["predictions"]] == want_ids
    np.testing.assert_allclose(
        [p["scores"] for p in rows["predictions"]], want_scores, rtol=1e-4, atol=1e-5
    )

    columns = lib.rest_predict(loaded, json.dumps({"inputs": {"history": padded}}))
    assert columns["outputs"]["item_ids"] == want_ids
    np.testing.assert_allclose(columns["outputs"]["scores"], want_scores, rtol=1e-4, atol=1e-5)

    # A single-input signature also takes bare values; the one output comes back bare.
    embedding = lib.rest_predict(
        loaded, json.dumps({"signature_name": "user_embedding", "instances": padded})
    )
    np.testing.assert_allclose(embedding["predictions"], want_embedding, rtol=1e-4, atol=1e-5)
    bare = lib.rest_predict(
        loaded, json.dumps({"signature_name": "user_embedding", "inputs": padded})
    )
    np.testing.assert_allclose(bare["outputs"], want_embedding, rtol=1e-4, atol=1e-5)

    # Serving refuses instances of different lengths (clients pad with ""), and numbers for strings.
    with pytest.raises(lib.RestError, match="ragged"):
        lib.rest_predict(
            loaded, json.dumps({"instances": [{"history": ["a"]}, {"history": ["a", "b"]}]})
        )
    with pytest.raises(lib.RestError, match="string"):
        lib.rest_predict(loaded, json.dumps({"inputs": {"history": [[1, 2]]}}))


def _serve(loaded, histories):
    out = loaded.signatures["serving_default"](
        history=tf.constant(lib.pad_histories(histories), tf.string)
    )
    return out["item_ids"].numpy().tolist(), out["scores"].numpy()


def _embed(loaded, histories):
    history = tf.constant(lib.pad_histories(histories), tf.string)
    return loaded.signatures["user_embedding"](history=history)["embedding"].numpy()


def test_every_request_gets_a_defined_answer(run, loaded):
    v = run["vocab"]
    popular = [v[i - 1].encode() for i in lib.popular_items(run["popularity"], K)]
    # Unknown ids are dropped, wherever they are.
    with_unknown, plain = (
        _serve(loaded, [["?", v[3], "unknown", v[5], "?"]]),
        _serve(loaded, [[v[3], v[5]]]),
    )
    assert with_unknown[0] == plain[0]
    np.testing.assert_allclose(with_unknown[1], plain[1], rtol=1e-6)
    # Over-long histories: the encoder sees the last max_seq_length known items.
    long_history = v[:30]
    np.testing.assert_allclose(
        _embed(loaded, [long_history]),
        _embed(loaded, [long_history[-MAX_SEQ_LENGTH:]]),
        rtol=1e-5,
        atol=1e-6,
    )
    # A zero-width request and an empty batch are still answered.
    empty = loaded.signatures["serving_default"](history=tf.zeros([2, 0], tf.string))
    assert empty["item_ids"].numpy().tolist() == [popular, popular]
    np.testing.assert_array_equal(
        empty["scores"].numpy()[0],
        [run["popularity"][i] for i in lib.popular_items(run["popularity"], K)],
    )
    nothing = loaded.signatures["serving_default"](history=tf.zeros([0, 3], tf.string))
    assert nothing["item_ids"].shape == (0, K)
    # The same history alone or in a batch with others gets the same answer (padding invariance).
    alone = _serve(loaded, [[v[1], v[2]]])
    batched = _serve(loaded, [v[10:20], [v[1], v[2]], []])
    assert batched[0][1] == alone[0][0]
    np.testing.assert_allclose(batched[1][1], alone[1][0], rtol=1e-5, atol=1e-6)


def test_wrong_dtype_or_rank_is_refused(loaded):
    serve = loaded.signatures["serving_default"]
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError), match="string"):
        serve(history=tf.constant([[1, 2]], tf.int64))
    for bad in (tf.constant(["a", "b"]), tf.constant([[["a"]]]), tf.constant("a")):
        with pytest.raises(tf.errors.InvalidArgumentError, match="history"):
            serve(history=bad)
        with pytest.raises(tf.errors.InvalidArgumentError, match="history"):
            loaded.signatures["user_embedding"](history=bad)


def test_keep_history_items_switch(run, tmp_path):
    output = str(tmp_path / "keep")
    export_lib.main(
        ["--run_dir", run["run_dir"], "--output", output, "--k", "5", "--keep_history_items"]
    )
    info = json.loads((tmp_path / "keep" / "assets.extra" / "export.json").read_text())
    assert info["exclude_history"] is False and info["k"] == 5 and info["index"] == "brute_force"
    histories = histories_of(run)
    got = _serve(tf.saved_model.load(output), histories)
    want_ids, want_scores, _ = lib.numpy_recommend(
        run["encoder"], run["vocab"], run["popularity"], histories, 5, exclude_history=False
    )
    assert [[b.decode() for b in row] for row in got[0]] == want_ids
    np.testing.assert_allclose(got[1], want_scores, rtol=1e-4, atol=1e-5)

    # The CLI refuses to write over an export unless told to, then replaces it entirely.
    with pytest.raises(SystemExit, match="not empty"):
        export_lib.main(["--run_dir", run["run_dir"], "--output", output])
    export_lib.main(["--run_dir", run["run_dir"], "--output", output, "--k", "3", "--overwrite"])
    info = json.loads((tmp_path / "keep" / "assets.extra" / "export.json").read_text())
    assert info["exclude_history"] is True and info["k"] == 3
    assert _serve(tf.saved_model.load(output), histories)[1].shape == (len(histories), 3)


def test_tiny_catalogue_fills_with_history_items_best_first(run, tmp_path):
    num_items = len(run["vocab"])
    k = num_items - 2
    output = str(tmp_path / "tiny")
    export_lib.export_run(run["run_dir"], output, k=k)
    histories = [run["vocab"][:5], run["vocab"][40:41]]
    got = _serve(tf.saved_model.load(output), histories)
    want_ids, want_scores, _ = lib.numpy_recommend(
        run["encoder"], run["vocab"], run["popularity"], histories, k
    )
    assert [[b.decode() for b in row] for row in got[0]] == want_ids
    np.testing.assert_allclose(got[1], want_scores, rtol=1e-4, atol=1e-5)
    assert set(want_ids[0][-3:]) <= set(histories[0])  # 78 slots, 75 items outside the history


def _break(run_dir, tmp_path, name, edit):
    """A copy of the run and data dirs with one file changed by `edit(path)`."""
    root = tmp_path / name
    shutil.copytree(os.path.dirname(run_dir), root)
    config_path = root / "run" / "config.json"
    config = json.loads(config_path.read_text())
    config["data"]["data_dir"] = str(root / "data")
    config_path.write_text(json.dumps(config))
    edit(root)
    return str(root / "run")


def test_bad_run_directories_fail_clearly(run, tmp_path):
    def duplicate_vocab_line(root):
        path = root / "data" / "vocab" / "items.txt"
        lines = path.read_text(encoding="utf-8").splitlines()
        lines[6] = lines[2]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def short_vocab(root):
        path = root / "data" / "vocab" / "items.txt"
        path.write_text(
            "\n".join(path.read_text(encoding="utf-8").splitlines()[:-1]) + "\n", encoding="utf-8"
        )

    def other_hidden_size(root):
        path = root / "run" / "config.json"
        config = json.loads(path.read_text())
        config["model"]["hidden_size"] = 32
        path.write_text(json.dumps(config))

    def no_checkpoint(root):
        for name in os.listdir(root / "run" / "final"):
            os.remove(root / "run" / "final" / name)

    cases = [
        (duplicate_vocab_line, r"items.txt, line 7: item id .* repeats line 3"),
        (short_vocab, r"items.txt has 79 item ids but the run's data has num_items = 80"),
        (other_hidden_size, r"final/encoder does not match the encoder described by .*config.json"),
        (no_checkpoint, r"No encoder checkpoint at .*final/encoder"),
    ]
    for edit, message in cases:
        run_dir = _break(run["run_dir"], tmp_path, edit.__name__, edit)
        with pytest.raises(export_lib.ExportError, match=message):
            export_lib.export_run(run_dir, str(tmp_path / edit.__name__ / "out"))

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("x")
    with pytest.raises(export_lib.ExportError, match="not empty"):
        export_lib.export_run(run["run_dir"], str(occupied))
    with pytest.raises(export_lib.ExportError, match="holds no saved_model.pb: not replaced"):
        export_lib.export_run(run["run_dir"], str(occupied), overwrite=True)
    assert (occupied / "keep.txt").read_text() == "x"
    with pytest.raises(export_lib.ExportError, match="index must be one of"):
        export_lib.export_run(run["run_dir"], str(tmp_path / "x"), index="annoy")


# ---------------------------------------------------------------------------------------------
# ScaNN
# ---------------------------------------------------------------------------------------------


def _random_catalogue_module(
    index, scann_options=None, num_items=12_101, hidden=64, seed=11, tmp=None
):
    """A random-weight model over num_items items (the Beauty size) and its vocabulary file."""
    from keras_models.encoder import S3RecEncoder

    tf.keras.utils.set_random_seed(seed)
    encoder = S3RecEncoder(num_items=num_items, hidden_size=hidden, num_layers=1, num_heads=2)
    encoder.build(None)
    vocab = os.path.join(tmp, "items.txt")
    with open(vocab, "w") as f:
        f.writelines(f"i{i}\n" for i in range(1, num_items + 1))
    popularity = np.random.default_rng(seed).poisson(3.0, size=num_items + 1)
    popularity[0] = 0
    return serving.S3RecServingModule(
        encoder, vocab, popularity, k=K, index=index, scann_options=scann_options
    ), [f"i{i}" for i in range(1, num_items + 1)]


def _recall(approximate, exact):
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approximate, exact)]))


@requires_scann
@pytest.mark.slow
def test_scann_export_serves_after_import_scann_in_a_fresh_process(tmp_path):
    """Random 12,101 x 64 embeddings; all partitions searched, so only the plumbing is tested here
    (isotropic random vectors have no cluster structure for a partial search to use)."""
    brute, vocab = _random_catalogue_module("brute_force", tmp=str(tmp_path))
    scann, _ = _random_catalogue_module(
        "scann", {"num_leaves": 110, "num_leaves_to_search": 110}, tmp=str(tmp_path)
    )
    serving.save_serving_module(brute, str(tmp_path / "brute"))
    serving.save_serving_module(scann, str(tmp_path / "scann"))
    rng = np.random.default_rng(5)
    histories = [list(rng.choice(vocab, size=int(rng.integers(1, 60)))) for _ in range(300)]
    request = tmp_path / "request.json"
    request.write_text(json.dumps(lib.pad_histories(histories)))
    script = textwrap.dedent("""
        import json, sys
        import scann  # noqa: F401  (registers the Scann ops; the documented requirement)
        import tensorflow as tf

        model = tf.saved_model.load(sys.argv[1])
        out = model.signatures["serving_default"](history=tf.constant(json.load(open(sys.argv[2]))))
        assert "tensorflow_recommenders" not in sys.modules
        print(json.dumps([[b.decode() for b in row] for row in out["item_ids"].numpy()]))
        """)
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "scann"), str(request)],
        check=True,
        capture_output=True,
        text=True,
        cwd=str(tmp_path),
    )
    approximate = json.loads(result.stdout.strip().splitlines()[-1])
    exact = _serve(tf.saved_model.load(str(tmp_path / "brute")), histories)[0]
    exact = [[b.decode() for b in row] for row in exact]
    for history, items in zip(histories, approximate):
        assert len(set(items)) == K and not set(items) & set(history)
    recall = _recall(approximate, exact)
    assert recall >= 0.95, f"ScaNN recall@{K} against brute force: {recall:.4f}"


@requires_scann
@pytest.mark.slow
@pytest.mark.real_data
def test_scann_recall_on_beauty_embeddings(reference_npz, beauty_dir, tmp_path):
    """The default ScaNN options on the released S3-Rec Beauty model, real user histories."""
    from keras_models.encoder import S3RecEncoder
    from s3rec_tf import reference

    encoder = S3RecEncoder(num_items=12_101)
    reference.load_reference_weights(reference_npz, encoder)
    with open(os.path.join(beauty_dir, "Beauty.txt")) as f:
        sequences = [line.split()[1:] for line in f if line.strip()]
    popularity = np.zeros(12_102, np.int64)
    for items in sequences:
        np.add.at(popularity, np.array(items[:-2], np.int64), 1)
    vocab = str(tmp_path / "items.txt")
    with open(vocab, "w") as f:
        f.writelines(f"{i}\n" for i in range(1, 12_102))
    answers = {}
    rng = np.random.default_rng(0)
    histories = [sequences[u][:-1] for u in rng.choice(len(sequences), size=1000, replace=False)]
    for index in ("brute_force", "scann"):
        module = serving.S3RecServingModule(encoder, vocab, popularity, k=K, index=index)
        serving.save_serving_module(module, str(tmp_path / index))
        answers[index] = _serve(tf.saved_model.load(str(tmp_path / index)), histories)[0]
    recall = _recall(answers["scann"], answers["brute_force"])
    assert recall >= 0.95, f"ScaNN recall@{K} against brute force: {recall:.4f}"
