"""`python -m s3rec_tf.study.full_ranking`: the full-catalogue study's report, from several sweeps.

    python -m s3rec_tf.study.full_ranking reports/rank_study/sweep.json CE_SWEEP/sweep.json \\
        SAMPLED_256_SWEEP/sweep.json --output reports/full_ranking

Each sweep (`python -m s3rec_tf.sweep`, one per fine-tuning recipe, e.g. `--config full_ranking`
or `--loss sampled_softmax --num_samples 256`, pretrained ranks sharing one pretraining through
`--pretrained_from`) contributes its finished runs. A run's **recipe** is what its fine-tuning
was: loss (and k for the sampled softmax), learning rate, dropout and early-stopping monitor,
read from its config; its **model** is its rank (SASRec = "none").

Writes OUTPUT/full_ranking.json (`runs`: the sweeps' entries, each with `recipe` and `loss`
added; `anchors`; `sweeps`), OUTPUT/full_ranking.md (tables: every recipe and model on the test
split, pretrained − SASRec paired by seed, recipe against recipe paired by seed with what
changed, the published systems beside ours, the goal) and OUTPUT/full_ranking.png. The same
sweeps give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Optional

import numpy as np

from s3rec_tf import config as config_lib
from s3rec_tf.metric_names import HEADLINE
from s3rec_tf.study import report as rank_report

# Published full-ranking results on exactly this Beauty split (22,363 users, 12,101 items,
# leave-one-out, hidden size 64), history items' scores set to 0 (their evaluation): from the
# authors' released logs / READMEs.
ANCHORS = (
    ("WEARec (AAAI 2026)", 0.1041, 0.0614, "xhy963319431/WEARec src/output/"
     "WEARec_K_50_Beauty_0.5_0.0005_0.2_8.log"),
    ("BSARec (AAAI 2024)", 0.1008, 0.0611, "yehjin-shin/BSARec src/output/BSARec_Beauty_best.log"),
    ("eSASRec (RecSys 2025)", 0.0928, 0.0523, "blondered/transformer_benchmark README"),
    ("SASRec + sampled softmax, 256 negatives", 0.0921, 0.0531,
     "blondered/transformer_benchmark README"),
)  # fmt: skip
GOAL = {"hr@10": 0.105, "ndcg@10": 0.062}  # above WEARec's, under both history conventions
PAPER_SAMPLED = {"hr@10": 0.5506, "ndcg@10": 0.3732}  # S3-Rec's Beauty row (sampled 99)
PROTOCOLS = ("full", "full_history_zero", "sampled")
PROTOCOL_LABELS = {
    "full": "full",
    "full_history_zero": "full, history scores 0",
    "sampled": "sampled 99",
}
# What tells two recipes apart (config fields); other fields must agree within a recipe.
RECIPE_FIELDS = (
    "finetune.loss",
    "finetune.num_samples",
    "finetune.sampler",
    "finetune.learning_rate",
    "finetune.monitor",
    "finetune.patience",
    "model.dropout",
    "model.attention_dropout",
)


def _config(entry: dict) -> config_lib.Config:
    """A sweep entry's config; a field added after the run was made reads as the run's value."""
    return config_lib.from_dict(entry["config"], source=f"the config of run {entry['name']}")


def recipe_of(entry: dict) -> dict:
    """The fine-tuning recipe of a sweep entry: RECIPE_FIELDS (the sampled softmax's settings
    only for it)."""
    flat = config_lib.flatten(_config(entry).to_dict())
    recipe = {k: flat[k] for k in RECIPE_FIELDS}
    if recipe["finetune.loss"] != "sampled_softmax":
        recipe.pop("finetune.num_samples")
        recipe.pop("finetune.sampler")
    return recipe


def recipe_label(recipe: dict) -> str:
    loss = recipe["finetune.loss"]
    if loss == "sampled_softmax":
        loss = (
            f"sampled softmax k = {recipe['finetune.num_samples']} ({recipe['finetune.sampler']})"
        )
    return (
        f"{loss}, lr {recipe['finetune.learning_rate']:g}, dropout {recipe['model.dropout']:g}, "
        f"monitor {recipe['finetune.monitor']}"
    )


def collect(
    sweep_paths: Sequence[str], models: Optional[Sequence] = None
) -> tuple[list[dict], list[dict]]:
    """(runs, sweeps): every finished run of the sweeps (of the ranks in `models`, all when None),
    with `recipe` (its label) and `loss`."""
    runs, sweeps = [], []
    for path in sweep_paths:
        with open(path) as f:
            sweep = json.load(f)
        sweeps.append(
            {
                "path": path,
                "command": sweep.get("command"),
                "runs": len(sweep["runs"]),
                "pending": sweep.get("pending", []),
            }
        )
        for entry in sweep["runs"]:
            if models is not None and entry["rank"] not in models:
                continue
            source = entry.get("pretrained_from")
            if source:  # pretrained in another sweep: its pretraining settings are the run's
                entry = dict(entry, config=dict(entry["config"], pretrain=source["pretrain"]))
            recipe = recipe_of(entry)
            runs.append(dict(entry, recipe=recipe_label(recipe), loss=recipe["finetune.loss"]))
    keys = [(r["recipe"], r["rank"], r["seed"]) for r in runs]
    duplicates = sorted({k for k in keys if keys.count(k) > 1}, key=str)
    if duplicates:
        raise ValueError(f"the same recipe, model and seed in more than one sweep: {duplicates}")
    return runs, sweeps


def groups(runs: list[dict]) -> dict[tuple, list[dict]]:
    """{(recipe, rank): runs by seed}, recipes in the order first seen, SASRec first."""
    order = list(dict.fromkeys(r["recipe"] for r in runs))
    out: dict[tuple, list[dict]] = {}
    for run in sorted(
        runs,
        key=lambda r: (order.index(r["recipe"]), rank_report.rank_order(r["rank"]), r["seed"]),
    ):
        out.setdefault((run["recipe"], run["rank"]), []).append(run)
    return out


def _values(runs, protocol, metric) -> dict[int, float]:
    """{seed: test metric} of the runs evaluated under `protocol`."""
    return rank_report.values([r for r in runs if protocol in r["test"]], protocol, metric)


def _cell(runs, protocol, metric) -> str:
    v = list(_values(runs, protocol, metric).values())
    if not v:
        return "—"
    text = f"{np.mean(v):.4f}"
    interval = rank_report.t_interval(v)
    if interval is not None:
        text += f" ± {np.std(v, ddof=1):.4f} [{interval[1]:.4f}, {interval[2]:.4f}]"
    return text


def _model(rank) -> str:
    return "SASRec" if rank == "none" else f"S3-Rec {rank_report.rank_label(rank)}"


def _pretrain_epochs(runs) -> str:
    epochs = sorted({r["pretrain_epochs"] for r in runs})
    return ", ".join(map(str, epochs))


def metrics_table(grouped) -> list[str]:
    head = ["recipe", "model", "seeds", "pretraining epochs"] + [
        f"{PROTOCOL_LABELS[p]} {m.upper()}" for p in PROTOCOLS for m in HEADLINE
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (recipe, rank), runs in grouped.items():
        cells = [recipe, _model(rank), str(len(runs)), _pretrain_epochs(runs)]
        cells += [_cell(runs, p, m) for p in PROTOCOLS for m in HEADLINE]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _difference_row(label, a_runs, b_runs, protocol, metric) -> Optional[str]:
    diff = rank_report.paired_difference(
        _values(a_runs, protocol, metric), _values(b_runs, protocol, metric)
    )
    if diff is None:
        return None
    interval = diff["interval"]
    text = "—" if interval is None else f"[{interval[0]:+.4f}, {interval[1]:+.4f}]"
    return (
        f"| {label} | {PROTOCOL_LABELS[protocol]} {metric.upper()} | {len(diff['seeds'])} | "
        f"{diff['mean']:+.4f} | {text} | {rank_report.verdict(diff)} |"
    )


def pretraining_table(grouped) -> list[str]:
    lines = [
        "| recipe: model − SASRec | metric | paired seeds | mean difference | 95 % interval | "
        "verdict |",
        "|---|---|---:|---:|---|---|",
    ]
    for (recipe, rank), runs in grouped.items():
        sasrec = grouped.get((recipe, "none"))
        if rank == "none" or not sasrec:
            continue
        for protocol in PROTOCOLS:
            for metric in HEADLINE:
                row = _difference_row(
                    f"{recipe}: {_model(rank)} − SASRec", runs, sasrec, protocol, metric
                )
                if row:
                    lines.append(row)
    return lines


def changed_fields(a_runs, b_runs) -> str:
    """What differs between two groups' configs (their first runs'), as 'field b → a'."""
    return "; ".join(_changes(a_runs, b_runs)) or "nothing recorded"


def _changes(a_runs, b_runs) -> list[str]:
    diff = config_lib.differences(_config(b_runs[0]), _config(a_runs[0]))
    # Where things were, and what does not change the model: evaluation extras, execution.
    skip = {"output_dir", "data.data_dir", "init_from", "seed", "finetune.history_zero_metrics"}
    skip |= {"finetune.eval_item_chunk", "strategy", "jit_compile"}
    sasrec = a_runs[0]["rank"] == "none"  # its pretraining settings are never used
    changes = [
        f"{k} {before!r} → {after!r}"
        for k, (before, after) in sorted(diff.items())
        if k not in skip and not (sasrec and k.startswith("pretrain."))
    ]
    if a_runs[0]["pretrain_epochs"] != b_runs[0]["pretrain_epochs"]:
        changes.append(
            f"pretraining epochs {b_runs[0]['pretrain_epochs']} → {a_runs[0]['pretrain_epochs']}"
        )
    return changes


def _difference_cells(runs, baseline) -> tuple[int, list[str]]:
    """(paired seeds, [full NDCG@10, full HR@10] cells of runs − baseline)."""
    cells, seeds = [], 0
    for metric in ("ndcg@10", "hr@10"):
        diff = rank_report.paired_difference(
            _values(runs, "full", metric), _values(baseline, "full", metric)
        )
        if diff is None:
            cells.append("—")
            continue
        seeds = len(diff["seeds"])
        interval = diff["interval"]
        cells.append(
            f"{diff['mean']:+.4f}"
            + ("" if interval is None else f" [{interval[0]:+.4f}, {interval[1]:+.4f}]")
        )
    return seeds, cells


def one_factor_table(grouped) -> list[str]:
    """For each model, its best recipe (on validation) against every recipe one setting away
    from it, paired by seed: what that one setting of the best recipe is worth."""
    lines = [
        "| model | best recipe's setting → the other | paired seeds | full NDCG@10, best − other "
        "[95 % interval] | full HR@10, best − other [95 % interval] |",
        "|---|---|---:|---|---|",
    ]
    for rank in dict.fromkeys(rank for _, rank in grouped):
        of_model = {key: runs for key, runs in grouped.items() if key[1] == rank}
        best = _best_on_validation(of_model)
        for key, runs in of_model.items():
            if key == best:
                continue
            changes = _changes(runs, grouped[best])
            if len(changes) != 1:
                continue
            seeds, cells = _difference_cells(grouped[best], runs)
            lines.append(f"| {_model(rank)} | {changes[0]} | {seeds} | {cells[0]} | {cells[1]} |")
    return lines


def ablation_table(grouped) -> list[str]:
    """Every recipe against the first recipe given, model by model, paired by seed."""
    recipes = list(dict.fromkeys(recipe for recipe, _ in grouped))
    lines = [
        "| model | recipe − baseline recipe | what changed | paired seeds | full NDCG@10 "
        "difference [95 % interval] | full HR@10 difference [95 % interval] |",
        "|---|---|---|---:|---|---|",
    ]
    if len(recipes) < 2:
        return lines
    base = recipes[0]
    for (recipe, rank), runs in grouped.items():
        baseline = grouped.get((base, rank))
        if recipe == base or not baseline:
            continue
        seeds, cells = _difference_cells(runs, baseline)
        lines.append(
            f"| {_model(rank)} | {recipe} − {base} | {changed_fields(runs, baseline)} | "
            f"{seeds} | {cells[0]} | {cells[1]} |"
        )
    return lines


def _best_on_validation(candidates: dict) -> Optional[tuple]:
    """The key of {key: runs} with the highest mean validation full NDCG@10 (chosen on
    validation, never on test); None when there is none."""
    scored = [
        (np.mean([r["valid"]["full"]["ndcg@10"] for r in runs]), key)
        for key, runs in candidates.items()
    ]
    return max(scored)[1] if scored else None


def best_group(grouped, pretrained: bool) -> Optional[tuple]:
    """The best (recipe, rank) on validation among pretrained models or SASRec."""
    return _best_on_validation(
        {key: runs for key, runs in grouped.items() if (key[1] != "none") == pretrained}
    )


def anchors_table(grouped) -> list[str]:
    lines = [
        "| system | seeds | HR@10 | NDCG@10 | protocol | source |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name, hr, ndcg, source in ANCHORS:
        lines.append(f"| {name} | 1 | {hr:.4f} | {ndcg:.4f} | history scores 0 | {source} |")
    for pretrained in (True, False):
        key = best_group(grouped, pretrained)
        if key is None:
            continue
        runs = grouped[key]
        for protocol in ("full_history_zero", "full"):
            hr, ndcg = (_values(runs, protocol, m) for m in HEADLINE)
            if not hr:
                continue
            hr_mean, ndcg_mean = np.mean(list(hr.values())), np.mean(list(ndcg.values()))
            lines.append(
                f"| ours: {_model(key[1])}, {key[0]} | {len(hr)} | {hr_mean:.4f} | "
                f"{ndcg_mean:.4f} | {PROTOCOL_LABELS[protocol]} | this study |"
            )
    return lines


def goal_lines(grouped) -> list[str]:
    key = best_group(grouped, pretrained=True)
    if key is None:
        return ["No pretrained run finished yet."]
    runs = grouped[key]
    lines = [
        f"Best pretrained recipe on validation full NDCG@10: {_model(key[1])}, {key[0]} "
        f"({len(runs)} seeds). Goal: mean test full NDCG@10 ≥ {GOAL['ndcg@10']} and HR@10 ≥ "
        f"{GOAL['hr@10']} over ≥ 3 seeds under both history conventions.",
        "",
    ]
    for protocol in ("full", "full_history_zero"):
        parts = []
        for metric in ("ndcg@10", "hr@10"):
            v = list(_values(runs, protocol, metric).values())
            if not v:
                continue
            gap = np.mean(v) - GOAL[metric]
            state = (
                "reached"
                if gap >= 0 and len(v) >= 3
                else ("not reached" if gap < 0 else "above, fewer than 3 seeds")
            )
            parts.append(f"{metric.upper()} {np.mean(v):.4f} ({gap:+.4f}, {state})")
        if parts:
            lines.append(f"- {PROTOCOL_LABELS[protocol]}: " + "; ".join(parts))
    sampled = [
        f"{m.upper()} {np.mean(list(_values(runs, 'sampled', m).values())):.4f} (paper "
        f"{PAPER_SAMPLED[m]})"
        for m in HEADLINE
    ]
    lines.append("- sampled 99 (must stay at or above the paper's): " + "; ".join(sampled))
    return lines


def markdown(runs, sweeps) -> str:
    grouped = groups(runs)
    lines = [
        "# Full-catalogue ranking: which fine-tuning recipe, and does pretraining help on top?",
        "",
        "Test split of Beauty (22,363 users, 12,101 items, leave-one-out). Cells: mean ± sd "
        "[95 % t-interval of the mean] over seeds; full = the target against every item, the "
        "user's history items left out; full, history scores 0 = the history items kept as "
        "candidates with score 0 (BSARec's and WEARec's evaluation); sampled 99 = against the "
        "user's 99 sampled negatives (the S3-Rec paper's). Ties count against the target. "
        "Recipes and the best model are chosen on validation.",
        "",
        "## Every recipe and model",
        "",
        *metrics_table(grouped),
        "",
        "## Does pretraining help on top of the loss? Pretrained − SASRec, paired by seed",
        "",
        f"Verdicts: 'higher' / 'lower' when the interval excludes 0, 'not resolved' when not, "
        f"'too few seeds' below {rank_report.MIN_SEEDS_FOR_VERDICT} paired seeds.",
        "",
        *pretraining_table(grouped),
        "",
        "## What moved the number: each recipe against the first, paired by seed",
        "",
        *ablation_table(grouped),
        "",
        "## One setting at a time: each model's best recipe (on validation) against the recipes "
        "one setting away from it, paired by seed",
        "",
        *one_factor_table(grouped),
        "",
        "## Beside the published systems",
        "",
        *anchors_table(grouped),
        "",
        "## The goal",
        "",
        *goal_lines(grouped),
        "",
        "## Sweeps",
        "",
        *[
            f"- `{s['path']}`: {s['runs']} run{'s' if s['runs'] != 1 else ''} finished"
            + (f", pending {', '.join(s['pending'])}" if s["pending"] else "")
            + f"; `{' '.join(s['command'] or [])}`"
            for s in sweeps
        ],
        "",
        "![full NDCG@10 by recipe and model](full_ranking.png)",
        "",
    ]
    return "\n".join(lines)


def plot(runs, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped = groups(runs)
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.55 * len(grouped) + 1.8), sharey=True)
    labels = [f"{_model(rank)}\n{recipe}" for recipe, rank in grouped]
    for ax, protocol in zip(axes, ("full", "full_history_zero")):
        for y, runs_ in enumerate(grouped.values()):
            v = list(_values(runs_, protocol, "ndcg@10").values())
            if not v:
                continue
            ax.plot(v, [y] * len(v), "o", color="0.6", markersize=4)
            interval = rank_report.t_interval(v)
            low, high = (interval[1], interval[2]) if interval else (np.mean(v),) * 2
            ax.errorbar(
                np.mean(v), y, xerr=[[np.mean(v) - low], [high - np.mean(v)]], fmt="s",
                color="C0", capsize=3,
            )  # fmt: skip
        if protocol == "full_history_zero":
            for (name, _, ndcg, _), style in zip(ANCHORS[:2], ("--", ":")):
                ax.axvline(ndcg, color="C3", linestyle=style, label=name)
            ax.legend(fontsize=7, loc="lower right")
        ax.set_title(f"test {PROTOCOL_LABELS[protocol]} NDCG@10", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(labels)), labels, fontsize=7)
    axes[0].invert_yaxis()
    fig.tight_layout()
    rank_report._save(fig, path)


def write(sweep_paths: Sequence[str], output: str, models: Optional[Sequence] = None) -> list[str]:
    runs, sweeps = collect(sweep_paths, models)
    os.makedirs(output, exist_ok=True)
    record = {
        "runs": runs,
        "sweeps": sweeps,
        "anchors": [dict(zip(("system", "hr@10", "ndcg@10", "source"), a)) for a in ANCHORS],
    }
    paths = [os.path.join(output, f"full_ranking.{ext}") for ext in ("json", "md", "png")]
    with open(paths[0], "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
    with open(paths[1], "w") as f:
        f.write(markdown(runs, sweeps))
    plot(runs, paths[2])
    return paths


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="python -m s3rec_tf.study.full_ranking", description=__doc__)
    p.add_argument("sweeps", nargs="+", help="sweep.json files, one per recipe")
    p.add_argument("--output", required=True, help="report directory")
    p.add_argument(
        "--models",
        nargs="+",
        help="only these ranks (integers, 'full', 'none' for SASRec); default: every run's",
    )
    args = p.parse_args(argv)
    models = None
    if args.models:
        try:
            models = [m if m in ("full", "none") else int(m) for m in args.models]
        except ValueError:
            p.error(f"--models {' '.join(args.models)}: ranks are integers, 'full' or 'none'.")
    try:
        for path in write(args.sweeps, args.output, models):
            print(path)
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
