"""Serving speed of the exported SavedModel: latency of one request and throughput at batch 256.

    python -m benchmarks.serving_speed [--requests 1000] [--batches 50] \
        [--index brute_force scann] [--histories beauty uniform] [--note "..."]

Builds a model of the Beauty size (12,101 items, hidden 64, 2 layers, 2 heads, max_seq_length 50)
with random weights (timing does not depend on the weights), exports it with export.serving
(BruteForce, and ScaNN when installed), loads each SavedModel with tf.saved_model.load as a serving
process would, and times the `serving_default` signature:

  * latency: one request (batch 1) at a time, `--requests` of them after a warm-up: p50, p99, mean;
  * throughput: batches of `--batch_size` histories, `--batches` of them: histories per second
    (from the median batch time, so that one stall of a shared machine does not decide it).

Histories, right-padded with "" per request as a client sends them, history items excluded from
the answer (the default export):
  * beauty: real Beauty user histories (each user's sequence without its last item; median 5
    items, some over 200), drawn with a seed; needs ../shared/data/beauty/Beauty.txt
    (or $S3REC_SHARED); the model's raw ids are "1".."12101", the Beauty item ids;
  * uniform: random items, lengths uniform in 1..50 (a harder case for the encoder).
Writes reports/serving_speed.json and reports/serving_speed.md.
"""

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from export import serving
from keras_models import _legacy_keras  # noqa: F401  (Keras 2 before tf.keras is touched)
from keras_models.encoder import S3RecEncoder

logger = logging.getLogger(__name__)

REPORTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reports")
TARGET_P50_MS = 5.0
TARGET_HISTORIES_PER_S = 5000.0


def build_module(index: str, vocab_file: str, args) -> serving.S3RecServingModule:
    tf.keras.utils.set_random_seed(args.seed)
    encoder = S3RecEncoder(
        num_items=args.num_items,
        max_seq_length=args.max_seq_length,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
    )
    encoder.build(None)
    popularity = np.random.default_rng(args.seed).poisson(3.0, size=args.num_items + 1)
    popularity[0] = 0
    return serving.S3RecServingModule(encoder, vocab_file, popularity, k=args.k, index=index)


def beauty_path() -> str:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shared = os.environ.get("S3REC_SHARED", os.path.join(os.path.dirname(repo), "shared"))
    return os.path.join(shared, "data", "beauty", "Beauty.txt")


def histories_source(kind: str, args, vocab: list[str]):
    """A function count -> histories (lists of raw ids) of the kind `kind`, seeded."""
    rng = np.random.default_rng(args.seed + 1)
    if kind == "uniform":

        def draw(count):
            lengths = rng.integers(1, args.max_seq_length + 1, size=count)
            return [list(rng.choice(vocab, size=int(n))) for n in lengths]

        return draw
    with open(args.beauty) as f:
        users = [line.split()[1:-1] for line in f if line.strip()]
    unknown = {raw for items in users for raw in items} - set(vocab)
    if unknown:
        raise ValueError(
            f"{args.beauty}: item ids {sorted(unknown)[:5]} are not in 1..{args.num_items}."
        )

    def draw(count):
        return [users[u] for u in rng.integers(0, len(users), size=count)]

    return draw


def as_request(histories: list[list[str]]) -> tf.Tensor:
    width = max(len(h) for h in histories)
    return tf.constant([h + [""] * (width - len(h)) for h in histories], tf.string)


def time_calls(function, requests: list[tf.Tensor], warmup: int) -> np.ndarray:
    """Seconds per call, after `warmup` untimed calls."""
    for request in requests[:warmup]:
        function(history=request)["item_ids"].numpy()
    seconds = []
    for request in requests:
        start = time.perf_counter()
        function(history=request)["item_ids"].numpy()  # .numpy(): the answer is really there
        seconds.append(time.perf_counter() - start)
    return np.array(seconds)


def benchmark(serve, draw, args) -> dict:
    singles = [as_request([history]) for history in draw(args.requests)]
    latency = time_calls(serve, singles, warmup=min(50, args.requests)) * 1e3
    batches = [as_request(draw(args.batch_size)) for _ in range(args.batches)]
    batch_seconds = time_calls(serve, batches, warmup=min(3, args.batches))
    result = {
        "latency_ms": {
            "p50": float(np.percentile(latency, 50)),
            "p99": float(np.percentile(latency, 99)),
            "mean": float(latency.mean()),
            "requests": args.requests,
        },
        "throughput": {
            "batch_size": args.batch_size,
            "batches": args.batches,
            "median_batch_ms": float(np.median(batch_seconds) * 1e3),
            "histories_per_second": float(args.batch_size / np.median(batch_seconds)),
        },
    }
    result["meets_targets"] = {
        "p50_under_5_ms": result["latency_ms"]["p50"] < TARGET_P50_MS,
        "over_5000_histories_per_s": result["throughput"]["histories_per_second"]
        > TARGET_HISTORIES_PER_S,
    }
    return result


