"""Seconds per pretraining epoch on the Beauty output of the Beam job, and where a step's time goes.

    python benchmarks/pretrain_speed.py --data DIR [--report reports/pretrain_speed.json]
    python benchmarks/pretrain_speed.py --data DIR --baseline_commit 912e303   # A/B

For each setting (rank, jit_compile) it builds a fresh S3RecPretrainer, runs one epoch to trace,
compile and fill the tf.data cache, then times a second, steady-state epoch (the next masking
duplicate). It also times the input pipeline alone, reports the padding of the bucketed batches
and, on the first setting, a profile of one step: the step's parts timed on their own (encoder
passes, all objectives forward, gradients, the whole step) and the share of op time by op type
(TensorFlow's profiler), in milliseconds per step too (with --inter_op_threads 1 the ops run one
after another, so their times add up to the step's op time), and how many GFLOP/s TensorFlow's
matmul reaches at the step's shapes with this process's threads (with what a large matmul reaches
beside them: how close the step's arithmetic already runs to the machine's peak).

--intra_op_threads / --inter_op_threads (default: the training CLI's for pretraining) and
--mixed_precision time the same epoch under other thread pools or a 16-bit policy.

With --baseline_commit, the same epoch is timed with that commit's library (a temporary git
worktree) and with this checkout's, back to back in one invocation, each in its own process with
the training CLI's thread settings; the report gains "ab". Both read the same --data (a commit
whose data format differs needs its own preprocessing: not done here).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import logging
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORTS = os.path.join(REPO, "reports")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", required=True, help="beam_pipelines.preprocess output for Beauty")
    p.add_argument("--report", default=os.path.join(REPORTS, "pretrain_speed.json"))
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--epochs", type=int, default=2, help="per setting; the first one warms up")
    p.add_argument(
        "--settings",
        default="full:off",
        help="comma-separated rank:jit pairs (rank an integer or 'full', jit on/off)",
    )
    p.add_argument(
        "--baseline_commit", help="also time the same epoch with this commit's code (A/B)"
    )
    p.add_argument("--profile_steps", type=int, default=200, help="steps of the profile; 0: none")
    p.add_argument(
        "--intra_op_threads",
        type=int,
        help="TensorFlow's intra-op threads (default: the training CLI's for pretraining)",
    )
    p.add_argument(
        "--inter_op_threads", type=int, default=0, help="inter-op threads (0: TensorFlow's)"
    )
    p.add_argument(
        "--mixed_precision",
        default="off",
        choices=("off", "mixed_float16", "mixed_bfloat16"),
        help="Keras dtype policy of the timed models",
    )
    # Internal: the library to time (a checkout's root); the A/B runs this script with each.
    # It then writes the measurement alone to --report, as JSON.
    p.add_argument("--code", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _lib():
    """The modules of the library under --code (imported after sys.path is set)."""
    import tensorflow as tf

    from s3rec_tf import builders, runtime, schema
    from s3rec_tf import config as config_lib
    from s3rec_tf import data as data_lib

    return tf, builders, runtime, schema, config_lib, data_lib


def time_input_pipeline(data, epoch: int) -> dict:
    tf, _, _, schema, _, _ = _lib()
    start = time.perf_counter()
    batches = real = padded = 0
    for batch in data.dataset(epoch):
        items = batch[schema.POS_ITEMS]
        batches += 1
        real += int(tf.math.count_nonzero(items))
        padded += int(tf.size(items))
    return {
        "seconds": time.perf_counter() - start,
        "batches": batches,
        "real_positions": real,
        "padded_positions": padded,
    }


def build_model(config, metadata, item_attributes):
    tf, builders, runtime, _, _, _ = _lib()
    tf.keras.utils.set_random_seed(config.seed)
    model = builders.pretrainer_from_config(
        config, metadata["num_items"], metadata["num_attributes"], item_attributes
    )
    model.build()
    # As the training CLI compiles it (optimizer slots made before the first traced step).
    runtime.compile_for_training(model, config.pretrain.learning_rate, config.jit_compile)
    return model


def time_setting(config, metadata, item_attributes, data, rank, jit, epochs) -> dict:
    config = config.replace(**{"model.aap_rank": rank, "jit_compile": jit})
    model = build_model(config, metadata, item_attributes)
    seconds, logs = [], {}
    for epoch in range(epochs):
        start = time.perf_counter()
        history = model.fit(data.dataset(epoch), verbose=0)
        seconds.append(time.perf_counter() - start)
        logs = {k: float(v[-1]) for k, v in history.history.items()}
        logging.info("rank=%s jit=%s epoch %d: %.1f s %s", rank, jit, epoch + 1, seconds[-1], logs)
    steady = seconds[1:] or seconds
    return {
        "rank": "full" if rank is None else rank,
        "jit_compile": jit,
        "epoch_seconds": steady[0],
        "epoch_seconds_all": seconds,
        "examples_per_second": data.num_examples / steady[0],
        "last_losses": logs,
        "parameters": {"total": int(model.count_params())},
    }


def profile_step(config, metadata, item_attributes, data, steps: int) -> dict:
    """Milliseconds per step of a step's parts, each its own tf.function over the same `steps`
    batches (after a warm-up pass), and the op-time share by op type over 50 full steps."""
    tf, _, _, schema, _, _ = _lib()
    model = build_model(config, metadata, item_attributes)
    batches = list(data.dataset(0).take(steps))
    seq = schema.PRETRAIN_SEQUENCES
    encoder = model.encoder

    def items_pass(b):
        return tf.reduce_sum(encoder(b[seq[0]], training=True))

    def segment_pass(b):
        return model.segment_logits(b, training=True)

    def objectives(b):
        return model.compute_losses(b, training=True)

    def gradients(b):
        with tf.GradientTape() as tape:
            total = model.total_loss(model.compute_losses(b, training=True))
        return tape.gradient(total, model.trainable_variables)

    parts = {
        "encoder_items_forward": items_pass,
        "encoder_segments_forward": segment_pass,
        "all_objectives_forward": objectives,
        "forward_and_gradients": gradients,
        "train_step": model.train_step,
    }
    timings, traced = {}, {}
    for name, fn in parts.items():
        fn = traced[name] = tf.function(fn, reduce_retracing=True)
        for b in batches:
            fn(b)
        start = time.perf_counter()
        for b in batches:
            fn(b)
        timings[name] = (time.perf_counter() - start) / len(batches) * 1000

    # The whole step's function, already traced for these batches above.
    step = traced["train_step"]
    logdir = tempfile.mkdtemp(prefix="pretrain_profile_")
    profiled = batches[:50]
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for b in profiled:
        step(b)
    wall = (time.perf_counter() - start) / len(profiled) * 1000
    tf.profiler.experimental.stop()
    op_ms = _op_ms(logdir, len(profiled))
    total = sum(op_ms.values())
    top = dict(collections.Counter(op_ms).most_common(12))
    return {
        "ms_per_step": timings,
        "profiled_steps": len(profiled),
        # Under the profiler, which slows the step a little.
        "profiled_wall_ms_per_step": wall,
        "op_ms_per_step": {**top, "other": total - sum(top.values()), "total": total},
        "op_time_share": {
            **{op: round(ms / total, 4) for op, ms in top.items()},
            "other": round(1 - sum(top.values()) / total, 4),
        },
        "matmul_gflops": matmul_rates(
            batches, config.model.hidden_size, int(model.heads.num_attributes)
        ),
    }


def matmul_rates(batches, hidden: int, attributes: int, repeats: int = 20) -> dict:
    """GFLOP/s of `tf.matmul` at the pretraining step's shapes (rows: the mean padded positions
    of `batches`; the three segment sequences stacked), each timed inside one graph of `repeats`
    independent products (no per-call dispatch), with this process's threads; and of a large
    product, near what the cores can do."""
    tf, _, _, schema, _, _ = _lib()
    rows = int(np.mean([int(tf.size(b[schema.PRETRAIN_SEQUENCES[0]])) for b in batches]))
    shapes = [
        ("attention projection, item pass", rows, hidden, hidden),
        ("the same, segment pass", 3 * rows, hidden, hidden),
        ("feed-forward in", rows, hidden, 4 * hidden),
        ("feed-forward out", rows, 4 * hidden, hidden),
        ("AAP / MAP scores", rows, hidden, attributes),
        ("large", 4000, 256, 4000),
    ]
    rates = {}
    for what, m, k, n in shapes:
        count = repeats if m * n < 10**6 else 2
        a = tf.random.stateless_normal([m, k], seed=[0, 1])
        bs = [tf.random.stateless_normal([k, n], seed=[1, i]) for i in range(count)]

        @tf.function
        def products(a, bs=bs):
            # A slice of each product keeps every matmul alive without summing whole outputs.
            return tf.add_n([tf.reduce_sum(tf.matmul(a, b)[:1]) for b in bs])

        products(a)
        start = time.perf_counter()
        for _ in range(5):
            products(a)
        seconds = (time.perf_counter() - start) / (5 * count)
        rates[f"[{m},{k}]x[{k},{n}] ({what})"] = 2 * m * k * n / seconds / 1e9
    return rates


def _op_ms(logdir: str, steps: int) -> dict:
    """Milliseconds per step of the profiled kernels, by op type."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    by_type = collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                # TensorFlow op events are named "scope/name:OpType".
                name = names.get(event.metadata_id, "")
                op_type = name.rpartition(":")[2]
                if not name.count(":") or not op_type or " " in op_type or name.startswith("$"):
                    continue
                by_type[op_type] += event.duration_ps
    # Executor and function-call events wrap the kernels; only the kernels are shared out.
    for wrapper in ("Process", "Run"):
        by_type.pop(wrapper, None)
    return {op: ps / 1e9 / steps for op, ps in by_type.items()}


