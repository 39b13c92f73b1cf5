"""Catalogue scale, end to end: synthetic data -> Beam job -> pretraining and fine-tuning epochs
-> full-ranking evaluation -> export -> serving, with each stage's time and peak memory.

    python -m benchmarks.catalogue_scale --items 100000 1000000 --work_dir /tmp/scale \\
        [--interactions_per_item 8] [--valid_users 2000] [--serve_users 5000] [--note "..."]

Per catalogue size, in `--work_dir/items-N/` (each stage is skipped when its output is there, so
a killed benchmark continues where it stopped):
  1. raw/: `benchmarks.synthetic_data` in the Amazon 2023 format, N items, N x
     --interactions_per_item reviews, popularity exponent --popularity_exponent (long-tailed);
  2. data/: the Beam job (DirectRunner, --beam_workers processes; `preprocess_scale.run_job`,
     which also samples the workers' memory), `--item_core 1` so that the catalogue the model
     sees stays near N (users still 5-core), `--dupe_factor 1`;
  3. run/: `python -m s3rec_tf.train`, one pretraining epoch and one fine-tuning epoch with
     the catalogue-scale loss (sampled_softmax, popularity proposal, logQ), validation on
     --valid_users users, then the full evaluation of the test split (every user, every item);
  4. export-brute_force/, export-scann/: `python -m export.saved_model`;
  5. serving: both SavedModels loaded in this process, queried with the test users' histories
     (raw ids, as a client sends them): latency at batch 1, throughput at batch 256, ScaNN's
     recall@10 against brute force and the served test HR@10 of both.
Peak memory of a stage is the peak resident set of its process (VmHWM), reset with
/proc/PID/clear_refs where the training log marks a new phase, so `peak_rss_mb` is training alone
(pretraining and fine-tuning epochs) and `eval_peak_rss_mb` the test evaluation alone.
Writes --output (JSON, one row per size) and the markdown beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Optional

import numpy as np

from benchmarks import common, preprocess_scale, synthetic_data
from s3rec_tf import jsonfile
from s3rec_tf.study.runs import read_epoch_log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORTS = os.path.join(REPO, "reports")

# Log lines of s3rec_tf.train / phases that open a phase, in order.
PHASE_MARKERS = (
    ("pretrain", "Pretraining from epoch"),
    ("finetune", "Fine-tuning from epoch"),
    ("valid_eval", "on valid."),
    ("test_eval", "on test."),
    ("after", "Evaluated."),
)


def _mb(kilobytes: int) -> float:
    return kilobytes / 1024.0


def _status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def run_watched(command: list[str], log_path: str, markers=()) -> dict:
    """Runs `command`, its output to `log_path`; returns wall seconds, the process's peak RSS
    (MB) and, for each marker (name, text) seen in its output, the peak RSS and the seconds from
    that marker to the next. Fails with the log's tail when the command fails."""
    start = time.time()
    phases: dict = {}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # lines as they happen, in order
        )
        current = None
        pending = list(markers)

        peaks = []  # every phase's peak, and the one before the first marker

        def close_phase():
            peak = _mb(_status_kb(process.pid, "VmHWM"))
            peaks.append(peak)
            if current is not None:
                phases[current]["peak_rss_mb"] = peak
                phases[current]["seconds"] = time.time() - phases[current]["start"]
                del phases[current]["start"]

        for line in process.stdout:
            log.write(line)
            log.flush()  # the log can be followed while the stage runs
            for index, (name, text) in enumerate(pending):
                if text in line:
                    close_phase()
                    # A new high-water mark from here on: the phase's own peak.
                    with open(f"/proc/{process.pid}/clear_refs", "w") as f:
                        f.write("5")
                    current = name
                    phases[name] = {"start": time.time()}
                    del pending[: index + 1]
                    break
        _, status, usage = os.wait4(process.pid, 0)
        last = usage.ru_maxrss / 1024.0  # kB on Linux: the peak since the last reset
        peaks.append(last)
        if current is not None:
            phases[current]["peak_rss_mb"] = last
            phases[current]["seconds"] = time.time() - phases[current]["start"]
            del phases[current]["start"]
    if status != 0:
        with open(log_path) as f:
            tail = "".join(f.readlines()[-30:])
        raise RuntimeError(f"{' '.join(command)} failed (status {status}); {log_path}:\n{tail}")
    return {
        "seconds": time.time() - start,
        "peak_rss_mb": max(peaks),
        "phases": phases,
    }


