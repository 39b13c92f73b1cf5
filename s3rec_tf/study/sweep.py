"""`python -m s3rec_tf.sweep`: the rank study, every (rank, seed) trained, fine-tuned and tested.

    python -m s3rec_tf.sweep --ranks 4 8 16 32 full --seeds 3 16:5 full:5 \\
        --data DIR --config reference_weights --pretrain_epochs 50 --output SWEEP_DIR

Every run is an ordinary `python -m s3rec_tf.train` run in its own directory,
SWEEP_DIR/runs/{r16,rfull,sasrec}-s{seed}, started as a subprocess with the training CLI's flags
given here (any flag of the training CLI but those the sweep sets per run: --rank, --seed,
--output, --no_pretrain, --init_from, --export). Besides the ranks, SASRec (no pretraining, rank
"none") runs for each of its seeds (`none:N` in --seeds; `--no_sasrec` leaves it out).

Seeds: `--seeds N` gives every rank seeds 1..N; `RANK:N` entries set one rank's count (ranks
"full" and "none" included). Runs go seed by seed (seed 1 of every rank, then seed 2, ...), so a
sweep stopped half way has comparable seeds for every rank.

Resumable at every level: rerunning the same command skips finished runs (their results.json),
continues an interrupted one from its last finished epoch (the training CLI's own resume) and
starts the rest. `--jobs 2` trains two runs side by side, one TensorFlow thread each. Adding seeds
or ranks later extends the sweep; a larger --pretrain_epochs continues every finished run's
pretraining from its last checkpoint and fine-tunes it again (the earlier fine-tuning is kept in
the run directory under `finetune-after-{N}-pretrain-epochs/`).

SWEEP_DIR/sweep.json is rewritten after every finished run (`runs`: one entry per finished run,
see `run_entry`; `pending`: the runs still to do); `python -m s3rec_tf.report SWEEP_DIR` turns it
into sweep.md and the plots.

One pretraining, several fine-tunings: `--pretrained_from OTHER_SWEEP_DIR` fine-tunes every
rank's run from the pretrained encoder of the run with the same name in another sweep (its
`pretrain/encoder`, written when that run's pretraining ends) instead of pretraining again, e.g.
a loss axis over the rank study's pretraining, one sweep per loss:

    python -m s3rec_tf.sweep --ranks full --seeds 3 --pretrained_from RANK_SWEEP_DIR \
        --config full_ranking --output CE_SWEEP_DIR

A run whose source is still pretraining (in a sweep running meanwhile) waits for it; a run
directory that another process holds is left to it. sweep.json records each such run's source
and the source's pretraining epochs and losses.

Run directories are scratch (checkpoints, logs); the record is sweep.json. When the machine that
held them is gone, `--carry_over OLD/sweep.json` (e.g. the copy committed under reports/) counts
the runs it records as finished, after the same settings check as a run directory's results.json,
and copies their entries into the new sweep.json instead of training them again. A carried-over
run has no checkpoints here, so a longer --pretrain_epochs trains it again from the start.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
from typing import Optional

from s3rec_tf import config as config_lib
from s3rec_tf import jsonfile, lockfile, metric_names
from s3rec_tf.study import processes
from s3rec_tf.study.runs import (
    Rank,
    Run,
    SweepError,
    finished_here,
    parse_rank,
    parse_seeds,
    plan,
    pretraining_source,
    read_epoch_log,
    run_dir,
    waiting_for,
    write_record,
)

SWEEP_FILE = "sweep.json"
LOCK_FILE = "sweep.lock"
FORMAT_VERSION = 1
# Flags whose values the sweep sets for each run.
OWN_FLAGS = ("--rank", "--seed", "--output", "--no_pretrain", "--init_from", "--export")
# What a finished run's config may differ in from what the sweep asks now (where things live, how
# the steps run, and the pretraining budget, which a sweep may extend).
PLACE_AND_EXECUTION = {
    "data.data_dir",
    "output_dir",
    "strategy",
    "jit_compile",
    "finetune.eval_item_chunk",
}


# ------------------------------------------------------------------------------- sweep.json


def machine() -> str:
    """CPU model, core count and OS, e.g. "AMD EPYC, 2 cores, Linux"."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}"


