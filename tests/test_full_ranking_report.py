"""The full-catalogue study's report (`python -m s3rec_tf.study.full_ranking`) on made-up sweeps:
its numbers against NumPy / SciPy, recipes told apart by their configs, choices on validation."""

import json
import os

import numpy as np
import pytest
from scipy import stats

from s3rec_tf.study import full_ranking

BCE = {"loss": "bce", "learning_rate": 0.001, "monitor": "sampled_mrr", "patience": 10}
CE = {"loss": "ce", "learning_rate": 0.0005, "monitor": "full_ndcg@10", "patience": 10}
REFERENCE_WEIGHTS = {"aap_weight": 0.2, "mip_weight": 1.0, "map_weight": 1.0, "sp_weight": 0.5}
DEFAULT_WEIGHTS = {"aap_weight": 1.0, "mip_weight": 0.2, "map_weight": 1.0, "sp_weight": 0.5}


def _metrics(rng, base, history_zero):
    out = {
        "full": {
            "hr@10": base * 1.9 + rng.normal(0, 0.002),
            "ndcg@10": base + rng.normal(0, 0.001),
        },
        "sampled": {"hr@10": 0.5 + rng.normal(0, 0.01), "ndcg@10": 0.37 + rng.normal(0, 0.01)},
    }
    if history_zero:
        out["full_history_zero"] = {k: v * 0.99 for k, v in out["full"].items()}
    return out


def _sweep(path, finetune, base, seeds=3, pretrained_from=None, valid_shift=0.0, pending=()):
    rng = np.random.default_rng(int(base * 1e4))
    runs = []
    for rank, bonus in (("none", 0.0), ("full", 0.002)):
        for seed in range(1, seeds + 1):
            pretrain = dict(DEFAULT_WEIGHTS if pretrained_from else REFERENCE_WEIGHTS, epochs=50)
            entry = {
                "name": f"{rank}-s{seed}",
                "rank": rank,
                "seed": seed,
                "pretrain_epochs": 0 if rank == "none" else 50,
                "test": _metrics(rng, base + bonus, finetune["loss"] == "ce"),
                "valid": _metrics(rng, base + bonus + valid_shift * (rank == "none"), False),
                "config": {
                    "finetune": dict(finetune, history_zero_metrics=finetune["loss"] == "ce"),
                    "model": {"dropout": 0.5, "attention_dropout": 0.5, "hidden_size": 64},
                    "pretrain": pretrain,
                    "seed": seed,
                    "output_dir": f"/runs/{rank}-s{seed}",
                },
            }
            if pretrained_from and rank != "none":
                source = dict(REFERENCE_WEIGHTS, epochs=50)
                entry["pretrained_from"] = {"run_dir": "/elsewhere", "pretrain": source}
            runs.append(entry)
    with open(path, "w") as f:
        sweep = {"runs": runs, "command": ["python", "-m", "s3rec_tf.sweep"], "pending": pending}
        json.dump(sweep, f)
    return runs


@pytest.fixture
def sweeps(tmp_path):
    bce = _sweep(tmp_path / "bce.json", BCE, 0.030)
    ce = _sweep(tmp_path / "ce.json", CE, 0.054, pretrained_from="/elsewhere", pending=["s4"])
    return [str(tmp_path / "bce.json"), str(tmp_path / "ce.json")], bce, ce


def _row(text, *starts):
    rows = [line for line in text.splitlines() if line.startswith("| " + " | ".join(starts))]
    assert len(rows) == 1, (starts, rows)
    return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_every_cell_is_the_numpy_mean_sd_and_t_interval(sweeps, tmp_path):
    paths, _, ce = sweeps
    full_paths = full_ranking.write(paths, str(tmp_path / "out"))
    text = open(full_paths[1]).read()
    recipe = "ce, lr 0.0005, dropout 0.5, monitor full_ndcg@10"
    row = _row(text, recipe, "S3-Rec full rank")
    values = np.array([r["test"]["full"]["ndcg@10"] for r in ce if r["rank"] == "full"])
    half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / np.sqrt(3)
    want = (
        f"{values.mean():.4f} ± {values.std(ddof=1):.4f} "
        f"[{values.mean() - half:.4f}, {values.mean() + half:.4f}]"
    )
    assert row[:4] == [recipe, "S3-Rec full rank", "3", "50"] and row[5] == want
    bce_row = _row(text, "bce, lr 0.001, dropout 0.5, monitor sampled_mrr", "SASRec")
    assert bce_row[6] == bce_row[7] == "—"  # no history-score-0 metrics in that sweep
    # Pretrained − SASRec, paired by seed.
    sasrec = {r["seed"]: r["test"]["full"]["ndcg@10"] for r in ce if r["rank"] == "none"}
    pretrained = {r["seed"]: r["test"]["full"]["ndcg@10"] for r in ce if r["rank"] == "full"}
    diff = np.array([pretrained[s] - sasrec[s] for s in (1, 2, 3)])
    row = _row(text, f"{recipe}: S3-Rec full rank − SASRec", "full NDCG@10")
    assert row[2:4] == ["3", f"{diff.mean():+.4f}"]
    record = json.load(open(full_paths[0]))
    assert {(r["loss"], r["rank"]) for r in record["runs"]} == {
        ("bce", "none"),
        ("bce", "full"),
        ("ce", "none"),
        ("ce", "full"),
    }
    assert all("full_history_zero" in r["test"] for r in record["runs"] if r["loss"] == "ce")
    assert os.path.getsize(full_paths[2]) > 1000
    assert f"`{paths[1]}`: 6 runs finished, pending s4; `python -m s3rec_tf.sweep`" in text