def _stage(work: str, name: str, make) -> dict:
    """A stage's record, computed once: kept in work/stages.json."""
    path = os.path.join(work, "stages.json")
    records = jsonfile.read(path) or {}
    if name not in records:
        records[name] = make()
        jsonfile.write(path, records)
    return records[name]


def make_data(work: str, args, items: int) -> dict:
    raw = os.path.join(work, "raw")
    interactions = items * args.interactions_per_item

    def generate():
        start = time.time()
        summary = synthetic_data.write(
            raw,
            interactions,
            formats=["2023"],
            shards=args.shards,
            seed=args.seed,
            num_items=items,
            popularity_exponent=args.popularity_exponent,
            taste=args.taste,
        )
        return {"seconds": time.time() - start, "raw_interactions": interactions, **summary}

    raw_summary = _stage(work, "raw", generate)
    data = os.path.join(work, "data")

    def preprocess():
        runner = (
            ["--direct_running_mode=multi_processing", f"--direct_num_workers={args.beam_workers}"]
            if args.beam_workers
            else ["--direct_running_mode=in_memory"]
        )
        return preprocess_scale.run_job(
            REPO,
            os.path.join(raw, "2023", "reviews-*"),
            os.path.join(raw, "2023", "meta-*"),
            data,
            runner_flags=runner,
            job_flags=["--item_core", "1", "--dupe_factor", "1"],
            log_path=os.path.join(work, "preprocess.log"),
        )

    beam = _stage(work, "beam", preprocess)
    from s3rec_tf import data_files

    metadata = data_files.read_metadata(data)
    return {"data_dir": data, "metadata": metadata, "beam": beam, "raw": raw_summary}


def train(work: str, args, data_dir: str) -> dict:
    run = os.path.join(work, "run")
    command = [
        sys.executable,
        "-m",
        "s3rec_tf.train",
        "--data",
        data_dir,
        "--output",
        run,
        "--pretrain_epochs",
        str(args.pretrain_epochs),
        "--finetune_epochs",
        "1",
        "--loss",
        "sampled_softmax",
        "--sampler",
        "popularity",
        "--num_samples",
        str(args.num_samples),
        "--valid_users",
        str(args.valid_users),
        "--seed",
        str(args.seed),
        "--verbose",
        "2",
    ]
    watched = _stage(
        work,
        "train",
        lambda: run_watched(command, os.path.join(work, "train.log"), PHASE_MARKERS),
    )
    from s3rec_tf import run_dir as run_dir_lib

    results = run_dir_lib.read_json(run_dir_lib.path(run, run_dir_lib.RESULTS_FILE))
    return {"run_dir": run, "watched": watched, "results": results}


def _epoch_row(run_dir: str, phase: str) -> dict:
    """The first (the benchmark's only) row of a phase's epochs.csv."""
    from s3rec_tf import run_dir as run_dir_lib

    return read_epoch_log(run_dir_lib.epoch_log(run_dir, phase))[0]


def export(work: str, run_dir: str, index: str) -> dict:
    out = os.path.join(work, f"export-{index}")
    command = [
        sys.executable,
        "-m",
        "export.saved_model",
        "--run_dir",
        run_dir,
        "--output",
        out,
        "--index",
        index,
        "--overwrite",
    ]
    record = _stage(
        work,
        f"export_{index}",
        lambda: run_watched(command, os.path.join(work, f"export-{index}.log")),
    )
    return {"dir": out, **record}


def test_queries(data_dir: str, metadata: dict, size: int, seed: int) -> tuple[list, list]:
    """(histories, targets) as raw ids of `size` test users drawn from `seed` (0: all)."""
    from s3rec_tf import data as data_lib
    from s3rec_tf import schema

    with open(os.path.join(data_dir, schema.ITEM_VOCAB)) as f:
        raw_ids = np.array([""] + [line.rstrip("\n") for line in f])
    users = data_lib.user_sample(metadata["num_users"], size, seed)
    histories, targets = [], []
    # Only the full histories are read; the model inputs (the last max_seq_length) go unused.
    test = data_lib.eval_dataset(data_dir, "test", 256, max_seq_length=1, users=users, cache=False)
    for batch in test:
        for history, target in zip(batch[data_lib.HISTORY].numpy(), batch[data_lib.TARGET]):
            histories.append(list(raw_ids[history[history > 0]]))
            targets.append(str(raw_ids[int(target)]))
    return histories, targets


def _drawer(histories: list, seed: int):
    """count -> that many of `histories`, drawn from `seed` (the same requests for each index)."""
    rng = np.random.default_rng(seed)
    return lambda count: [histories[i] for i in rng.integers(0, len(histories), count)]


