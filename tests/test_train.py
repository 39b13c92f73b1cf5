"""`python -m s3rec_tf.train`: end to end on a small dataset, resuming, strategies, bad input."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf  # noqa: E402  (after s3rec_tf selected Keras 2)

from s3rec_tf import data as data_lib
from s3rec_tf import data_files, phases, runtime, schema, train
from s3rec_tf import run_dir as run_dir_lib

from dataset_fixture import SMALL_MODEL, small_dataset  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = [*SMALL_MODEL, "--finetune_batch_size", "32"]


def _args(data_dir, out, *extra):
    return ["--data", data_dir, "--output", str(out), *SMALL, *extra]


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    """(run dir, results): every phase with rank 4, 2 + 2 epochs, validation on 9 users and an
    export, trained once; tests that continue or change a run work on a copy of it."""
    root = tmp_path_factory.mktemp("finished")
    flags = ["--pretrain_epochs", "2", "--finetune_epochs", "2", "--export", str(root / "model")]
    results = train.main(_args(data_dir, root / "run", *FINISHED_RUN_FLAGS, *flags))
    return root / "run", results


# Settings of `finished_run` that a rerun must repeat to continue it (run_dir.RESUMABLE_CHANGES).
FINISHED_RUN_FLAGS = ["--rank", "4", "--valid_users", "9"]


def shares_the_run(test):
    """The tests reading `finished_run` go to one xdist worker, which trains it once; a
    training run, so slow."""
    return pytest.mark.slow(pytest.mark.xdist_group("finished_run")(test))


def _tensorboard_events(directory):
    events = []
    for path in sorted(tf.io.gfile.glob(str(directory / "events.out.tfevents.*"))):
        events += [tf.compat.v1.Event.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    return events


def _copy(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


@shares_the_run
def test_main_runs_every_phase_and_writes_results(data_dir, finished_run):
    run, results = finished_run
    on_disk = json.load(open(run / "results.json"))
    # Validation on a sample of 9 users; its metrics are those users' (checked in test_data).
    assert on_disk["finetune"]["valid_users"] == 9
    assert on_disk["config"]["finetune"]["valid_users"] == 9
    assert on_disk["test"] == results["test"]
    for split in ("valid", "test"):
        for protocol in ("sampled", "full"):
            metrics = on_disk[split][protocol]
            assert {"hr@1", "hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr"} <= set(
                metrics
            )
            assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert on_disk["parameters"]["aap"] == 2 * 16 * 4 and on_disk["parameters"]["map"] == 2 * 16 * 4
    assert on_disk["pretrain"]["epochs"] == 2 and on_disk["finetune"]["epochs_run"] == 2
    assert on_disk["config"]["model"]["aap_rank"] == 4
    # The default loss normalizer: the data's mean number of targets per training example.
    assert on_disk["config"]["finetune"]["loss_normalizer"] == "dataset"
    assert on_disk["finetune"]["targets_per_example"] == data_files.mean_finetune_targets(
        data_dir, 50
    )
    assert json.load(open(run / "config.json"))["model"]["aap_rank"] == 4
    assert os.path.exists(run / "data_metadata.json")
    assert os.path.exists(run / "final" / "encoder.index")
    # TensorBoard: every epoch's scalars, but the graph once per phase (not in every fit's file).
    for phase in ("pretrain", "finetune"):
        events = _tensorboard_events(run / "logs" / phase / "train")
        assert sum(e.HasField("graph_def") for e in events) == 1, phase
        epochs = [e.step for e in events for v in e.summary.value if v.tag == "epoch_loss"]
        assert sorted(epochs) == [0, 1], phase
    # --export: the SavedModel written at the end.
    assert results["export"] == str(run.parent / "model")
    assert os.path.exists(run.parent / "model" / "saved_model.pb")


@shares_the_run
def test_rerun_continues_from_the_last_finished_epoch(data_dir, finished_run, tmp_path):
    run = _copy(finished_run[0], tmp_path)
    first = finished_run[1]
    assert first["pretrain"]["resumed_at_epoch"] == 0
    # A larger budget on the same run dir continues instead of starting over.
    more = ["--pretrain_epochs", "3", "--finetune_epochs", "3"]
    second = train.main(_args(data_dir, run, *FINISHED_RUN_FLAGS, *more))
    assert second["pretrain"]["resumed_at_epoch"] == 2
    assert second["finetune"]["epochs_run"] == 3
    # Wall time covers the epochs of both invocations, each timed once.
    epoch_log = _read_csv(run / "pretrain" / "epochs.csv")
    assert [int(r["epoch"]) for r in epoch_log] == [0, 1, 2]
    assert {"aap_loss", "mip_loss", "map_loss", "sp_loss", "epoch_seconds"} <= set(epoch_log[0])
    assert not [k for k in epoch_log[0] if k.startswith("val_")]  # pretraining has no validation
    seconds = [float(r["epoch_seconds"]) for r in epoch_log]
    assert second["pretrain"]["timed_epochs"] == 3
    assert second["pretrain"]["seconds"] == pytest.approx(sum(seconds), rel=1e-6)
    # This invocation's wall time spans its own epoch (not epochs 0 and 1, timed by the first).
    # Only an inequality that holds however loaded the machine is asserted.
    assert second["pretrain"]["seconds_this_run"] >= seconds[2]
    assert second["pretrain"]["seconds_this_run"] < sum(seconds)
    assert second["wall_seconds"]["pretrain"] == second["pretrain"]["seconds"]
    # The fine-tuning of the 2-epoch encoder is moved aside, not continued from the longer
    # pretraining's (that would splice two experiments): fine-tuning starts again.
    archived = run / "finetune-after-2-pretrain-epochs"
    assert sorted(os.listdir(archived)) == ["final", "finetune", "logs_finetune", "results.json"]
    assert json.load(open(archived / "results.json"))["test"] == first["test"]
    before = _read_csv(archived / "finetune" / "epochs.csv")
    finetune_log = _read_csv(run / "finetune" / "epochs.csv")
    assert [int(r["epoch"]) for r in finetune_log] == [0, 1, 2] and len(before) == 2
    assert finetune_log[0]["loss"] != before[0]["loss"]
    assert "val_sampled_mrr" in finetune_log[0]
    # The validation pass inside each epoch is timed apart (training speed = the rest).
    for row in finetune_log:
        assert 0 < float(row["validation_seconds"]) < float(row["epoch_seconds"])
    assert set(second["finetune"]["evaluation_seconds"]) == {"valid", "test"}
    assert all(s > 0 for s in second["finetune"]["evaluation_seconds"].values())
    assert second["finetune"]["seconds"] == pytest.approx(
        sum(float(r["epoch_seconds"]) for r in finetune_log), rel=1e-6
    )
    # The pretraining summary is on disk once pretraining ends; a rerun of a finished
    # pretraining keeps it (last epoch's losses included) instead of an empty one.
    summary = json.load(open(run / run_dir_lib.PRETRAIN_SUMMARY))
    assert summary == json.loads(json.dumps(second["pretrain"]))
    assert summary["last_epoch"]["mip_loss"] > 0
    third = train.main(_args(data_dir, run, *FINISHED_RUN_FLAGS, *more))
    assert third["pretrain"] == summary
    assert len(_read_csv(run / "pretrain" / "epochs.csv")) == 3


@pytest.mark.slow
def test_zero_pretraining_epochs_fine_tune_from_scratch(data_dir, tmp_path):
    run = tmp_path / "run"
    results = train.main(_args(data_dir, run, "--pretrain_epochs", "0", "--finetune_epochs", "1"))
    assert results["finetune"]["init"] == "none"  # not a pretrained encoder that was never made
    assert "pretrain" not in results and not (run / "pretrain").exists()


@shares_the_run
def test_init_from_a_pretraining_checkpoint_loads_its_encoder(data_dir, finished_run, tmp_path):
    from s3rec_tf import builders
    from s3rec_tf import config as config_lib

    run = finished_run[0]
    config = config_lib.load(str(run / "config.json"))
    num_items = json.load(open(run / "data_metadata.json"))["num_items"]

    def loaded(source):
        encoder = builders.encoder_from_config(config.model, num_items)
        encoder(tf.zeros([1, 3], tf.int32))
        assert (
            phases.init_encoder(config.replace(init_from=source), encoder, str(run)) == "pretrained"
        )
        return encoder.get_weights()

    final = loaded(str(run / run_dir_lib.PRETRAINED_ENCODER))
    epoch_2 = loaded(str(run / "pretrain" / "checkpoints" / "ckpt-2"))
    epoch_1 = loaded(str(run / "pretrain" / "checkpoints" / "ckpt-1"))
    assert len(final) == len(epoch_2) > 0
    for a, b in zip(final, epoch_2):  # the last epoch's checkpoint holds the pretrained encoder
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(epoch_1, epoch_2))
    # And the CLI fine-tunes from it without pretraining again.
    results = train.main(
        _args(
            data_dir,
            tmp_path / "ft",
            "--rank",
            "4",
            "--init_from",
            str(run / "pretrain" / "checkpoints" / "ckpt-1"),
            "--finetune_epochs",
            "1",
        )
    )
    assert "pretrain" not in results and results["finetune"]["init"] == "pretrained"


def _read_csv(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


MIRRORED_SCRIPT = """
import sys, json
import keras_models  # Keras 2
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from s3rec_tf import phases, runtime, train
from s3rec_tf import run_dir as run_dir_lib
results = train.main(sys.argv[1:])
replicas = tf.distribute.MirroredStrategy().num_replicas_in_sync
print("RESULT", json.dumps({"test": results["test"], "replicas": replicas}))
"""


MIRRORED_VS_ONE_SCRIPT = """
import sys, json
import keras_models  # Keras 2
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from s3rec_tf import train
out = {"replicas": tf.distribute.MirroredStrategy().num_replicas_in_sync}
for strategy in ("mirrored", "default"):
    args = sys.argv[1:-1] + ["--strategy", strategy, "--output", sys.argv[-1] + "_" + strategy]
    out[strategy] = train.main(args)
