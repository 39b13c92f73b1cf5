"""Why SP's loss sits at ln 2: its logits, their sigmoids and every objective's gradient at
pretraining checkpoints.

    python -m benchmarks.sp_saturation --data DIR \\
        --checkpoint NAME=RUN_DIR/pretrain/checkpoints/ckpt-N [...] \\
        [--batches 30] [--report reports/rank_study/sp_saturation.json]

SP's loss is softplus(σ(z_neg) − σ(z_pos)), the reference's BCE(σ(σ(z_pos) − σ(z_neg)), 1), with
z = sp_norm(context)·segment. When both sigmoids saturate on the same side (|z| ≫ 1), the loss is
ln 2 whatever the segments, and its gradient, through σ'(z) ≈ 0, vanishes. For each checkpoint, in
inference mode over the first --batches batches of masking duplicate 0 in file order: the SP loss;
the mean z_pos, z_neg and |z|; the share of examples whose two sigmoids are both above 0.99 or both
below 0.01; the mean slope σ'(z_pos); the mean cosine similarity between different examples'
positive-segment encodings (near 1: the encoder gives every segment about the same vector); and the
gradient norm of each weighted objective over the first --gradient_batches batches.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy.special import expit  # noqa: E402

from benchmarks.common import (  # noqa: E402
    checkpoint_epochs,
    machine,
    named_checkpoints,
    pretrainer_at,
    write_report,
)
from s3rec_tf import data as data_lib  # noqa: E402
from s3rec_tf import (
    data_files,  # noqa: E402
    schema,  # noqa: E402
)
from s3rec_tf.pretrain import OBJECTIVES  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SATURATED = 0.01  # a sigmoid below this or above 1 − this


def logit_statistics(logits: np.ndarray) -> dict:
    """SP's loss and saturation from its logits `[N, 2]` (positive, negative segment)."""
    z = np.asarray(logits, np.float64)
    s = expit(z)  # σ without overflow warnings at |z| ≫ 1
    both_high = (s[:, 0] > 1 - SATURATED) & (s[:, 1] > 1 - SATURATED)
    both_low = (s[:, 0] < SATURATED) & (s[:, 1] < SATURATED)
    return {
        "sp_loss": float(np.mean(np.logaddexp(0.0, s[:, 1] - s[:, 0]))),
        "mean_z_pos": float(z[:, 0].mean()),
        "mean_z_neg": float(z[:, 1].mean()),
        "mean_abs_z": float(np.abs(z).mean()),
        "both_saturated": float(np.mean(both_high | both_low)),
        "mean_slope_pos": float(np.mean(s[:, 0] * (1.0 - s[:, 0]))),
    }


def mean_cosine_between_examples(encodings: np.ndarray) -> float:
    """Mean cosine similarity over the pairs of different rows of `[N, d]`."""
    unit = encodings / np.linalg.norm(encodings, axis=-1, keepdims=True)
    similarity = unit @ unit.T
    n = len(unit)
    return float((similarity.sum() - np.trace(similarity)) / (n * (n - 1)))


def measure(model, batches: list, gradient_batches: int) -> dict:
    """Every figure of the module docstring for a built pretrainer holding a checkpoint."""
    logits, cosines = [], []
    for batch in batches:
        z, encodings = model.segment_logits(batch, training=False, return_encodings=True)
        logits.append(z.numpy())
        cosines.append(mean_cosine_between_examples(encodings[1].numpy()))  # positive segments
    norms = {name: [] for name in OBJECTIVES}
    for batch in batches[:gradient_batches]:
        with tf.GradientTape(persistent=True) as tape:
            losses = model.compute_losses(batch, training=False)
        for name in OBJECTIVES:
            gradients = tape.gradient(losses[name], model.trainable_variables)
            norm = tf.linalg.global_norm([g for g in gradients if g is not None])
            norms[name].append(model.objective_weights[name] * float(norm))
        del tape
    return {
        **logit_statistics(np.concatenate(logits)),
        "segment_cosine": float(np.mean(cosines)),
        "gradient_norm": {name: float(np.mean(v)) for name, v in norms.items()},
    }


def markdown(report: dict) -> str:
    lines = [
        "# SP saturation at pretraining checkpoints (inference mode, masking duplicate 0)",
        "",
        "z = sp_norm(context)·segment; loss softplus(σ(z−) − σ(z+)). 'both sat.': share of "
        f"examples whose σ(z+) and σ(z−) are both < {SATURATED} or both > {1 - SATURATED}. "
        "Gradient norms are of each weighted objective.",
        "",
        "| run | rank | epoch | SP loss | mean z+ | mean z− | mean abs z | both sat. | σ'(z+) | "
        "segment cosine | ‖∇‖ AAP | MIP | MAP | SP |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        g = r["gradient_norm"]
        lines.append(
            f"| {r['name']} | {r['rank']} | {r['epochs']} | {r['sp_loss']:.4f} | "
            f"{r['mean_z_pos']:.1f} | {r['mean_z_neg']:.1f} | {r['mean_abs_z']:.1f} | "
            f"{r['both_saturated']:.3f} | {r['mean_slope_pos']:.1e} | {r['segment_cosine']:.3f} | "
            + " | ".join(f"{g[name]:.2g}" for name in OBJECTIVES)
            + " |"
        )
    examples = " / ".join(sorted({str(r["examples"]) for r in report["rows"]}))
    lines += [
        "",
        f"Data: {report['data']}, the first {examples} examples in file order. "
        f"Machine: {report['machine']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", required=True, help="beam_pipelines.preprocess output")
    p.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        metavar="NAME=CKPT",
        help="a pretraining checkpoint prefix",
    )
    p.add_argument("--batches", type=int, default=30, help="batches of duplicate 0 to measure")
    p.add_argument("--gradient_batches", type=int, default=5)
    p.add_argument(
        "--report", default=os.path.join(REPO, "reports", "rank_study", "sp_saturation.json")
    )
    args = p.parse_args(argv)
    named = named_checkpoints(p, args.checkpoint)

    metadata = data_files.read_metadata(args.data)
    item_attributes = data_files.load_item_attributes(
        args.data, metadata["num_items"], metadata["num_attributes"]
    )
    rows, batches_by_shape = [], {}
    for name, path in named:
        config, model = pretrainer_at(path, args.data, metadata, item_attributes)
        shape = (config.pretrain.batch_size, config.model.max_seq_length)
        if shape not in batches_by_shape:  # runs of one study share them: read once
            data = data_lib.PretrainData(args.data, metadata, *shape, 0)
            batches_by_shape[shape] = list(data.dataset(0, shuffle=False).take(args.batches))
        batches = batches_by_shape[shape]
        rows.append(
            {
                "name": name,
                "rank": config.model.aap_rank or "full",
                "epochs": checkpoint_epochs(path),
                "checkpoint": path,
                "examples": sum(int(tf.shape(b[schema.POS_SEGMENT])[0]) for b in batches),
                **measure(model, batches, args.gradient_batches),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    report = {"data": args.data, "machine": machine(), "rows": rows}
    write_report(report, args.report, markdown(report))


if __name__ == "__main__":
    main()
