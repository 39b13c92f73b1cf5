"""The sweep's training processes: one `python -m s3rec_tf.train` subprocess per run, what of
its progress has been reported (`Active`), and the stop signals that end them.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import signal
import subprocess
import sys
import time
from typing import Optional

from s3rec_tf import metric_names
from s3rec_tf.study.runs import Run, read_epoch_log, run_dir, write_record


def _die_with_parent() -> None:
    """Runs in the child: it gets SIGKILL when the sweep dies, so no orphan keeps training in a
    run directory that a rerun of the sweep is about to continue."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class StopSignals:
    """Records SIGTERM / SIGINT instead of raising where they land (an exception raised inside
    subprocess.Popen's fork handlers is swallowed, and the sweep would go on); the loop checks
    `signum` and stops between polls."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: Optional[signal.Signals] = None

    def __enter__(self) -> StopSignals:
        self.previous = {s: signal.signal(s, self._record) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _record(self, signum, frame) -> None:
        self.signum = signal.Signals(signum)

    def sleep(self, seconds: float) -> None:
        """Sleeps `seconds`, or less if a stop signal arrives."""
        deadline = time.monotonic() + seconds
        while self.signum is None and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def _minutes(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


class Active:
    """A run being trained by a subprocess, and what of it has been reported."""

    def __init__(self, run: Run, index: int, total: int, process, directory: str, budgets: dict):
        self.run, self.index, self.total = run, index, total
        self.process, self.directory, self.budgets = process, directory, budgets
        self.start = time.time()
        # Epochs an earlier sweep already reported: a resumed run's first line is its next epoch.
        self.reported = {phase: len(self._log(phase)) for phase in ("pretrain", "finetune")}

    def _log(self, phase: str) -> list[dict]:
        return read_epoch_log(os.path.join(self.directory, phase, "epochs.csv"))

    def last_epoch(self) -> Optional[str]:
        """'finetune epoch 4/200' or 'pretrain epoch 37/50': the latest epoch reported; None
        before the first."""
        for phase in ("finetune", "pretrain"):
            if self.reported[phase]:
                return f"{phase} epoch {self.reported[phase]}/{self.budgets[phase]}"
        return None

    def start_line(self) -> str:
        done = self.last_epoch()
        where = f"resumed after {done}" if done else "started"
        return f"{self.label()} {where} in {self.directory}"

    def finish_line(self, results: dict, done: int) -> str:
        test = ", ".join(
            f"{p} {metric_names.headline(results['test'][p])}"
            for p in metric_names.HEADLINE_PROTOCOLS
        )
        return (
            f"{self.label()} finished in {_minutes(time.time() - self.start)}: test {test}; "
            f"sweep: {done}/{self.total} done"
        )

    def stop_line(self) -> str:
        done = self.last_epoch()
        return f"{self.label()} stopped " + (f"after {done}" if done else "before its first epoch")

    def label(self) -> str:
        rank = "SASRec" if self.run.rank == "none" else f"rank {self.run.rank}"
        return f"[{self.index}/{self.total} {rank} seed {self.run.seed}]"

    def progress_lines(self) -> list[str]:
        """One line for every phase whose epochs.csv gained rows since the last call."""
        lines = []
        for phase in ("pretrain", "finetune"):
            log = self._log(phase)
            if not log or len(log) == self.reported[phase]:
                continue
            self.reported[phase] = len(log)
            epoch_seconds = [r["epoch_seconds"] for r in log[-5:] if r.get("epoch_seconds")]
            per_epoch = sum(epoch_seconds) / len(epoch_seconds) if epoch_seconds else 0.0
            budget = self.budgets[phase]
            if phase == "pretrain":
                left = budget - len(log)
                eta = f"phase ETA {_minutes(left * per_epoch)}"
            else:
                monitor = [r.get(self.budgets["monitor"]) or 0.0 for r in log]
                since_best = len(monitor) - 1 - max(range(len(monitor)), key=monitor.__getitem__)
                left = min(budget - len(log), self.budgets["patience"] - since_best)
                eta = f"ETA {_minutes(left * per_epoch)} unless validation improves"
            lines.append(
                f"{self.label()} {phase} epoch {len(log)}/{budget}, {per_epoch:.0f} s/epoch, "
                f"elapsed {_minutes(time.time() - self.start)}, {eta}"
            )
        return lines


def start(run, index, total, output, flags, config, env, segment: dict) -> Active:
    """Starts `python -m s3rec_tf.train FLAGS` for `run` (number `index` of `total`) in its
    directory, recording `segment` (machine, threads, jobs) in sweep_run.json and appending to
    its train.log."""
    directory = run_dir(output, run)
    os.makedirs(directory, exist_ok=True)
    write_record(os.path.join(directory, "sweep_run.json"), segment)
    command = [sys.executable, "-m", "s3rec_tf.train", *flags, "--output", directory]
    command += ["--verbose", "2"]
    with open(os.path.join(directory, "train.log"), "a") as log:
        log.write(f"\n# {datetime.datetime.now().isoformat()} {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_parent,
        )
    budgets = {
        "pretrain": config.pretrain.epochs,
        "finetune": config.finetune.epochs,
        "patience": config.finetune.patience,
        "monitor": f"val_{config.finetune.monitor}",
    }
    return Active(run, index, total, process, directory, budgets)


def tail(directory: str, lines: int = 15) -> str:
    with open(os.path.join(directory, "train.log"), errors="replace") as f:
        return "".join(f.readlines()[-lines:])
