"""benchmarks/beauty_quality.py on a toy dataset: rows, shared pretraining, the merged report."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import beauty_quality  # noqa: E402


def _main(data_dir, tmp_path, rows, report="report.json"):
    beauty_quality.main(
        [
            "--data",
            data_dir,
            "--runs",
            str(tmp_path / "runs"),
            "--rows",
            rows,
            "--report",
            str(tmp_path / report),
            "--pretrain_epochs",
            "2",
            "--finetune_epochs",
            "1",
            "--verbose",
            "0",
        ]
    )
    return {r["name"]: r for r in json.load(open(tmp_path / report))["rows"]}


@pytest.mark.slow
def test_ce_row_fine_tunes_the_r16_pretraining(data_dir, tmp_path):
    with pytest.raises(SystemExit, match="run that row first"):
        _main(data_dir, tmp_path, "s3rec_r16_ce")
    done = _main(data_dir, tmp_path, "s3rec_r16")["s3rec_r16"]
    runs = str(tmp_path / "runs")
    table = beauty_quality.status_table(runs, ["s3rec_r16", "s3rec_r16_ce"])
    seconds = done["wall_seconds"]["pretrain"] + done["wall_seconds"]["finetune"]
    test = done["test"]["sampled"]
    assert (
        f"| s3rec_r16 | finished | 2 / 2 | 1 / 1 (1) | {seconds / 3600:.2f} | "
        f"{test['hr@10']:.4f} / {test['ndcg@10']:.4f} |" in table
    ), table
    assert "| s3rec_r16_ce | not started |" in table
    # Only the r16 row's pretraining must be over (its summary and encoder), not its fine-tuning:
    # the CE row can fine-tune beside it.
    os.remove(tmp_path / "runs" / "s3rec_r16" / "results.json")
    assert "| s3rec_r16 | fine-tuning | 2 / 2 | 1 / 1 (1) |" in beauty_quality.status_table(
        runs, ["s3rec_r16"]
    )
    # Side by side, each process writes its own report; --merge joins them afterwards.
    ce_only = _main(data_dir, tmp_path, "s3rec_r16_ce", report="ce.json")
    assert list(ce_only) == ["s3rec_r16_ce"]
    beauty_quality.main(
        ["--merge", str(tmp_path / "ce.json"), "--report", str(tmp_path / "report.json")]
    )
    rows = {r["name"]: r for r in json.load(open(tmp_path / "report.json"))["rows"]}
    assert (
        list(rows) == ["s3rec_r16", "s3rec_r16_ce"]
        and rows["s3rec_r16_ce"] == ce_only["s3rec_r16_ce"]
    )
    r16, ce = rows["s3rec_r16"], rows["s3rec_r16_ce"]
    assert (
        "| s3rec_r16_ce | finished | those of s3rec_r16 | 1 / 1 (1) |"
        in beauty_quality.status_table(runs, ["s3rec_r16_ce"])
    )
    assert (r16["loss"], ce["loss"]) == ("bce", "ce") and r16["rank"] == ce["rank"] == 16
    # The CE row ran no pretraining of its own: it reports the r16 row's.
    assert ce["pretrained_by"] == "s3rec_r16" and r16["pretrained_by"] is None
    assert not os.path.exists(tmp_path / "runs" / "s3rec_r16_ce" / "pretrain" / "checkpoints")
    assert ce["pretrain_epochs"] == r16["pretrain_epochs"] == 2
    assert ce["wall_seconds"]["pretrain"] == r16["wall_seconds"]["pretrain"] > 0
    assert r16["wall_seconds"]["pretrain_timed_epochs"] == 2
    assert "2 epochs" in ce["pretrain_budget"]
    assert (
        ce["objective_weights"]
        == r16["objective_weights"]
        == {"aap": 0.2, "mip": 1.0, "map": 1.0, "sp": 0.5}
    )
    for row in (r16, ce):
        for protocol in ("sampled", "full"):
            assert 0.0 <= row["test"][protocol]["ndcg@10"] <= row["test"][protocol]["hr@10"] <= 1.0
    curve = open(tmp_path / "report_s3rec_r16_pretrain_epochs.csv").read().splitlines()
    assert curve[0].startswith("epoch,aap_loss,epoch_seconds") and len(curve) == 3
    assert not os.path.exists(tmp_path / "report_s3rec_r16_ce_pretrain_epochs.csv")
    table = open(tmp_path / "report.md").read()
    assert "| s3rec_r16_ce | pretrained | 16 | ce | 2 |" in table and "(shared)" in table
    assert "| s3rec_r16 | pretrained | 16 | bce | 2 |" in table
    # The legend explains the old per-batch normalizer only when a row used it.
    assert "batch count" not in table
    r16_old = dict(r16, finetune_loss_normalizer="batch")
    assert "| s3rec_r16 | pretrained | 16 | bce (÷ batch count) | 2 |" in beauty_quality.markdown(
        [r16_old]
    )
    assert '"÷ batch count": each batch\'s loss' in beauty_quality.markdown([r16_old])


def test_merge_needs_existing_reports_and_run_needs_data(tmp_path, capsys):
    with pytest.raises(SystemExit):
        beauty_quality.main(
            ["--merge", str(tmp_path / "missing.json"), "--report", str(tmp_path / "r.json")]
        )
    assert "missing.json does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        beauty_quality.main(["--rows", "sasrec"])
    assert "--data and --runs are required" in capsys.readouterr().err
