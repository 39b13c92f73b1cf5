"""A sweep's runs: what to train (`Run`, `parse_rank`, `parse_seeds`, `plan`) and where each
run's directory is and what it holds (results, the pretraining it fine-tunes from).

No TensorFlow here: the sweep plans, reads its run directories and takes its lock without it.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Sequence
from typing import Optional, Union

from s3rec_tf import config as config_lib
from s3rec_tf import jsonfile, lockfile

Rank = Union[int, str]  # an int, "full" or "none" (SASRec)


class SweepError(ValueError):
    """Bad arguments or a sweep directory that cannot be continued; the message says why."""


@dataclasses.dataclass(frozen=True)
class Run:
    rank: Rank
    seed: int

    @property
    def name(self) -> str:
        return f"sasrec-s{self.seed}" if self.rank == "none" else f"r{self.rank}-s{self.seed}"

    def train_flags(self, pretrained_from: Optional[str] = None) -> list[str]:
        """The training CLI's flags that make this run; `pretrained_from`: a sweep directory
        whose run of the same name holds the pretrained encoder to fine-tune (SASRec has none)."""
        if self.rank == "none":
            return ["--seed", str(self.seed), "--no_pretrain"]
        flags = ["--seed", str(self.seed), "--rank", str(self.rank)]
        if pretrained_from:
            flags += ["--init_from", pretrained_encoder(pretrained_from, self)]
        return flags


# ------------------------------------------------------------------------------------ the plan


def parse_rank(text: str, flag: str) -> Rank:
    """A rank of --ranks or --seeds: the training CLI's (`config.parse_rank`), kept as "full" for
    run names and sweep.json, or "none" (SASRec)."""
    if text == "none":
        return text
    try:
        rank = config_lib.parse_rank(text, flag)
    except config_lib.ConfigError as e:
        raise SweepError(str(e)) from None
    return config_lib.FULL_RANK if rank is None else rank


def parse_seeds(items: Sequence[str], ranks: Sequence[Rank]) -> dict[Rank, int]:
    """["3", "16:5", "full:5"] -> {rank: seed count} for every rank in `ranks`."""
    default = None
    counts: dict[Rank, int] = {}
    for item in items:
        rank_text, sep, count_text = item.rpartition(":")
        try:
            count = int(count_text)
        except ValueError:
            raise SweepError(f"--seeds {item!r}: expected N or RANK:N.") from None
        if count < 1:
            raise SweepError(f"--seeds {item!r}: a seed count must be at least 1.")
        if not sep:
            default = count
            continue
        rank = parse_rank(rank_text, f"--seeds {item!r}: RANK (or 'none', SASRec)")
        if rank not in ranks:
            raise SweepError(f"--seeds {item!r}: rank {rank_text} is not in --ranks {list(ranks)}.")
        counts[rank] = count
    missing = [r for r in ranks if r not in counts]
    if missing and default is None:
        raise SweepError(f"--seeds gives no seed count for rank(s) {missing}: add N or RANK:N.")
    return {r: counts.get(r, default) for r in ranks}


def plan(seed_counts: dict[Rank, int]) -> list[Run]:
    """Seed by seed: seed 1 of every rank (in the given order), then seed 2, ..."""
    top = max(seed_counts.values())
    return [
        Run(rank, seed)
        for seed in range(1, top + 1)
        for rank, count in seed_counts.items()
        if seed <= count
    ]


# ------------------------------------------------------------------------------ run directories


def run_dir(output: str, run: Run) -> str:
    return os.path.join(output, "runs", run.name)


def pretrained_encoder(sweep_dir: str, run: Run) -> str:
    """The pretrained encoder of `run`'s namesake in `sweep_dir` (run_dir.PRETRAINED_ENCODER)."""
    return os.path.join(run_dir(sweep_dir, run), "pretrain", "encoder")


def pretraining_source(sweep_dir: str, run: Run) -> dict:
    """What a run fine-tuned from another sweep's pretraining records of it (sweep_run.json):
    where it is, its pretraining settings, and its epochs' losses and times."""
    directory = run_dir(sweep_dir, run)
    config = jsonfile.read(os.path.join(directory, "config.json"))
    return {
        "run_dir": os.path.abspath(directory),
        "pretrain": config["pretrain"],
        "epochs_log": read_epoch_log(os.path.join(directory, "pretrain", "epochs.csv")),
    }


def waiting_for(output: str, run: Run, pretrained_from: Optional[str]) -> Optional[str]:
    """Why `run` cannot start now (None when it can): its directory is held by another live
    process, or the pretraining it fine-tunes from has not finished."""
    taken_by = lockfile.live_holder(os.path.join(run_dir(output, run), "run.lock"))
    if taken_by is not None:
        return f"{run_dir(output, run)} is being trained by process {taken_by}"
    if pretrained_from and run.rank != "none":
        source = run_dir(pretrained_from, run)
        if not os.path.exists(os.path.join(source, "pretrain", "summary.json")):
            return f"the pretraining in {source} has not finished"
    return None


def write_record(path: str, value) -> None:
    """sweep.json and a run's sweep_run.json: indented by 1, with a final newline (the format of
    the records committed under reports/)."""
    jsonfile.write(path, value, indent=1, end="\n")


def read_epoch_log(path: str) -> list[dict]:
    """The rows of a phase's epochs.csv as floats ([] when there is none yet)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        return []
    out = []
    for row in rows:
        parsed = {}
        for key, value in row.items():
            try:
                parsed[key] = float(value)
            except (TypeError, ValueError):
                parsed[key] = None
        out.append(parsed)
    return out


def finished_here(output: str, run: Run) -> bool:
    return os.path.exists(os.path.join(run_dir(output, run), "results.json"))
