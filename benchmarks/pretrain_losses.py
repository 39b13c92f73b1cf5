"""Pretraining losses of our pretraining checkpoints beside the authors' released model.

    python benchmarks/pretrain_losses.py --data DIR \
        --checkpoint NAME=RUN_DIR/pretrain/checkpoints/ckpt-N [...] \
        [--report reports/beauty_pretrain_losses.json]

Each objective (AAP, MIP, MAP, SP) is evaluated in inference mode (no dropout) over masking
duplicate 0 of DIR, per sequence as in training, for the reference .npz and for each checkpoint
(its run's config.json gives rank and sizes). The objectives are the reference's own functions
(tests/test_reference.py), so the values say how far a pretraining is from the authors' 150
epochs; the weighted total depends on each run's objective weights and is left out.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from benchmarks.common import (  # noqa: E402
    checkpoint_epochs,
    machine,
    named_checkpoints,
    run_config,
    write_report,
)
from s3rec_tf import (
    builders,  # noqa: E402
    data_files,  # noqa: E402
)
from s3rec_tf import config as config_lib  # noqa: E402
from s3rec_tf import data as data_lib  # noqa: E402
from s3rec_tf import reference as reference_lib  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJECTIVES = ("aap_loss", "mip_loss", "map_loss", "sp_loss")


def evaluate(
    config: config_lib.Config, data_dir: str, metadata: dict, item_attributes, source: str
) -> dict:
    model = builders.pretrainer_from_config(
        config, metadata["num_items"], metadata["num_attributes"], item_attributes
    )
    model.compile(optimizer=tf.keras.optimizers.Adam())
    data = data_lib.PretrainData(
        data_dir, metadata, config.pretrain.batch_size, config.model.max_seq_length, config.seed
    )
    model.evaluate(data.dataset(0).take(1), verbose=0)  # creates the weights
    if source.endswith(".npz"):
        reference_lib.load_reference_weights(source, model.encoder, model.heads)
    else:
        tf.train.Checkpoint(model=model).read(
            source
        ).assert_existing_objects_matched().expect_partial()
    losses = model.evaluate(data.dataset(0), verbose=0, return_dict=True)
    return {k: round(float(losses[k]), 4) for k in OBJECTIVES}


def markdown(report: dict) -> str:
    lines = [
        "# Pretraining losses on Beauty (inference mode, masking duplicate 0, per sequence)",
        "",
        "| model | rank | objective weights AAP / MIP / MAP / SP | epochs | AAP | MIP | MAP | SP |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        w = r["objective_weights"]
        losses = r["losses"]
        lines.append(
            f"| {r['name']} | {r['rank']} | {w['aap']} / {w['mip']} / {w['map']} / {w['sp']} | "
            f"{r['epochs']} | " + " | ".join(f"{losses[k]:.4f}" for k in OBJECTIVES) + " |"
        )
    lines += ["", f"Data: {report['data']}. Machine: {report['machine']}.", ""]
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", required=True, help="beam_pipelines.preprocess output for Beauty")
    p.add_argument(
        "--reference",
        default=os.path.join(REPO, "..", "shared", "reference", "s3rec_reference_beauty.npz"),
        help="the authors' weights (Beauty only); '' leaves that row out",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="NAME=CKPT",
        help="a pretraining checkpoint prefix",
    )
    p.add_argument("--report", default=os.path.join(REPO, "reports", "beauty_pretrain_losses.json"))
    args = p.parse_args(argv)
    named = named_checkpoints(p, args.checkpoint)

    metadata = data_files.read_metadata(args.data)
    item_attributes = data_files.load_item_attributes(
        args.data, metadata["num_items"], metadata["num_attributes"]
    )
    rows = []
    if args.reference:
        if not os.path.exists(args.reference):
            p.error(
                f"--reference {args.reference} does not exist ('' leaves the reference row out)"
            )
        reference_config = config_lib.load("reference_weights").replace(
            **{"data.data_dir": args.data}
        )
        rows.append(
            {
                "name": "reference (the authors' released model)",
                "rank": "full",
                "objective_weights": _weights(reference_config),
                "epochs": 150,
                "losses": evaluate(
                    reference_config, args.data, metadata, item_attributes, args.reference
                ),
            }
        )
    for name, path in named:
        config = run_config(path).replace(**{"data.data_dir": args.data})
        rows.append(
            {
                "name": name,
                "rank": config.model.aap_rank or "full",
                "objective_weights": _weights(config),
                "epochs": checkpoint_epochs(path),
                "checkpoint": path,
                "losses": evaluate(config, args.data, metadata, item_attributes, path),
            }
        )
        print(name, rows[-1]["losses"], flush=True)
    report = {"data": args.data, "machine": machine(), "rows": rows}
    write_report(report, args.report, markdown(report))


def _weights(config: config_lib.Config) -> dict:
    c = config.pretrain
    return {"aap": c.aap_weight, "mip": c.mip_weight, "map": c.map_weight, "sp": c.sp_weight}


if __name__ == "__main__":
    main()