def serve(exports: dict, histories: list, targets: list, args) -> dict:
    """Latency and throughput (`serving_speed.benchmark`), the top-10 of every query, served
    HR@10, per index."""
    import tensorflow as tf

    from benchmarks.serving_speed import as_request, benchmark
    from export import serving

    results, answers = {}, {}
    for index, export_dir in exports.items():
        if index == "scann":
            import scann  # noqa: F401  (registers ScaNN's ops before loading)
        signature = tf.saved_model.load(export_dir).signatures[serving.SERVING_SIGNATURE]
        timed = benchmark(signature, _drawer(histories, args.seed + 1), args)
        top = []
        for start in range(0, len(histories), args.batch_size):
            chunk = histories[start : start + args.batch_size]
            top.extend(signature(history=as_request(chunk))["item_ids"].numpy().astype(str))
        answers[index] = top
        results[index] = {
            "p50_ms": timed["latency_ms"]["p50"],
            "p99_ms": timed["latency_ms"]["p99"],
            "per_second_batch_256": timed["throughput"]["histories_per_second"],
            "served_test_hr@10": float(np.mean([t in row for t, row in zip(targets, top)])),
        }
    if "scann" in answers:
        overlap = [
            len(set(s) & set(b)) / len(b) for s, b in zip(answers["scann"], answers["brute_force"])
        ]
        results["scann"]["recall@10"] = float(np.mean(overlap))
    return results


def measure(items: int, args) -> dict:
    work = os.path.join(args.work_dir, f"items-{items}")
    os.makedirs(work, exist_ok=True)
    data = make_data(work, args, items)
    metadata = data["metadata"]
    trained = train(work, args, data["data_dir"])
    phases = trained["watched"]["phases"]
    results = trained["results"]
    finetune_row = _epoch_row(trained["run_dir"], "finetune")
    pretrained = args.pretrain_epochs > 0
    pretrain_row = _epoch_row(trained["run_dir"], "pretrain") if pretrained else {}
    train_seconds = finetune_row["epoch_seconds"] - finetune_row["validation_seconds"]
    num_items, hidden = metadata["num_items"], results["config"]["model"]["hidden_size"]
    indexes = ["brute_force"] + (["scann"] if args.scann else [])
    exports = {index: export(work, trained["run_dir"], index) for index in indexes}
    histories, targets = test_queries(data["data_dir"], metadata, args.serve_users, args.seed)
    serving = serve({i: e["dir"] for i, e in exports.items()}, histories, targets, args)
    return {
        "items": num_items,
        "catalogue_items": items,
        "interactions": metadata["num_interactions"],
        "users": metadata["num_users"],
        "attributes": metadata["num_attributes"],
        "beam_seconds": data["beam"]["wall_seconds"],
        # The DirectRunner's controller process and the largest of its SDK worker processes
        # (0: none, the in_memory mode).
        "beam_controller_peak_rss_mb": data["beam"]["peak_controller_rss_mb"],
        "beam_worker_peak_rss_mb": data["beam"]["peak_worker_rss_mb"],
        "train_examples": metadata["num_split_examples"]["train"],
        "train_examples_per_second": metadata["num_split_examples"]["train"] / train_seconds,
        "finetune_epoch_seconds": train_seconds,
        "pretrain_examples": metadata["num_pretrain_examples"],
        # None: the run did not pretrain (--pretrain_epochs 0).
        "pretrain_epoch_seconds": pretrain_row.get("epoch_seconds"),
        "pretrain_examples_per_second": metadata["num_pretrain_examples"]
        / pretrain_row["epoch_seconds"]
        if pretrained
        else None,
        "peak_rss_mb": max(
            phases[p]["peak_rss_mb"] for p in ("pretrain", "finetune") if p in phases
        ),
        # In the order the phases run (stages.json keeps its keys sorted).
        "peak_rss_mb_by_phase": {
            name: phases[name]["peak_rss_mb"] for name, _ in PHASE_MARKERS if name in phases
        },
        # The embedding table [N + 2, d] and Adam's two slots of the same shape, float32.
        "table_and_slots_mb": 3 * (num_items + 2) * hidden * 4 / 2**20,
        "eval_seconds": results["finetune"]["evaluation_seconds"]["test"],
        "eval_users": metadata["num_split_examples"]["test"],
        "eval_peak_rss_mb": phases["test_eval"]["peak_rss_mb"],
        "valid_users": results["finetune"]["valid_users"],
        "test_full": results["test"]["full"],
        "export_seconds": {i: e["seconds"] for i, e in exports.items()},
        "export_peak_rss_mb": {i: e["peak_rss_mb"] for i, e in exports.items()},
        "serve_users": len(targets),
        # Served answers never hold a history item; the evaluation still ranks such a target.
        "serve_targets_in_history": int(sum(t in h for h, t in zip(histories, targets))),
        "serving": serving,
        "scann_options": _export_info(exports["scann"]["dir"]).get("scann_options")
        if "scann" in exports
        else None,
        "taste": data["raw"].get("taste", 0.0),
    }