def run_entry(output: str, run: Run) -> dict:
    """One finished run as sweep.json records it."""
    directory = run_dir(output, run)
    results = jsonfile.read(os.path.join(directory, "results.json"))
    config = results["config"]
    hidden = config["model"]["hidden_size"]
    finetune = results["finetune"]
    pretrain_log = read_epoch_log(os.path.join(directory, "pretrain", "epochs.csv"))
    finetune_log = read_epoch_log(os.path.join(directory, "finetune", "epochs.csv"))
    if run.rank == "none":
        # SASRec has no attribute heads: its parameters are the recommender's.
        parameters = {"total": finetune["parameters"], "aap": 0, "map": 0}
    else:
        p = results["parameters"]
        parameters = {"total": p["total"], "aap": p["aap"], "map": p["map"]}
    parameters["aap_reduction_vs_full"] = 1.0 - parameters["aap"] / hidden**2
    parameters["map_reduction_vs_full"] = 1.0 - parameters["map"] / hidden**2
    extra = jsonfile.read(os.path.join(directory, "sweep_run.json")) or {}
    source = extra.get("pretrained_from")
    pretrain_epochs = 0 if run.rank == "none" else config["pretrain"]["epochs"]
    if source:  # fine-tuned from another sweep's pretraining: its epochs are this run's
        pretrain_log = source["epochs_log"]
        pretrain_epochs = len(pretrain_log)

    def seconds_per_epoch(log):
        # The median: an epoch that ran while the machine was busy, or across a pause of the
        # sweep, moves it little.
        times = [row["epoch_seconds"] for row in log if row.get("epoch_seconds")]
        return statistics.median(times) if times else None

    curve_keys = [k for k in (pretrain_log[0] if pretrain_log else {}) if k.endswith("_loss")]
    return {
        "name": run.name,
        "rank": run.rank,
        "seed": run.seed,
        "run_dir": os.path.relpath(directory, output),
        "test": results["test"],
        "valid": results["valid"],
        "parameters": parameters,
        "pretrain_epochs": pretrain_epochs,
        "pretrained_from": source and {k: source[k] for k in ("run_dir", "pretrain")},
        "finetune_epochs": {"run": finetune["epochs_run"], "best": finetune["best_epoch"]},
        "wall_seconds": results["wall_seconds"],
        "seconds_per_epoch": {
            "pretrain": seconds_per_epoch(pretrain_log),
            "finetune": seconds_per_epoch(finetune_log),
        },
        "pretrain_curve": {k: [row[k] for row in pretrain_log] for k in sorted(curve_keys)},
        "machine": extra.get("machine"),
        "tf_threads": extra.get("tf_threads"),
        "jobs_side_by_side": extra.get("jobs"),
        "config": config,
    }


def write_sweep(output: str, runs: list[Run], meta: dict, carried: Optional[dict] = None) -> dict:
    """`carried`: {run: its entry in an earlier sweep.json}, for runs with no directory here."""
    carried = carried or {}
    entries = []
    for run in runs:
        if finished_here(output, run):
            entries.append(run_entry(output, run))
        elif run in carried:
            entries.append(carried[run])
    done = {e["name"] for e in entries}
    sweep = dict(
        meta,
        format_version=FORMAT_VERSION,
        runs=entries,
        pending=[r.name for r in runs if r.name not in done],
        carried_over=sorted(r.name for r in carried if not finished_here(output, r)),
    )
    write_record(os.path.join(output, SWEEP_FILE), sweep)
    return sweep


