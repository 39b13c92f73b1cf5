"""--mixed_precision: 16-bit compute, float32 logits / losses / metrics, float32 serving."""

import csv
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from s3rec_tf import config as config_lib
from s3rec_tf import run_dir as run_dir_lib
from s3rec_tf import train


def test_a_config_saved_before_mixed_precision_existed_reads_as_off(tmp_path):
    old = config_lib.Config().replace(**{"model.aap_rank": 16}).to_dict()
    del old["mixed_precision"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    loaded = config_lib.load_saved(str(path))
    assert loaded.mixed_precision == "off"
    now = config_lib.Config().replace(**{"model.aap_rank": 16})
    assert config_lib.differences(loaded, now) == {}  # such a run directory still resumes


def test_config_json_names_the_precision_only_when_it_is_not_the_default(tmp_path):
    config_lib.save(config_lib.Config(), str(tmp_path / "off.json"))
    assert "mixed_precision" not in json.loads((tmp_path / "off.json").read_text())
    mixed = config_lib.Config().replace(mixed_precision="mixed_bfloat16")
    config_lib.save(mixed, str(tmp_path / "mixed.json"))
    assert config_lib.load_saved(str(tmp_path / "mixed.json")) == mixed
    assert config_lib.load_saved(str(tmp_path / "off.json")) == config_lib.Config()


def test_unknown_precision_is_refused():
    with pytest.raises(config_lib.ConfigError, match="mixed_precision = 'float8'"):
        config_lib.Config().replace(mixed_precision="float8").validate()


def _losses(run, phase):
    with open(run_dir_lib.epoch_log(str(run), phase)) as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


@pytest.mark.slow
def test_mixed_bfloat16_trains_like_float32_and_exports_float32_scores(tmp_path):
    common = ["--config", "sample", "--rank", "4", "--hidden_size", "16", "--verbose", "0"]
    common += ["--pretrain_epochs", "2", "--finetune_epochs", "2"]
    train.main([*common, "--output", str(tmp_path / "float32")])
    results = train.main(
        [*common, "--output", str(tmp_path / "bfloat16"), "--mixed_precision", "mixed_bfloat16"]
        + ["--export", str(tmp_path / "model")]
    )
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    assert results["config"]["mixed_precision"] == "mixed_bfloat16"
    for phase in ("pretrain", "finetune"):
        full, mixed = _losses(tmp_path / "float32", phase), _losses(tmp_path / "bfloat16", phase)
        assert all(math.isfinite(v) for v in mixed), mixed
        assert mixed[1] < mixed[0], (phase, mixed)
        np.testing.assert_allclose(mixed, full, rtol=0.05, err_msg=phase)
    for protocol in ("sampled", "full"):
        assert 0.0 <= results["test"][protocol]["hr@10"] <= 1.0

    data_dir = results["config"]["data"]["data_dir"]
    with open(f"{data_dir}/vocab/items.txt") as f:
        raw_ids = [line.strip() for line in f][:3]
    model = tf.saved_model.load(str(tmp_path / "model"))
    out = model.signatures["serving_default"](history=tf.constant([raw_ids]))
    assert out["scores"].dtype == tf.float32 and np.isfinite(out["scores"].numpy()).all()
    embedding = model.signatures["user_embedding"](history=tf.constant([raw_ids]))["embedding"]
    assert embedding.dtype == tf.float32