def _export_info(export_dir: str) -> dict:
    from export import saved_model

    return jsonfile.read(os.path.join(export_dir, saved_model.EXPORT_INFO_FILE))


def _number(value) -> str:
    return "not run" if value is None else f"{value:.0f}"


def markdown(report: dict) -> str:
    rows = report["rows"]
    lines = [
        "# Catalogue scale (issue 31)",
        "",
        f"`{report['command']}`",
        "",
        "| items | interactions | users | Beam s | fine-tune ex/s | pretrain ex/s "
        "| train peak RSS MB | table+slots MB | test eval s | eval peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['items']:,} | {r['interactions']:,} | {r['users']:,} | "
            f"{r['beam_seconds']:.0f} | {r['train_examples_per_second']:.0f} | "
            f"{_number(r['pretrain_examples_per_second'])} | {r['peak_rss_mb']:.0f} | "
            f"{r['table_and_slots_mb']:.0f} | {r['eval_seconds']:.0f} | "
            f"{r['eval_peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        "| items | index | export s | p50 ms | p99 ms | per s at batch 256 | recall@10 "
        "| served test HR@10 |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for index, s in r["serving"].items():
            recall = f"{s['recall@10']:.4f}" if "recall@10" in s else ""
            lines.append(
                f"| {r['items']:,} | {index} | {r['export_seconds'][index]:.0f} | "
                f"{s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s['per_second_batch_256']:,.0f} | "
                f"{recall} | {s['served_test_hr@10']:.4f} |"
            )
    lines.append("")
    for r in rows:
        ratio = r["peak_rss_mb"] / r["table_and_slots_mb"]
        lines.append(
            f"- {r['items']:,} items: training peak RSS {ratio:.1f} x (table + Adam slots); "
            f"validation on {r['valid_users']:,} users, the test evaluation on all "
            f"{r['eval_users']:,}; serving queried with {r['serve_users']:,} test users' "
            f"histories; ScaNN options {r['scann_options']}; synthetic taste {r['taste']}."
        )
    lines += ["", f"Machine: {report['machine']}."]
    if report.get("note"):
        lines.append(f"Note: {report['note']}")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.catalogue_scale", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--interactions_per_item", type=int, default=8, help="raw reviews per item")
    p.add_argument("--popularity_exponent", type=float, default=0.5)
    p.add_argument(
        "--taste",
        type=float,
        default=0.0,
        help="synthetic_data --taste (users' favourite category)",
    )
    p.add_argument("--shards", type=int, default=8, help="raw files per kind")
    p.add_argument(
        "--beam_workers", type=int, default=2, help="DirectRunner processes (0: in_memory mode)"
    )
    p.add_argument(
        "--pretrain_epochs", type=int, default=1, help="0: fine-tune from scratch (no pretraining)"
    )
    p.add_argument("--num_samples", type=int, default=1024, help="sampled_softmax negatives")
    p.add_argument("--valid_users", type=int, default=2000, help="0: validate on every user")
    p.add_argument("--serve_users", type=int, default=5000, help="test users queried (0: all)")
    p.add_argument("--requests", type=int, default=500, help="single requests timed")
    p.add_argument("--batches", type=int, default=20, help="batches timed")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--no_scann", dest="scann", action="store_false")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work_dir", required=True, help="data and runs (large; outside the repo)")
    p.add_argument("--note", default="", help="what else ran on the machine")
    p.add_argument("--output", default=os.path.join(REPORTS, "catalogue_scale.json"))
    return p


def main(argv: Optional[list[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.scann:
        from export import serving

        if not serving.scann_available():
            sys.exit(
                "error: ScaNN is not installed (pip install 's3rec-tf[scann]'), or --no_scann."
            )
    report = {
        "command": "python -m benchmarks.catalogue_scale " + " ".join(argv or sys.argv[1:]),
        "rows": [],
    }
    for items in args.items:
        row = measure(items, args)
        print(json.dumps(row), flush=True)
        report["rows"].append(row)
    report["machine"] = common.machine()
    report["note"] = args.note
    common.write_report(report, args.output, markdown(report))
    return report


if __name__ == "__main__":
    main()