parts = ("valid", "test", "finetune")
print("RESULT", json.dumps({k: v if k == "replicas" else {s: v[s] for s in parts}
                            for k, v in out.items()}))
"""


@pytest.mark.slow
def test_main_under_mirrored_strategy_on_two_cpus_equals_one_replica(data_dir, tmp_path):
    """Pretraining and fine-tuning on 2 replicas give the 1-replica run's weights and metrics (up
    to float rounding: the replicas' gradients are summed in another order). No dropout: the
    replicas draw their own masks."""
    preset = tmp_path / "no_dropout.yaml"
    preset.write_text("model:\n  dropout: 0.0\n  attention_dropout: 0.0\n")
    run = tmp_path / "run"
    args = [
        *_args(data_dir, run, "--rank", "4", "--pretrain_epochs", "1", "--finetune_epochs", "2"),
        "--config",
        str(preset),
    ]
    args = [a for a in args if a != str(run)]
    args.remove("--output")
    out = subprocess.run(
        [sys.executable, "-c", MIRRORED_VS_ONE_SCRIPT, *args, str(run)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT", 1)[1])
    assert result["replicas"] == 2
    mirrored, single = result["mirrored"], result["default"]
    assert mirrored["finetune"]["epochs_run"] == single["finetune"]["epochs_run"] == 2
    for split in ("valid", "test"):
        for protocol in ("sampled", "full"):
            for name, value in single[split][protocol].items():
                assert mirrored[split][protocol][name] == pytest.approx(
                    value, abs=MIRRORED_METRIC_ATOL
                ), (split, protocol, name)
    for phase, epochs in (("pretrain", 1), ("finetune", 2)):
        ours = tf.train.load_checkpoint(f"{run}_mirrored/{phase}/checkpoints/ckpt-{epochs}")
        theirs = tf.train.load_checkpoint(f"{run}_default/{phase}/checkpoints/ckpt-{epochs}")
        names = [  # the model's weights (its metrics' running sums are no weights)
            n
            for n in theirs.get_variable_to_shape_map()
            if n.startswith("model/") and "metrics" not in n and "loss_tracker" not in n
        ]
        assert len(names) > 20 and set(names) <= set(ours.get_variable_to_shape_map())
        for name in names:
            np.testing.assert_allclose(
                ours.get_tensor(name),
                theirs.get_tensor(name),
                rtol=0,
                atol=MIRRORED_WEIGHT_ATOL,
                err_msg=name,
            )


MIRRORED_METRIC_ATOL = 1e-6
MIRRORED_WEIGHT_ATOL = 2e-6


def test_jit_compile_on_several_cpu_replicas_stops_before_work(data_dir, tmp_path):
    args = _args(data_dir, tmp_path / "run", "--strategy", "mirrored", "--jit_compile")
    out = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 1, out.stderr[-3000:]
    assert "error: jit_compile with 2 CPU replicas" in out.stderr, out.stderr[-3000:]
    assert not (tmp_path / "run").exists()


@shares_the_run
def test_rerun_with_other_settings_or_data_refuses_to_continue_the_run(
    data_dir, finished_run, tmp_path
):
    run = _copy(finished_run[0], tmp_path)
    saved = (run / "config.json").read_text()
    checkpoints = sorted(os.listdir(run / "pretrain" / "checkpoints"))

    with pytest.raises(SystemExit) as e:
        train.main(_args(data_dir, run, "--rank", "2", "--seed", "7", "--pretrain_epochs", "3"))
    message = str(e.value)
    assert "model.aap_rank = 4 there, 2 now" in message and "seed = 42 there, 7 now" in message
    assert "pretrain.epochs = " not in message  # a longer run is a continuation
    other = tmp_path / "other_data"
    small_dataset(str(other), num_users=30, num_items=40, max_seq_length=10)
    with pytest.raises(SystemExit, match="metadata fields .*num_users"):
        train.main(_args(str(other), run, *FINISHED_RUN_FLAGS))
    # Nothing was touched: the run continues with its own settings.
    assert (run / "config.json").read_text() == saved
    assert sorted(os.listdir(run / "pretrain" / "checkpoints")) == checkpoints

    # The same data in another place is the same data: the finished run is taken as it stands.
    moved = tmp_path / "moved"
    subprocess.run(["cp", "-r", data_dir, str(moved)], check=True)
    same = ["--pretrain_epochs", "2", "--finetune_epochs", "2"]
    again = train.main(_args(str(moved), run, *FINISHED_RUN_FLAGS, *same))
    assert again["pretrain"] == json.loads(json.dumps(finished_run[1]["pretrain"]))
    assert again["finetune"]["epochs_run"] == 2 and again["test"] == finished_run[1]["test"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--rank", "0"], "model.aap_rank = 0"),
        (["--rank", "17"], "model.aap_rank = 17"),
        (["--rank", "abc"], "--rank must be an integer or 'full'"),
        (["--hidden_size", "15"], "must be divisible by model.num_heads"),
        (["--config", "no_such_preset"], "not found"),
        (["--valid_users", "-1"], "finetune.valid_users = -1"),
    ],
)
def test_bad_configuration_stops_with_a_clear_message(data_dir, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as e:
        train.main(_args(data_dir, tmp_path / "run", *extra))
    assert message in str(e.value)
    assert not (tmp_path / "run").exists()  # stopped before any work


def test_unknown_flag_stops(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--no_such_flag", "1"])
    assert "unrecognized arguments: --no_such_flag" in capsys.readouterr().err


def test_missing_or_incompatible_data_stops_before_work(data_dir, tmp_path):
    from s3rec_tf.data_files import DataError

    with pytest.raises(DataError, match="not the output of beam_pipelines.preprocess"):
        train.main(_args(str(tmp_path / "nowhere"), tmp_path / "run"))
    assert not (tmp_path / "run").exists()

    old = tmp_path / "old"
    small_dataset(str(old), num_users=10, num_items=40)
    meta = json.load(open(old / schema.METADATA_FILE))
    meta["format_version"] = schema.FORMAT_VERSION - 1
    json.dump(meta, open(old / schema.METADATA_FILE, "w"))
    with pytest.raises(DataError, match="format version"):
        train.main(_args(str(old), tmp_path / "run2"))
    assert not (tmp_path / "run2").exists()


def test_an_occupied_export_dir_fails_before_any_training(data_dir, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "something").write_text("x")
    from export.saved_model import ExportError

    with pytest.raises(ExportError, match="not empty"):
        train.main(_args(data_dir, tmp_path / "run0", "--export", str(occupied)))
    assert not (tmp_path / "run0").exists()  # refused before any training


def _fit_twice_seeded(jit_compile):
    """Item embeddings after the same seeded dropout training, twice, built under
    runtime.seeded_dropout."""
    from keras_models import S3RecEncoder
    from s3rec_tf import finetune as finetune_lib

    rng = np.random.default_rng(0)
    batch = {
        data_lib.INPUT_IDS: rng.integers(1, 31, [16, 8]),
        data_lib.TARGET_IDS: rng.integers(1, 31, [16, 8]),
        data_lib.NEGATIVE_IDS: rng.integers(1, 31, [16, 8, 1]),
    }
    results = []
    for _ in range(2):
        tf.keras.utils.set_random_seed(7)
        # As in train.run, everything happens inside: some sublayers (the attention's dropout)
        # are only made when the model is first called.
        with runtime.seeded_dropout():
            encoder = S3RecEncoder(
                30, max_seq_length=8, hidden_size=16, dropout=0.5, attention_dropout=0.5
            )
            model = finetune_lib.S3RecRecommender(encoder)
            model.compile(optimizer=tf.keras.optimizers.Adam(1e-2), jit_compile=jit_compile)
            model.fit(tf.data.Dataset.from_tensors(batch).repeat(5), verbose=0)
        results.append(encoder.item_embeddings.numpy())
    return results


@pytest.mark.slow
@pytest.mark.parametrize("jit_compile", [False, True])
def test_seeded_training_is_reproducible_with_and_without_xla(jit_compile):
    first, second = _fit_twice_seeded(jit_compile)
    np.testing.assert_array_equal(first, second)
    # The switch is undone on leaving, so later layers get the default random ops again.
    assert not tf.keras.backend.experimental.is_tf_random_generator_enabled()


def test_the_cli_sets_its_thread_pools_before_tensorflow_starts():
    """Resolving and validating the configuration starts no TensorFlow runtime, so main() can
    still set the thread pools (they cannot change once it runs)."""
    import subprocess
    import sys

    code = (
        "from s3rec_tf import runtime, train\n"
        "args = train.build_parser().parse_args(['--rank', '16', '--monitor', 'full_ndcg@10'])\n"
        "config = train.resolve_config(args)\n"
        "assert config.pretrains\n"
        "assert runtime.configure_threads(1, 2), 'TensorFlow had started'\n"
        "import tensorflow as tf\n"
        "threading = tf.config.threading\n"
        "got = (threading.get_intra_op_parallelism_threads(),\n"
        "       threading.get_inter_op_parallelism_threads())\n"
        "assert got == (1, 2), got\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
