"""Wall time and throughput of the preprocessing job on the Beauty data with the DirectRunner.

    python benchmarks/preprocess_speed.py [--dupe_factors 1 10] [--inputs s3rec raw]

Each configuration runs `python -m beam_pipelines.preprocess` in a fresh process (so the time
includes starting Python, TensorFlow and Beam, as a user sees it) and the results go to
reports/preprocess_speed.json. `raw` first converts Beauty into raw Amazon 2014 files
(beam_pipelines.raw_format, untimed) and times the job on them. The machine's load average is
recorded next to every timing, because a shared machine slows the job down.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("S3REC_SHARED", os.path.join(os.path.dirname(REPO), "shared"))


def _run_job(input_args, output, dupe_factor, runner_args):
    command = [
        sys.executable,
        "-m",
        "beam_pipelines.preprocess",
        *input_args,
        "--output",
        output,
        "--dupe_factor",
        str(dupe_factor),
        *runner_args,
    ]
    load_before = os.getloadavg()
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-4000:]}")
    with open(os.path.join(output, "metadata.json")) as f:
        metadata = json.load(f)
    interactions = metadata["num_interactions"]
    examples = metadata["num_pretrain_examples"] * dupe_factor + 3 * metadata["num_users"]
    return {
        "dupe_factor": dupe_factor,
        "wall_seconds": round(wall, 2),
        "input_interactions": interactions,
        "examples_written": examples,
        "interactions_per_second": round(interactions / wall, 1),
        "examples_per_second": round(examples / wall, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "command": command[1:],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beauty_dir", default=os.path.join(SHARED, "data", "beauty"))
    parser.add_argument("--dupe_factors", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--inputs", nargs="+", choices=("s3rec", "raw"), default=["s3rec", "raw"])
    parser.add_argument("--work_dir", default=None, help="Scratch directory (default: a temp dir).")
    parser.add_argument("--report", default=os.path.join(REPO, "reports", "preprocess_speed.json"))
    parser.add_argument(
        "--runner_args",
        nargs="*",
        default=["--runner=DirectRunner"],
        help="Beam options passed to every run.",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    sequences = os.path.join(args.beauty_dir, "Beauty.txt")
    item2attributes = os.path.join(args.beauty_dir, "Beauty_item2attributes.json")
    if not os.path.exists(sequences):
        parser.error(f"Beauty data not found in {args.beauty_dir} (set --beauty_dir)")

    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        inputs = {}
        if "s3rec" in args.inputs:
            inputs["s3rec"] = ["--sequences", sequences, "--item2attributes", item2attributes]
        if "raw" in args.inputs:
            from beam_pipelines import raw_format

            raw = raw_format.write_raw_amazon(
                sequences, item2attributes, os.path.join(work, "raw"), ids="shuffled", seed=0
            )
            inputs["raw"] = ["--reviews", raw.reviews, "--metadata", raw.metadata]
        runs = []
        for name, input_args in inputs.items():
            for dupe_factor in args.dupe_factors:
                logging.info("Running %s input, dupe factor %d", name, dupe_factor)
                result = _run_job(
                    input_args,
                    os.path.join(work, f"{name}-{dupe_factor}"),
                    dupe_factor,
                    args.runner_args,
                )
                result["input"] = name
                logging.info("%s", json.dumps(result))
                runs.append(result)

    report = {
        "benchmark": "beam_pipelines.preprocess on Beauty (22,363 users, 198,502 interactions)",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "apache_beam": importlib.metadata.version("apache-beam"),
        },
        "runs": runs,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
    with open(args.report, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    logging.info("Wrote %s", args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