def load_exported(index: str, args, work_dir: str, vocab_file: str):
    """Exports a random model with `index` and loads it back (keep it alive while serving)."""
    module = build_module(index, vocab_file, args)
    model_dir = os.path.join(work_dir, index)
    serving.save_serving_module(module, model_dir)
    return tf.saved_model.load(model_dir)


def markdown(report: dict) -> str:
    lines = [
        "| index | histories | p50 latency (ms) | p99 latency (ms) | throughput at batch "
        f"{report['setup']['batch_size']} (histories/s) |",
        "|---|---|---:|---:|---:|",
    ]
    for index, by_histories in report["results"].items():
        for kind, r in by_histories.items():
            lines.append(
                f"| {index} | {kind} | {r['latency_ms']['p50']:.2f} | "
                f"{r['latency_ms']['p99']:.2f} | "
                f"{r['throughput']['histories_per_second']:,.0f} |"
            )
    setup = report["setup"]
    lines += [
        "",
        f"{setup['num_items']:,} items, hidden {setup['hidden_size']}, "
        f"{setup['num_layers']} layers, "
        f"k = {setup['k']}, history items excluded; {setup['requests']} single requests, "
        f"{setup['batches']} batches; random weights (timing only); "
        f"{report['machine']['cpu_count']} CPU cores, "
        f"TensorFlow {report['machine']['tensorflow']}. "
        f"Targets: p50 < {TARGET_P50_MS:g} ms, > {TARGET_HISTORIES_PER_S:,.0f} histories/s.",
    ]
    if report.get("note"):
        lines.append(f"Note: {report['note']}")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.serving_speed", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--index", nargs="+", choices=serving.INDEX_TYPES, default=list(serving.INDEX_TYPES)
    )
    p.add_argument("--requests", type=int, default=1000, help="single requests timed")
    p.add_argument("--batches", type=int, default=50, help="batches timed")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--num_items", type=int, default=12_101)
    p.add_argument("--hidden_size", type=int, default=64)
    p.add_argument("--num_layers", type=int, default=2)
    p.add_argument("--num_heads", type=int, default=2)
    p.add_argument("--max_seq_length", type=int, default=50)
    p.add_argument("--k", type=int, default=10)
    p.add_argument(
        "--histories", nargs="+", choices=("beauty", "uniform"), default=["beauty", "uniform"]
    )
    p.add_argument("--beauty", default=beauty_path(), help="Beauty.txt (S3-Rec format)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--note", default="", help="recorded with the figures (e.g. 'shared machine')")
    p.add_argument("--output", default=os.path.join(REPORTS, "serving_speed.json"))
    p.add_argument("--markdown", default=os.path.join(REPORTS, "serving_speed.md"))
    return p


def main(argv: Optional[list[str]] = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    indexes = list(dict.fromkeys(args.index))
    if "scann" in indexes and not serving.scann_available():
        logger.warning(
            "ScaNN is not installed (pip install 's3rec-tf[scann]'); timing BruteForce only."
        )
        indexes.remove("scann")
    kinds = list(dict.fromkeys(args.histories))
    if "beauty" in kinds and not os.path.exists(args.beauty):
        logger.warning("%s not found; timing uniform random histories only.", args.beauty)
        kinds = [kind for kind in kinds if kind != "beauty"] or ["uniform"]
    vocab = [str(i) for i in range(1, args.num_items + 1)]  # the Beauty item ids
    report = {
        "setup": {
            "num_items": args.num_items,
            "hidden_size": args.hidden_size,
            "num_layers": args.num_layers,
            "num_heads": args.num_heads,
            "max_seq_length": args.max_seq_length,
            "k": args.k,
            "batch_size": args.batch_size,
            "requests": args.requests,
            "batches": args.batches,
            "histories": {
                "beauty": f"real user histories from {args.beauty} (without the last item)",
                "uniform": f"random items, lengths uniform in 1..{args.max_seq_length}",
            },
            "exclude_history": True,
            "encoder_chunk_rows": serving.ENCODER_CHUNK_ROWS,
            "weights": "random (seeded); the timing does not depend on the weights",
            "seed": args.seed,
            "through": "tf.saved_model.load(...).signatures['serving_default'], eager calls",
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
        },
        "note": args.note,
        "results": {},
    }
    with tempfile.TemporaryDirectory() as work_dir:
        vocab_file = os.path.join(work_dir, "items.txt")
        with open(vocab_file, "w") as f:
            f.writelines(raw + "\n" for raw in vocab)
        for index in indexes:
            loaded = load_exported(index, args, work_dir, vocab_file)
            serve = loaded.signatures[serving.SERVING_SIGNATURE]
            report["results"][index] = {}
            for kind in kinds:
                result = benchmark(serve, histories_source(kind, args, vocab), args)
                logger.info("%s, %s histories: %s", index, kind, json.dumps(result))
                report["results"][index][kind] = result
    if "scann" in indexes:
        report["setup"]["scann_options"] = serving.default_scann_options(
            args.num_items, args.k, args.max_seq_length
        )
    for path, text in (
        (args.output, json.dumps(report, indent=2) + "\n"),
        (args.markdown, markdown(report)),
    ):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    logger.info("Wrote %s and %s", args.output, args.markdown)
    return report


if __name__ == "__main__":
    main()
