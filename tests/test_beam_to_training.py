"""The Beam job's own output feeds training: the bundled sample through
`beam_pipelines.preprocess`, then `train.main` on that directory. (The README's first command, which
preprocesses the sample itself, runs in tests/test_packaging.py.)
"""

import json
import os

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