def test_recipes_differ_by_what_changed_and_pretraining_is_read_from_its_source(sweeps, tmp_path):
    paths, _, _ = sweeps
    text = full_ranking.markdown(*full_ranking.collect(paths))
    changed = (
        "finetune.learning_rate 0.001 → 0.0005; finetune.loss 'bce' → 'ce'; "
        "finetune.monitor 'sampled_mrr' → 'full_ndcg@10'"
    )
    # S3-Rec's ce runs record the default objective weights in their own config, but were
    # fine-tuned from a pretraining with the reference weights (pretrained_from): no change.
    assert _row(text, "S3-Rec full rank")[2] == changed
    # SASRec never pretrains: its configs' pretraining fields are not a difference.
    assert _row(text, "SASRec", "ce, lr")[2] == changed


def test_the_best_model_is_chosen_on_validation_and_the_goal_says_how_far(tmp_path):
    _sweep(tmp_path / "ce.json", CE, 0.054, valid_shift=0.01)
    runs, sweeps_ = full_ranking.collect([str(tmp_path / "ce.json")])
    grouped = full_ranking.groups(runs)
    recipe = next(iter(grouped))[0]
    # SASRec is better on validation (shifted), S3-Rec on test: the pick follows validation.
    assert full_ranking.best_group(grouped, pretrained=False) == (recipe, "none")
    assert full_ranking.best_group(grouped, pretrained=True) == (recipe, "full")
    goal = "\n".join(full_ranking.goal_lines(grouped))
    mean = np.mean([r["test"]["full"]["ndcg@10"] for r in runs if r["rank"] == "full"])
    assert f"NDCG@10 {mean:.4f} ({mean - 0.062:+.4f}, not reached)" in goal


def test_the_same_recipe_model_and_seed_twice_is_refused_and_output_is_reproducible(
    sweeps, tmp_path
):
    paths, _, _ = sweeps
    with pytest.raises(ValueError, match="more than one sweep"):
        full_ranking.collect([paths[0], paths[0]])
    first = [open(p, "rb").read() for p in full_ranking.write(paths, str(tmp_path / "a"))[:2]]
    again = [open(p, "rb").read() for p in full_ranking.write(paths, str(tmp_path / "b"))[:2]]
    assert first == again
    runs, _ = full_ranking.collect(paths, models=["none"])
    assert {r["rank"] for r in runs} == {"none"} and len(runs) == 6
    with pytest.raises(SystemExit, match="error: .*nowhere.json"):
        full_ranking.main([str(tmp_path / "nowhere.json"), "--output", str(tmp_path / "c")])


def test_one_setting_at_a_time_pairs_the_best_recipe_with_its_neighbours(sweeps, tmp_path):
    paths, _, ce = sweeps
    # Two recipes one setting away from CE (the best on validation): its learning rate, and
    # its monitor; BCE differs in three settings, so it has no row here.
    lr = _sweep(tmp_path / "lr.json", dict(CE, learning_rate=0.001), 0.050)
    _sweep(tmp_path / "monitor.json", dict(CE, monitor="sampled_mrr"), 0.052)
    more = [str(tmp_path / "lr.json"), str(tmp_path / "monitor.json")]
    grouped = full_ranking.groups(full_ranking.collect(paths + more)[0])
    text = "\n".join(full_ranking.one_factor_table(grouped))
    row = _row(text, "S3-Rec full rank", "finetune.learning_rate 0.0005 → 0.001")
    best = {r["seed"]: r["test"]["full"]["ndcg@10"] for r in ce if r["rank"] == "full"}
    other = {r["seed"]: r["test"]["full"]["ndcg@10"] for r in lr if r["rank"] == "full"}
    diff = np.array([best[s] - other[s] for s in (1, 2, 3)])
    half = stats.t.ppf(0.975, 2) * diff.std(ddof=1) / np.sqrt(3)
    want = f"{diff.mean():+.4f} [{diff.mean() - half:+.4f}, {diff.mean() + half:+.4f}]"
    assert row[2:4] == ["3", want]
    assert _row(text, "SASRec", "finetune.monitor 'full_ndcg@10' → 'sampled_mrr'")
    assert "finetune.loss" not in text
    assert len(text.splitlines()) == 2 + 2 * 2  # header, then two rows per model
