"""Quality on the Amazon Beauty benchmark, beside the S3-Rec paper's numbers.

    python benchmarks/beauty_quality.py --data DIR --runs /tmp/s3rec_runs [--rows sasrec,reference]

DIR is the output of `beam_pipelines.preprocess --sequences Beauty.txt --item2attributes
Beauty_item2attributes.json`. Every row is an ordinary `s3rec_tf.train` run in its own run
directory, so an interrupted benchmark resumes where it stopped (rerun the same command), and a
long pretraining can be given in chunks (--pretrain_epochs grows the budget; the run continues
from its last checkpoint). The s3rec_r16_ce row fine-tunes the s3rec_r16 row's pretrained encoder:
it can start once that row's pretraining has ended (RUN_DIR/pretrain/summary.json), beside that
row's own fine-tuning. Rows are merged into reports/beauty_quality.json (one row per name) and
reports/beauty_quality.md; processes running side by side should each write their own --report
(the merge is read-modify-write) and `--merge` their reports into one afterwards; rerunning a
finished row only re-evaluates it.

Pretraining uses configs/reference_weights.yaml unless --config says otherwise: the objective
weights of the authors' code (AAP 0.2, MIP 1.0, MAP 1.0, SP 0.5), with which the paper's numbers
were made. Two rows can pretrain side by side, one process each with one TensorFlow thread
(TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1), which gets more epochs out of 2 cores than
one row at a time: 110-135 s per epoch for each row against 70-88 s for one row alone with the
default threads on a 2-core AMD EPYC, 125-157 s against 87-96 s on a 2-core Intel Xeon.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import machine  # noqa: E402
from s3rec_tf import config as config_lib  # noqa: E402
from s3rec_tf import run_dir as run_dir_lib  # noqa: E402
from s3rec_tf import train  # noqa: E402

REPORTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reports")

PAPER = {
    "SASRec (paper)": {"sampled": {"hr@10": 0.4696, "ndcg@10": 0.3156}},
    "S3-Rec (paper)": {
        "sampled": {"hr@10": 0.5506, "ndcg@10": 0.3732},
        "full": {"hr@10": 0.0647, "ndcg@10": 0.0327},
    },
    # The authors' rerun with every seed fixed (RUCAIBox/CIKM2020-S3Rec, reproduce/README.md and
    # its logs Finetune_sample-Beauty-{0,150}.txt), on their own 99 sampled negatives per user.
    "SASRec (authors' repo)": {"sampled": {"hr@10": 0.4651, "ndcg@10": 0.3142}},
    "S3-Rec (authors' repo)": {"sampled": {"hr@10": 0.5687, "ndcg@10": 0.3816}},
}

# name -> (init, rank, fine-tuning loss)
ROWS = {
    "sasrec": ("none", None, "bce"),
    "s3rec_full": ("pretrained", None, "bce"),
    "s3rec_r16": ("pretrained", 16, "bce"),
    "s3rec_r16_ce": ("pretrained", 16, "ce"),
    "reference": ("reference", None, "bce"),
}
# Rows that differ from another only in the fine-tuning loss fine-tune that row's pretrained
# encoder: the pretraining would be the same run (same config and seed), hours of it.
SHARED_PRETRAINING = {"s3rec_r16_ce": "s3rec_r16"}


def _pretraining_of(name, args) -> dict:
    """Where a row's encoder comes from and what its pretraining cost (epochs, wall time)."""
    init = ROWS[name][0]
    if init == "reference":
        return {"init_from": args.reference, "source": None}
    if init == "none":
        return {"init_from": None, "source": None}
    source = SHARED_PRETRAINING.get(name)
    if source is None:
        return {"init_from": None, "source": name}
    run_dir = os.path.join(args.runs, source)
    encoder = os.path.join(run_dir, run_dir_lib.PRETRAINED_ENCODER)
    # Only that row's pretraining must have finished: its fine-tuning may still be running.
    if not os.path.exists(
        os.path.join(run_dir, run_dir_lib.PRETRAIN_SUMMARY)
    ) or not os.path.exists(encoder + ".index"):
        sys.exit(
            f"error: row {name} fine-tunes the encoder pretrained by row {source}; run that row "
            f"first ({run_dir} has no finished pretraining)."
        )
    return {"init_from": encoder, "source": source}