def status(output: str, runs: list[Run], carried: dict, now=None) -> str:
    """Where every planned run stands, as a markdown table (the sweep's --status); an unfinished
    run's progress is its checkpoints' (`run_dir.run_status`)."""
    from s3rec_tf import run_dir as run_dir_lib

    now = now or datetime.datetime.now(datetime.UTC)
    rows, finished = [], 0
    for run in runs:
        metrics = ("",) * len(metric_names.HEADLINE)
        if finished_here(output, run) or run in carried:
            entry = run_entry(output, run) if finished_here(output, run) else carried[run]
            state = "finished" if finished_here(output, run) else "finished (carried over)"
            pretrain = entry["pretrain_epochs"]
            finetune = "{run} (best {best})".format(**entry["finetune_epochs"])
            sampled = entry["test"]["sampled"]
            metrics = tuple(f"{sampled[m]:.4f}" for m in metric_names.HEADLINE)
            finished += 1
        else:
            progress = run_dir_lib.run_status(run_dir(output, run))
            state = progress["state"]
            pretrain = finetune = ""
            extra = jsonfile.read(os.path.join(run_dir(output, run), "sweep_run.json")) or {}
            if state != "not started":
                pre, fine = progress["pretrain"], progress["finetune"]
                pretrain = f"{pre['epochs_done']}/{pre['epochs']}"
                if extra.get("pretrained_from"):
                    pretrain = f"{len(extra['pretrained_from']['epochs_log'])} (another sweep's)"
                finetune = f"{fine['epochs_done']}/{fine['epochs']}"
                if fine["epochs_done"]:
                    finetune += f" (best {fine['best_epoch']})"
        if run.rank == "none":
            pretrain = "—"
        cells = [run.name, state, pretrain, finetune, *metrics]
        rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    head = [
        f"{finished} of {len(runs)} runs finished ({output}, {now:%Y-%m-%d %H:%M} UTC).",
        "",
        "| run | state | pretraining epochs | fine-tuning epochs | test sampled "
        + " | ".join(m.upper() for m in metric_names.HEADLINE)
        + " |",
        "|---|---|---:|---:|" + "---:|" * len(metric_names.HEADLINE),
    ]
    return "\n".join(head + rows) + "\n"


