"""The Beam job's own output feeds training: the bundled sample through
`beam_pipelines.preprocess`, then `train.main` on that directory; and the README's first command.
"""

import json
import os
import subprocess
import sys

import pytest

from s3rec_tf import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "beam_pipelines", "sample_data")

pytestmark = pytest.mark.slow


def test_training_on_the_beam_jobs_output_of_the_bundled_sample(tmp_path):
    from beam_pipelines import preprocess

    data = tmp_path / "data"
    preprocess.run(
        [
            "--reviews",
            os.path.join(SAMPLE, "reviews_Sample_5.json.gz"),
            "--metadata",
            os.path.join(SAMPLE, "meta_Sample.json.gz"),
            "--output",
            str(data),
            "--dupe_factor",
            "2",
        ]
    )
    metadata = json.load(open(data / "metadata.json"))
    assert metadata["num_users"] == 496 and metadata["num_items"] == 310
    run = tmp_path / "run"
    results = train.main(
        [
            "--data",
            str(data),
            "--output",
            str(run),
            "--rank",
            "4",
            "--hidden_size",
            "16",
            "--pretrain_epochs",
            "2",
            "--finetune_epochs",
            "2",
            "--verbose",
            "0",
        ]
    )
    on_disk = json.load(open(run / "results.json"))
    assert on_disk["test"] == results["test"]
    assert json.load(open(run / "data_metadata.json")) == metadata
    assert results["config"]["data"]["data_dir"] == str(data)
    assert results["pretrain"]["epochs"] == 2 and results["finetune"]["epochs_run"] == 2
    # Both pretraining epochs ran on the Beam output (dupe factor 2: one duplicate each).
    assert [
        int(r.split(",")[0]) for r in open(run / "pretrain" / "epochs.csv").readlines()[1:]
    ] == [0, 1]
    for split in ("valid", "test"):
        for protocol in ("sampled", "full"):
            assert set(on_disk[split][protocol]) == {
                "hr@1",
                "hr@5",
                "hr@10",
                "hr@20",
                "ndcg@5",
                "ndcg@10",
                "ndcg@20",
                "mrr",
            }
            assert all(0.0 <= v <= 1.0 for v in on_disk[split][protocol].values())
    # Every user of the Beam output is evaluated (metrics are multiples of 1/496).
    hits = on_disk["test"]["sampled"]["hr@20"] * metadata["num_users"]
    assert abs(hits - round(hits)) < 1e-3 and round(hits) > 0


def test_the_readmes_first_command(tmp_path):
    """`python -m s3rec_tf.train --rank 16 --config sample --output runs/sample`, exactly, from a
    cold cache: the bundled sample preprocessed by Beam on first use, then the sample preset."""
    run = tmp_path / "runs" / "sample"
    env = dict(os.environ, S3REC_CACHE=str(tmp_path / "cache"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "s3rec_tf.train",
            "--rank",
            "16",
            "--config",
            "sample",
            "--output",
            str(run),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    cached = [d for d in os.listdir(tmp_path / "cache") if d.startswith("sample-v")]
    assert len(cached) == 1
    results = json.load(open(run / "results.json"))
    assert results["config"]["data"]["data_dir"] == str(tmp_path / "cache" / cached[0])
    assert results["config"]["model"]["aap_rank"] == 16
    assert results["pretrain"]["epochs"] == 10
    assert 1 <= results["finetune"]["epochs_run"] <= 30
    # Chance is 0.10 (1 target among 100 candidates); on the sample a last-item transition
    # recommender reaches 0.70 (README).
    assert results["test"]["sampled"]["hr@10"] > 0.3
    assert "Test: sampled HR@10" in out.stderr