def run_row(name, args) -> dict:
    init, rank, loss = ROWS[name]
    pretraining = _pretraining_of(name, args)
    config = (
        config_lib.load(args.config or None)
        .replace(
            **{
                "data.data_dir": args.data,
                "output_dir": os.path.join(args.runs, name),
                "model.aap_rank": rank,
                "finetune.loss": loss,
                "finetune.epochs": args.finetune_epochs,
                "pretrain.epochs": args.pretrain_epochs,
                "no_pretrain": init == "none",
                "init_from": pretraining["init_from"],
                "seed": args.seed,
            }
        )
        .validate()
    )
    start = time.time()
    results = train.run(config, verbose=args.verbose)
    finetune = results["finetune"]
    pretrain = {"epochs": 0, "seconds": 0.0, "timed_epochs": 0}
    if pretraining["source"] is not None:
        source_dir = os.path.join(args.runs, pretraining["source"])
        with open(os.path.join(source_dir, run_dir_lib.PRETRAIN_SUMMARY)) as f:
            summary = json.load(f)
        source_config = config_lib.load(os.path.join(source_dir, "config.json"))
        pretrain = dict(summary, config=source_config.to_dict()["pretrain"])
    return {
        "name": name,
        "init": init,
        # SASRec has no attribute heads, so no rank.
        "rank": None if init == "none" else ("full" if rank is None else rank),
        "loss": loss,
        "finetune_loss_normalizer": config.finetune.loss_normalizer,
        "pretrain_epochs": pretrain["epochs"]
        if init == "pretrained"
        else (150 if init == "reference" else 0),
        "pretrain_budget": (
            "the authors' released checkpoint (150 epochs of their pretraining)"
            if init == "reference"
            else _budget(pretraining["source"], pretrain)
        ),
        "pretrained_by": pretraining["source"]
        if pretraining["source"] not in (None, name)
        else None,
        "objective_weights": (
            {k: pretrain["config"][f"{k}_weight"] for k in ("aap", "mip", "map", "sp")}
            if "config" in pretrain
            else None
        ),
        "finetune_epochs": finetune["epochs_run"],
        "best_epoch": finetune["best_epoch"],
        "wall_seconds": {
            # Sums of epoch times over every chunk of the run (see ResumableTraining).
            "pretrain": pretrain["seconds"],
            "pretrain_timed_epochs": pretrain["timed_epochs"],
            "finetune": results["wall_seconds"]["finetune"],
            "total_this_invocation": time.time() - start,
        },
        "parameters": results["parameters"],
        "machine": machine(),
        # Thread settings change the epoch times (rows may pretrain side by side, one thread each).
        "tf_threads": {
            "intra_op": os.environ.get("TF_NUM_INTRAOP_THREADS", "default"),
            "inter_op": os.environ.get("TF_NUM_INTEROP_THREADS", "default"),
        },
        "valid": results["valid"],
        "test": results["test"],
    }


def _budget(source, pretrain) -> str | None:
    if source is None:
        return None
    untimed = pretrain["epochs"] - pretrain["timed_epochs"]
    return (
        f"our pretraining, row {source}: {pretrain['epochs']} epochs, "
        f"{pretrain['seconds'] / 3600:.1f} h of epoch time"
        + (
            f" for {pretrain['timed_epochs']} of them ({untimed} ran before epochs were timed)"
            if untimed
            else ""
        )
    )


