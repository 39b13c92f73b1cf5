"""benchmarks/catalogue_scale.py in miniature: every stage runs, the report has the issue's fields,
and a second invocation continues from the stages already done."""

import json
import os

import numpy as np
import pytest

from benchmarks import catalogue_scale
from export import serving


@pytest.mark.slow
def test_a_tiny_catalogue_end_to_end_then_resumed(tmp_path):
    work = tmp_path / "work"
    argv = [
        "--items", "300", "--interactions_per_item", "10", "--shards", "2",
        "--serve_users", "0", "--requests", "10", "--batches", "2", "--valid_users", "20",
        "--work_dir", str(work), "--output", str(tmp_path / "scale.json"),
        # Beam's in-memory runner: the multi-process one is the Beam tests' (its start alone
        # doubled this test's Beam stage).
        "--beam_workers", "0",
    ]  # fmt: skip
    if not serving.scann_available():
        argv.append("--no_scann")
    report = catalogue_scale.main(argv)
    (row,) = report["rows"]
    assert json.load(open(tmp_path / "scale.json")) == json.loads(json.dumps(report))
    assert (tmp_path / "scale.md").read_text().startswith("# Catalogue scale")

    run = work / "items-300" / "run"
    results = json.load(open(run / "results.json"))
    metadata = json.load(open(work / "items-300" / "data" / "metadata.json"))
    assert row["items"] == metadata["num_items"] and 250 < row["items"] <= 300
    assert row["interactions"] == metadata["num_interactions"]
    assert row["table_and_slots_mb"] == 3 * (row["items"] + 2) * 64 * 4 / 2**20
    assert results["config"]["finetune"]["loss"] == "sampled_softmax"
    assert row["valid_users"] == 20 and row["eval_users"] == metadata["num_users"]
    assert row["eval_seconds"] == results["finetune"]["evaluation_seconds"]["test"]
    assert row["train_examples_per_second"] > 0 and row["pretrain_examples_per_second"] > 0
    # Each phase's own peak, all of the training process; training = pretraining + fine-tuning.
    phases = row["peak_rss_mb_by_phase"]
    assert list(phases) == ["pretrain", "finetune", "valid_eval", "test_eval", "after"]
    assert row["peak_rss_mb"] == max(phases["pretrain"], phases["finetune"])
    assert row["eval_peak_rss_mb"] == phases["test_eval"] and 100 < row["eval_peak_rss_mb"]

    indexes = ["brute_force"] + (["scann"] if serving.scann_available() else [])
    assert list(row["serving"]) == indexes and list(row["export_seconds"]) == indexes
    for index in indexes:
        served = row["serving"][index]
        assert 0 < served["p50_ms"] <= served["p99_ms"]
        assert served["per_second_batch_256"] > 0
    if "scann" in indexes:
        assert 0.9 <= row["serving"]["scann"]["recall@10"] <= 1.0
    # Served through the SavedModel, every test user: the evaluation's full HR@10 except the
    # users whose target is in their history (the evaluation still ranks it, serving never does).
    users = row["serve_users"]
    assert users == metadata["num_users"]
    served_hits = round(row["serving"]["brute_force"]["served_test_hr@10"] * users)
    evaluated_hits = round(results["test"]["full"]["hr@10"] * users)
    assert 0 <= evaluated_hits - served_hits <= row["serve_targets_in_history"]

    # Killed after its stages: the same command measures the serving again and reuses the rest.
    stages = (work / "items-300" / "stages.json").read_text()
    beam_log = os.path.getmtime(work / "items-300" / "preprocess.log")
    again = catalogue_scale.main(argv)
    assert (work / "items-300" / "stages.json").read_text() == stages
    assert os.path.getmtime(work / "items-300" / "preprocess.log") == beam_log
    (row_again,) = again["rows"]
    assert row_again["peak_rss_mb"] == row["peak_rss_mb"]
    assert np.isclose(
        row_again["serving"]["brute_force"]["served_test_hr@10"],
        row["serving"]["brute_force"]["served_test_hr@10"],
    )