def measure(args) -> dict:
    sys.path.insert(0, args.code or REPO)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    _, _, runtime, _, _, _ = _lib()
    # Dropout as training draws it (seeded generators, s3rec_tf.phases).
    with runtime.seeded_dropout():
        return _measure(args)


def _measure(args) -> dict:
    tf, _, runtime, _, config_lib, data_lib = _lib()
    try:
        from s3rec_tf import data_files
    except ImportError:  # --code from before the data directory's readers left data.py
        data_files = data_lib
    # As `python -m s3rec_tf.train` runs pretraining (code from before the setting had none).
    if hasattr(runtime, "configure_threads"):
        intra_op = args.intra_op_threads
        if intra_op is None:
            intra_op = runtime.PRETRAINING_INTRA_OP_THREADS
        runtime.configure_threads(intra_op, args.inter_op_threads)
    elif args.intra_op_threads is not None or args.inter_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads or 0)
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    if args.mixed_precision != "off":
        tf.keras.mixed_precision.set_global_policy(args.mixed_precision)
    config = config_lib.Config().replace(**{"pretrain.batch_size": args.batch_size}).validate()
    metadata = data_files.read_metadata(args.data)
    item_attributes = data_files.load_item_attributes(
        args.data, metadata["num_items"], metadata["num_attributes"]
    )
    data = {
        fixed: data_lib.PretrainData(
            args.data,
            metadata,
            args.batch_size,
            config.model.max_seq_length,
            config.seed,
            fixed_widths=fixed,
        )
        for fixed in (False, True)
    }
    pipeline_first = time_input_pipeline(data[False], 0)  # parses and fills the cache
    pipeline = time_input_pipeline(data[False], 0)  # from the cache: the input's floor
    rows = []
    for setting in args.settings.split(","):
        rank, jit = setting.split(":")
        rows.append(
            time_setting(
                config,
                metadata,
                item_attributes,
                data[jit == "on"],
                None if rank == "full" else int(rank),
                jit == "on",
                args.epochs,
            )
        )
    default = rows[0]
    report = {
        "data": {
            "num_pretrain_examples": metadata["num_pretrain_examples"],
            "dupe_factor": metadata["dupe_factor"],
        },
        "batch_size": args.batch_size,
        "mixed_precision": args.mixed_precision,
        "threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "batches_per_epoch": pipeline["batches"],
        "padding": {
            "real_positions": pipeline["real_positions"],
            "padded_positions_bucketed": pipeline["padded_positions"],
            "padded_positions_if_50": metadata["num_pretrain_examples"] * 50,
        },
        "input_pipeline_seconds": {
            "first_pass": pipeline_first["seconds"],
            "cached": pipeline["seconds"],
        },
        "epoch_seconds": default["epoch_seconds"],
        "examples_per_second": default["examples_per_second"],
        "jit_compile": default["jit_compile"],
        "settings": rows,
    }
    if args.profile_steps:
        report["profile"] = profile_step(
            config, metadata, item_attributes, data[False], args.profile_steps
        )
    return report