def markdown(rows) -> str:
    legend = (
        "Sampled = target vs the user's 99 sampled negatives (the paper's table); full = vs all "
        "12,101 items, history items excluded. Ties count against the target."
    )
    if any(r["finetune_loss_normalizer"] != "dataset" for r in rows):
        legend += (
            ' "÷ batch count": each batch\'s loss divided by its own number of targets '
            '(finetune.loss_normalizer "batch", the only way before 2026-12-01), which with '
            "length-bucketed batches is not the reference's objective; the other rows divide by "
            "the "
            'expected number ("dataset", the reference\'s objective).'
        )
    lines = [
        "# Amazon Beauty: test metrics",
        "",
        legend,
        "",
        "| model | init | rank | loss | pretrain epochs | sampled HR@10 | sampled NDCG@10 | "
        "full HR@10 | full NDCG@10 | finetune epochs | wall s (pretrain / finetune) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, paper in PAPER.items():
        s, f = paper.get("sampled", {}), paper.get("full", {})
        fmt = lambda d, k: f"{d[k]:.4f}" if k in d else "–"  # noqa: E731
        lines.append(
            f"| {name} | | | bce | {150 if name.startswith('S3-Rec') else 0} | "
            f"{fmt(s, 'hr@10')} | {fmt(s, 'ndcg@10')} | "
            f"{fmt(f, 'hr@10')} | {fmt(f, 'ndcg@10')} | | |"
        )
    for r in rows:
        s, f = r["test"]["sampled"], r["test"]["full"]
        lines.append(
            f"| {r['name']} | {r['init']} | {r['rank'] or '–'} | {r['loss']}"
            f"{'' if r['finetune_loss_normalizer'] == 'dataset' else ' (÷ batch count)'} | "
            f"{r['pretrain_epochs']} | "
            f"{s['hr@10']:.4f} | {s['ndcg@10']:.4f} | {f['hr@10']:.4f} | {f['ndcg@10']:.4f} | "
            f"{r['finetune_epochs']} (best {r['best_epoch']}) | "
            f"{r['wall_seconds']['pretrain']:.0f}{' (shared)' if r.get('pretrained_by') else ''} / "
            f"{r['wall_seconds']['finetune']:.0f} |"
        )
    lines += ["", "Pretraining of each row:", ""]
    for r in rows:
        weights = r.get("objective_weights")
        weights = (
            f"; objective weights AAP {weights['aap']}, MIP {weights['mip']}, "
            f"MAP {weights['map']}, SP {weights['sp']}"
            if weights
            else ""
        )
        lines.append(f"- {r['name']}: {r.get('pretrain_budget') or 'none'}{weights}.")
    lines += ["", "Machines:", ""]
    lines += [f"- {r['name']}: {r['machine']}." for r in rows]
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("s3rec_tf").setLevel(logging.INFO)
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", help="beam_pipelines.preprocess output for Beauty")
    p.add_argument("--runs", help="where the run directories go (outside the repo)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {list(ROWS)}")
    p.add_argument(
        "--reference",
        default=os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            "..",
            "shared",
            "reference",
            "s3rec_reference_beauty.npz",
        ),
    )
    p.add_argument(
        "--config",
        default="reference_weights",
        help="config preset of every row (default: the authors' objective weights, the recipe "
        "behind the paper's numbers; the weights matter only to rows with our own pretraining; "
        "'' for the library defaults)",
    )
    p.add_argument("--pretrain_epochs", type=int, default=150)
    p.add_argument("--finetune_epochs", type=int, default=200)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--verbose", type=int, default=2)
    p.add_argument("--report", default=os.path.join(REPORTS, "beauty_quality.json"))
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="REPORT",
        help="run nothing: merge the rows of these reports (each written by rows run side by side "
        "with their own --report) and their pretraining curves into --report",
    )
    p.add_argument(
        "--status",
        action="store_true",
        help="run nothing: print where each row's run directory under --runs stands (epochs "
        "finished of each phase's budget, epoch time so far), e.g. between the chunks of a long "
        "run",
    )
    args = p.parse_args(argv)
    unknown = set(args.rows.split(",")) - set(ROWS)
    if unknown:
        p.error(f"unknown rows {sorted(unknown)}; known: {list(ROWS)}")
    if args.status:
        if not args.runs:
            p.error("--status needs --runs")
        print(status_table(args.runs, args.rows.split(",")))
        return
    if not args.merge and not (args.data and args.runs):
        p.error("--data and --runs are required unless --merge is given")

    existing = {}
    if os.path.exists(args.report):
        existing = {r["name"]: r for r in json.load(open(args.report))["rows"]}
    if args.merge:
        for source in args.merge:
            if not os.path.exists(source):
                p.error(f"--merge: {source} does not exist")
            for row in json.load(open(source))["rows"]:
                existing[row["name"]] = row
                curve = _curve_path(source, row["name"])
                if os.path.exists(curve):
                    shutil.copyfile(curve, _curve_path(args.report, row["name"]))
        _write_report(args.report, existing)
        return
    for name in args.rows.split(","):
        existing[name] = run_row(name, args)
        epoch_log = os.path.join(args.runs, name, "pretrain", run_dir_lib.EPOCH_LOG)
        if os.path.exists(epoch_log):
            # The pretraining curve (losses and seconds per epoch) goes beside the report.
            shutil.copyfile(epoch_log, _curve_path(args.report, name))
        _write_report(args.report, existing)


def status_table(runs: str, names) -> str:
    """A markdown table of where each row's run stands (run_dir.run_status of its directory)."""
    lines = [
        "| row | state | pretraining epochs | fine-tuning epochs (best) | epoch time, h | "
        "test sampled HR@10 / NDCG@10 |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        status = run_dir_lib.run_status(os.path.join(runs, name))
        if status["state"] == "not started":
            lines.append(f"| {name} | not started | | | | |")
            continue
        pre, fine = status["pretrain"], status["finetune"]
        shared = SHARED_PRETRAINING.get(name)
        if shared:
            pretraining = f"those of {shared}"
        elif ROWS[name][0] == "pretrained":
            pretraining = f"{pre['epochs_done']} / {pre['epochs']}"
        else:
            pretraining = "none"
        test = status.get("test", {}).get("sampled")
        lines.append(
            f"| {name} | {status['state']} | {pretraining} | "
            f"{fine['epochs_done']} / {fine['epochs']}"
            f" ({fine['best_epoch']}) | {(pre['seconds'] + fine['seconds']) / 3600:.2f} | "
            + (f"{test['hr@10']:.4f} / {test['ndcg@10']:.4f} |" if test else "|")
        )
    return "\n".join(lines)


def _curve_path(report: str, name: str) -> str:
    return os.path.splitext(report)[0] + f"_{name}_pretrain_epochs.csv"


def _write_report(report: str, rows_by_name: dict) -> None:
    """The report's JSON and markdown table, rows in the order of ROWS."""
    rows = [rows_by_name[n] for n in ROWS if n in rows_by_name]
    os.makedirs(os.path.dirname(os.path.abspath(report)), exist_ok=True)
    with open(report, "w") as f:
        json.dump({"paper": PAPER, "rows": rows}, f, indent=2)
    with open(os.path.splitext(report)[0] + ".md", "w") as f:
        f.write(markdown(rows))


if __name__ == "__main__":
    main()