# ----------------------------------------------------------------------------------- the CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m s3rec_tf.sweep",
        # --seed (the training CLI's, refused here) must not pass for an abbreviation of --seeds.
        allow_abbrev=False,
        description=__doc__.split("\n\n")[0],
        epilog="Any other flag is the training CLI's (python -m s3rec_tf.train --help) and is "
        "given to every run, e.g. --data DIR --config reference_weights --pretrain_epochs 50.",
    )
    p.add_argument(
        "--ranks",
        nargs="*",
        default=[],
        help="ranks: integers and/or 'full' (none: SASRec alone, --seeds none:N)",
    )
    p.add_argument(
        "--seeds",
        nargs="+",
        required=True,
        help="seed count for every rank (N: seeds 1..N) and/or per rank (RANK:N, e.g. 16:5 "
        "full:5 none:3; 'none' is SASRec)",
    )
    p.add_argument("--no_sasrec", action="store_true", help="leave out the SASRec baseline")
    p.add_argument(
        "--pretrained_from",
        metavar="SWEEP_DIR",
        help="fine-tune each rank's run from the pretrained encoder of its namesake in this "
        "sweep directory (e.g. another loss over the same pretraining) instead of pretraining",
    )
    p.add_argument("--output", required=True, help="sweep directory (runs/, sweep.json)")
    p.add_argument(
        "--carry_over",
        metavar="SWEEP_JSON",
        help="an earlier sweep.json (e.g. the committed copy) whose finished runs count as "
        "finished when their run directories are gone",
    )
    p.add_argument(
        "--status",
        action="store_true",
        help="print where every run stands (a markdown table) and exit; trains nothing",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs trained side by side")
    p.add_argument("--poll_seconds", type=float, default=15.0, help="how often progress is checked")
    return p


def _train_module():
    from s3rec_tf import train  # the training CLI's parser and config rules

    return train


def resolve(argv: Optional[list[str]] = None):
    """Arguments -> (args, plan, the training flags common to every run); checks everything that
    can be checked before any work: flags, ranks against the hidden size, seeds, the data."""
    args, train_flags = build_parser().parse_known_args(argv)
    for flag in train_flags:
        if flag.split("=")[0] in OWN_FLAGS:
            raise SweepError(
                f"{flag.split('=')[0]} is set by the sweep for each run; leave it out."
            )
    if args.jobs < 1:
        raise SweepError(f"--jobs {args.jobs}: must be at least 1.")
    ranks = [parse_rank(r, "--ranks") for r in args.ranks]
    if "none" in ranks:
        raise SweepError(
            "--ranks: SASRec ('none') is added by the sweep; use --no_sasrec to skip it."
        )
    if len(set(ranks)) != len(ranks):
        raise SweepError(f"--ranks {args.ranks}: a rank appears twice.")
    if not args.no_sasrec:
        ranks.append("none")
    if not ranks:
        raise SweepError("--ranks gives no rank and --no_sasrec leaves out SASRec: no run.")
    if args.pretrained_from and not os.path.isdir(os.path.join(args.pretrained_from, "runs")):
        raise SweepError(
            f"--pretrained_from {args.pretrained_from}: not a sweep directory (no runs/)."
        )
    counts = parse_seeds(args.seeds, ranks)
    runs = plan(counts)

    train = _train_module()
    parser = train.build_parser()
    parser.exit_on_error = False
    try:
        common = parser.parse_args(train_flags)
    except (argparse.ArgumentError, SystemExit) as e:
        raise SweepError(f"training flags {train_flags}: {e}") from None
    configs = {}
    for run in runs:
        run_args = parser.parse_args(
            train_flags
            + run.train_flags(args.pretrained_from)
            + ["--output", run_dir(args.output, run)]
        )
        try:
            configs[run] = train.resolve_config(run_args)
        except ValueError as e:  # config_lib.ConfigError
            raise SweepError(f"run {run.name}: {e}") from None
        if args.pretrained_from and run.rank != "none":
            _check_source_model(run, configs[run], args.pretrained_from)
    data_dir = common.data or train.sample_data_dir()
    from s3rec_tf import data_files  # TensorFlow: only once the arguments are checked

    try:
        metadata = data_files.read_metadata(data_dir)
        data_files.check_files(data_dir, dupe_factor=metadata["dupe_factor"])
    except (OSError, ValueError) as e:
        raise SweepError(f"--data {data_dir}: {e}") from None
    if common.data is None:
        train_flags = train_flags + ["--data", data_dir]
        configs = {r: c.replace(**{"data.data_dir": data_dir}) for r, c in configs.items()}
    return args, runs, train_flags, configs, metadata


def _check_source_model(run: Run, config, sweep_dir: str) -> None:
    """The pretrained encoder a run starts from must be the model it fine-tunes (checked when
    the source has started; a source not started yet is checked by the restore itself)."""
    saved = os.path.join(run_dir(sweep_dir, run), "config.json")
    recorded = jsonfile.read(saved)
    if recorded is None:
        return
    source = config_lib.from_dict(recorded, source=saved)
    diff = {
        k: v for k, v in config_lib.differences(source, config).items() if k.startswith("model.")
    }
    if diff:
        fields = "; ".join(f"{k} = {a!r} there, {b!r} here" for k, (a, b) in sorted(diff.items()))
        raise SweepError(
            f"run {run.name}: --pretrained_from {saved} pretrains another model ({fields})."
        )


def _check_settings(run: Run, recorded: dict, wanted, where: str) -> Optional[tuple]:
    """A finished run's config against the one asked for now: other settings stop the sweep;
    returns (was, now) pretraining epochs when the pretraining is to be extended, else None."""
    finished = config_lib.from_dict(recorded, source=where)
    diff = {
        k: v
        for k, v in sorted(config_lib.differences(finished, wanted).items())
        if k not in PLACE_AND_EXECUTION and k != "finetune.epochs"
    }
    pretrain = diff.pop("pretrain.epochs", None)
    if diff:
        fields = "; ".join(f"{k} = {a!r} there, {b!r} now" for k, (a, b) in diff.items())
        raise SweepError(
            f"{where} was trained with other settings ({fields}). Use another --output for "
            "another study, or the same flags to continue this one."
        )
    if pretrain is not None and pretrain[1] < pretrain[0]:
        raise SweepError(
            f"{run.name} was pretrained for {pretrain[0]} epochs; --pretrain_epochs {pretrain[1]} "
            "would shorten it. Use another --output."
        )
    return pretrain


def check_finished_runs(output: str, runs: list[Run], configs: dict) -> list[Run]:
    """Finished runs made with other settings stop the sweep; those with a shorter pretraining
    than asked for are returned (their pretraining is to be extended)."""
    to_extend = []
    for run in runs:
        results = jsonfile.read(os.path.join(run_dir(output, run), "results.json"))
        if results is None:
            continue
        if _check_settings(run, results["config"], configs[run], run_dir(output, run)):
            to_extend.append(run)
    return to_extend


def carried_over(path: str, output: str, runs: list[Run], configs: dict) -> dict:
    """{run: entry} for the runs that the sweep.json at `path` records as finished and that have
    no directory under `output`; checked like a run directory (same settings). Entries with a
    shorter pretraining than asked for are left out: their checkpoints are not here, so they
    train again."""
    try:
        recorded = jsonfile.read(path)
    except json.JSONDecodeError as e:
        raise SweepError(f"--carry_over {path}: not JSON ({e}).") from None
    if recorded is None:
        raise SweepError(f"--carry_over {path}: no such file.")
    if recorded.get("format_version") != FORMAT_VERSION or not isinstance(
        recorded.get("runs"), list
    ):
        raise SweepError(
            f"--carry_over {path}: not a sweep.json of format {FORMAT_VERSION} (format_version "
            f"{recorded.get('format_version')!r})."
        )
    by_name = {run.name: run for run in runs}
    carried = {}
    for i, entry in enumerate(recorded["runs"]):
        run = by_name.get(entry.get("name"))
        if run is None or finished_here(output, run):
            continue
        where = f"{path} runs[{i}] ({run.name})"
        if _check_settings(run, entry["config"], configs[run], where):
            print(
                f"{run.name}: {path} records it with {entry['config']['pretrain']['epochs']} "
                "pretraining epochs and its checkpoints are not here; it trains again",
                flush=True,
            )
            continue
        carried[run] = entry
    return carried


def sweep_meta(command: list[str], train_flags, metadata, counts) -> dict:
    return {
        "command": ["python", "-m", "s3rec_tf.sweep"] + command,
        "training_flags": train_flags,
        "seeds": {str(k): v for k, v in counts.items()},
        "data": {
            k: metadata.get(k)
            for k in (
                "num_users",
                "num_items",
                "num_attributes",
                "num_interactions",
                "num_pretrain_examples",
                "dupe_factor",
                "max_seq_length",
            )
        },
        "data_dir": metadata.get("config", {}).get("output"),
    }


def main(argv: Optional[list[str]] = None) -> int:
    try:
        args, runs, train_flags, configs, metadata = resolve(argv)
    except SweepError as e:
        sys.exit(f"error: {e}")
    output = args.output
    if args.status:
        try:
            carried = {}
            if args.carry_over:
                carried = carried_over(args.carry_over, output, runs, configs)
        except SweepError as e:
            sys.exit(f"error: {e}")
        print(status(output, runs, carried), end="")
        return 0
    os.makedirs(os.path.join(output, "runs"), exist_ok=True)
    counts: dict[Rank, int] = {}
    for run in runs:
        counts[run.rank] = max(counts.get(run.rank, 0), run.seed)
    meta = sweep_meta(sys.argv[1:] if argv is None else argv, train_flags, metadata, counts)
    try:
        with lockfile.hold(output, LOCK_FILE, SweepError, holder="sweep process"):
            return _sweep(args, runs, train_flags, configs, meta)
    except SweepError as e:
        sys.exit(f"error: {e}")


def work_order(output: str, todo: list[Run]) -> list[Run]:
    """The runs to train, those an earlier sweep started first (both groups in plan order): a
    sweep stopped every few hours then finishes runs instead of starting ever more of them."""
    from s3rec_tf import run_dir as run_dir_lib

    started = [r for r in todo if run_dir_lib.has_progress(run_dir(output, r))]
    return started + [r for r in todo if r not in started]


def next_run(
    output: str, queue: list[Run], pretrained_from: Optional[str] = None, told=None
) -> Optional[Run]:
    """Takes the next run that can start off `queue`: runs that finished since the sweep started
    (trained by a `python -m s3rec_tf.train` of their own) leave the queue; runs that cannot
    start yet (`waiting_for`) stay in it, said once (`told`: the runs already said). None when
    no run can start now."""
    told = set() if told is None else told
    for run in list(queue):
        if finished_here(output, run):
            queue.remove(run)
            print(f"{run.name}: finished meanwhile, not trained again", flush=True)
            continue
        reason = waiting_for(output, run, pretrained_from)
        if reason is None:
            queue.remove(run)
            told.discard(run)
            return run
        if run not in told:
            told.add(run)
            print(f"{run.name}: waiting ({reason})", flush=True)
    return None


def _sweep(args, runs, train_flags, configs, meta) -> int:
    from s3rec_tf import run_dir as run_dir_lib

    output = args.output
    for run in check_finished_runs(output, runs, configs):
        moved = run_dir_lib.archive_finetuning(
            run_dir(output, run),
            jsonfile.read(os.path.join(run_dir(output, run), "results.json"))["config"]["pretrain"][
                "epochs"
            ],
        )
        print(
            f"{run.name}: pretraining to be extended; its fine-tuning moved to {moved}", flush=True
        )
    carried = {}
    if args.carry_over:
        carried = carried_over(args.carry_over, output, runs, configs)
    write_sweep(output, runs, meta, carried)
    todo = [r for r in runs if not finished_here(output, r) and r not in carried]
    from_record = f" ({len(carried)} carried over from {args.carry_over})" if carried else ""
    print(
        f"sweep {output}: {len(runs)} runs, {len(runs) - len(todo)} finished{from_record}, "
        f"{len(todo)} to do ({args.jobs} at a time)",
        flush=True,
    )
    # The directory that holds the s3rec_tf package (this file is s3rec_tf/study/sweep.py): the
    # runs import the same code as the sweep.
    code_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (code_root, env.get("PYTHONPATH")) if p)
    threads = None
    if args.jobs > 1:
        # Side by side, one thread pool each: more epochs per hour from the same cores than one
        # run with every thread (reports/ has the measurements).
        threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
        env["TF_NUM_INTRAOP_THREADS"] = threads
        env["TF_NUM_INTEROP_THREADS"] = threads
    # What every run started by this process records of where it trained.
    segment = {"machine": machine(), "tf_threads": threads, "jobs": args.jobs}
    active: list[processes.Active] = []
    failed: list[str] = []
    queue = work_order(output, todo)
    index = {r: i + 1 for i, r in enumerate(runs)}
    told: set = set()
    with processes.StopSignals() as stop:
        try:
            while (queue or active) and stop.signum is None:
                while len(active) < args.jobs and stop.signum is None:
                    run = next_run(output, queue, args.pretrained_from, told)
                    if run is None:
                        break
                    command = [*train_flags, *run.train_flags(args.pretrained_from)]
                    recorded = dict(segment)
                    if args.pretrained_from and run.rank != "none":
                        recorded["pretrained_from"] = pretraining_source(args.pretrained_from, run)
                    item = processes.start(
                        run, index[run], len(runs), output, command, configs[run], env, recorded
                    )
                    active.append(item)
                    print(item.start_line(), flush=True)
                stop.sleep(args.poll_seconds)
                for item in list(active):
                    for line in item.progress_lines():
                        print(line, flush=True)
                    code = item.process.poll()
                    if code is None or stop.signum is not None:
                        continue
                    active.remove(item)
                    results = jsonfile.read(os.path.join(item.directory, "results.json"))
                    if code != 0 or results is None:
                        failed.append(item.run.name)
                        print(
                            f"{item.label()} FAILED (exit {code}); last lines of "
                            f"{item.directory}/train.log:\n{processes.tail(item.directory)}",
                            flush=True,
                        )
                        continue
                    sweep = write_sweep(output, runs, meta, carried)
                    print(item.finish_line(results, len(sweep["runs"])), flush=True)
        finally:
            for item in active:
                item.process.terminate()
            for item in active:
                item.process.wait()
    if stop.signum is not None:
        for item in active:
            for line in item.progress_lines():
                print(line, flush=True)
            if jsonfile.read(os.path.join(item.directory, "results.json")) is None:
                print(item.stop_line(), flush=True)
        write_sweep(output, runs, meta, carried)
        print(
            f"sweep {output}: stopped by {stop.signum.name}; the same command continues every "
            "unfinished run from its last finished epoch",
            flush=True,
        )
        return 128 + stop.signum
    write_sweep(output, runs, meta, carried)
    if failed:
        print(f"error: {len(failed)} run(s) failed: {', '.join(failed)}", flush=True)
        return 1
    print(f"sweep {output}: all {len(runs)} runs finished; {SWEEP_FILE} written", flush=True)
    return 0