def _git(*args, cwd=REPO) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def _measure_in_process(args, code: str, profile_steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        command = [
            sys.executable,
            os.path.abspath(__file__),
            *("--data", args.data, "--report", report, "--code", code),
            *("--batch_size", str(args.batch_size), "--epochs", str(args.epochs)),
            *("--settings", args.settings, "--profile_steps", str(profile_steps)),
            *("--inter_op_threads", str(args.inter_op_threads)),
            *("--mixed_precision", args.mixed_precision),
        ]
        if args.intra_op_threads is not None:
            command += ["--intra_op_threads", str(args.intra_op_threads)]
        subprocess.run(command, check=True)
        with open(report) as f:
            return json.load(f)


def ab(args) -> dict:
    """This checkout's code against --baseline_commit's, back to back, each in its own process."""
    baseline = _git("rev-parse", args.baseline_commit)
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(tmp, "baseline")
        _git("worktree", "add", "--detach", tree, baseline)
        try:
            before = _measure_in_process(args, tree, 0)
        finally:
            _git("worktree", "remove", "--force", tree)
    after = _measure_in_process(args, REPO, args.profile_steps)
    after["ab"] = {
        "baseline_commit": baseline,
        "baseline_epoch_seconds": before["epoch_seconds"],
        "baseline_epoch_seconds_all": before["settings"][0]["epoch_seconds_all"],
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "epoch_seconds": after["epoch_seconds"],
        "epoch_seconds_all": after["settings"][0]["epoch_seconds_all"],
        "speedup": before["epoch_seconds"] / after["epoch_seconds"],
    }
    return after


def markdown(report: dict) -> str:
    lines = ["# Pretraining speed (Beauty)", ""]
    lines.append(
        f"Machine: {report['machine']}. Batch {report['batch_size']}, "
        f"{report['batches_per_epoch']} batches per epoch; threads {report['threads']}; "
        f"dtype policy {report.get('mixed_precision', 'off')}."
    )
    if "ab" in report:
        a = report["ab"]
        lines += [
            "",
            "| code | seconds per epoch (timed, after a warm-up) | all epochs |",
            "|---|---|---|",
            f"| {a['baseline_commit'][:7]} (baseline) | {a['baseline_epoch_seconds']:.1f} | "
            + ", ".join(f"{s:.1f}" for s in a["baseline_epoch_seconds_all"])
            + " |",
            f"| {a['commit'][:7]} | {a['epoch_seconds']:.1f} | "
            + ", ".join(f"{s:.1f}" for s in a["epoch_seconds_all"])
            + " |",
            "",
            f"Speed-up: **{a['speedup']:.2f}x** (one run each, back to back).",
        ]
    else:
        lines += [
            "",
            f"Seconds per epoch (timed, after a warm-up): **{report['epoch_seconds']:.1f}** "
            f"(all epochs: "
            + ", ".join(f"{s:.1f}" for s in report["settings"][0]["epoch_seconds_all"])
            + ").",
        ]
    if "profile" in report:
        profile = report["profile"]
        lines += ["", "Where a step's time goes (ms per step, each part timed on its own):", ""]
        lines += [f"- {k}: {v:.1f}" for k, v in profile["ms_per_step"].items()]
        lines += [
            "",
            f"Op time by op type, ms per step (TensorFlow profiler, "
            f"{profile['profiled_steps']} steps; wall time under the profiler "
            f"{profile['profiled_wall_ms_per_step']:.1f} ms per step):",
            "",
            "| op | ms per step | share |",
            "|---|---|---|",
        ]
        shares = profile["op_time_share"]
        for op, ms in profile["op_ms_per_step"].items():
            share = f"{100 * shares[op]:.1f} %" if op in shares else ""
            lines.append(f"| {op} | {ms:.2f} | {share} |")
        lines += ["", "`tf.matmul` at the step's shapes, GFLOP/s (one graph, no dispatch):", ""]
        lines += [f"- {k}: {v:.1f}" for k, v in profile["matmul_gflops"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    if args.baseline_commit:
        report = ab(args)
    else:
        report = measure(args)
    if args.code is None:
        sys.path.insert(0, REPO)
        from benchmarks.common import machine, write_report

        report["machine"] = machine()
        os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
        write_report(report, args.report, markdown(report))
    else:  # a child of the A/B: the parent writes the report
        with open(args.report, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
