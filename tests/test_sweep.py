"""The rank study's commands: `python -m s3rec_tf.sweep` and `python -m s3rec_tf.report`."""

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy import stats

from s3rec_tf import config as config_lib
from s3rec_tf import lockfile
from s3rec_tf import run_dir as run_dir_lib
from s3rec_tf.study import processes, report, sweep
from s3rec_tf.study import runs as runs_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config",
    "sample",
    "--hidden_size",
    "16",
    "--pretrain_epochs",
    "1",
    "--finetune_epochs",
    "1",
]


# ------------------------------------------------------------------------------- the plan


def test_seed_counts_per_rank_and_the_seed_by_seed_order():
    counts = runs_lib.parse_seeds(["3", "16:5", "full:5"], [4, 16, "full", "none"])
    assert counts == {4: 3, 16: 5, "full": 5, "none": 3}
    runs = runs_lib.plan(counts)
    assert [r.name for r in runs[:4]] == ["r4-s1", "r16-s1", "rfull-s1", "sasrec-s1"]
    assert [r.name for r in runs[-4:]] == ["r16-s4", "rfull-s4", "r16-s5", "rfull-s5"]
    assert len(runs) == 3 + 5 + 5 + 3
    with pytest.raises(runs_lib.SweepError, match=r"no seed count for rank\(s\) \[4\]"):
        runs_lib.parse_seeds(["16:2"], [4, 16])
    with pytest.raises(runs_lib.SweepError, match="at least 1"):
        runs_lib.parse_seeds(["0"], [4])
    with pytest.raises(runs_lib.SweepError, match="rank 8 is not in --ranks"):
        runs_lib.parse_seeds(["2", "8:3"], [4])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--ranks", "4", "65", "--seeds", "2"], "run r65-s1: .*model.aap_rank = 65 must be None"),
        (["--ranks", "4", "--seeds"], "expected at least one argument"),
        (["--ranks", "4", "--seeds", "2", "--seed", "3"], "--seed is set by the sweep"),
        (["--ranks", "4", "--seeds", "2", "--rank", "3"], "--rank is set by the sweep"),
        (["--ranks", "four", "--seeds", "2"], "--ranks must be an integer or 'full', not 'four'"),
        (["--ranks", "4", "--seeds", "2", "--data", "/nonexistent"], "--data /nonexistent"),
        (["--ranks", "4", "--seeds", "2", "--loss", "mse"], "invalid choice: 'mse'"),
    ],
)
def test_bad_arguments_stop_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as e:
        sweep.main(argv + ["--output", str(out)])
    assert e.value.code != 0
    text = str(e.value.code) + capsys.readouterr().err
    assert __import__("re").search(message, text), text
    assert not out.exists()


def _finished_run(output, run, config):
    directory = runs_lib.run_dir(str(output), run)
    os.makedirs(directory)
    with open(os.path.join(directory, "results.json"), "w") as f:
        json.dump({"config": config.to_dict()}, f)
    return directory


def test_a_finished_run_with_other_settings_stops_the_sweep_and_a_longer_pretraining_extends_it(
    tmp_path,
):
    run = runs_lib.Run(16, 1)
    wanted = config_lib.Config().replace(**{"model.aap_rank": 16, "pretrain.epochs": 50})
    _finished_run(tmp_path, run, wanted.replace(**{"pretrain.learning_rate": 0.01}))
    with pytest.raises(
        runs_lib.SweepError, match=r"pretrain.learning_rate = 0.01 there, 0.001 now"
    ):
        sweep.check_finished_runs(str(tmp_path), [run], {run: wanted})

    shutil.rmtree(tmp_path / "runs")
    directory = _finished_run(tmp_path, run, wanted.replace(**{"pretrain.epochs": 30}))
    os.makedirs(os.path.join(directory, "finetune", "checkpoints"))
    assert sweep.check_finished_runs(str(tmp_path), [run], {run: wanted}) == [run]
    moved = run_dir_lib.archive_finetuning(directory, 30)
    assert moved.endswith("finetune-after-30-pretrain-epochs")
    assert sorted(os.listdir(moved)) == ["finetune", "results.json"]
    assert not os.path.exists(os.path.join(directory, "results.json"))

    shutil.rmtree(tmp_path / "runs")
    _finished_run(tmp_path, run, wanted.replace(**{"pretrain.epochs": 80}))
    with pytest.raises(runs_lib.SweepError, match="pretrained for 80 epochs; --pretrain_epochs 50"):
        sweep.check_finished_runs(str(tmp_path), [run], {run: wanted})


def test_runs_carried_over_from_an_earlier_sweep_json_are_checked_like_run_directories(tmp_path):
    run, other = runs_lib.Run(16, 1), runs_lib.Run("full", 1)
    wanted = config_lib.Config().replace(**{"model.aap_rank": 16, "pretrain.epochs": 50})
    configs = {run: wanted, other: wanted.replace(**{"model.aap_rank": None})}
    record = tmp_path / "record.json"

    def write(entries):
        record.write_text(json.dumps({"format_version": sweep.FORMAT_VERSION, "runs": entries}))

    entry = {"name": run.name, "config": wanted.to_dict(), "test": {"sampled": {"hr@10": 0.5}}}
    write([entry, {"name": "r99-s7", "config": {}}])  # a run the sweep no longer plans: ignored
    out = str(tmp_path / "out")
    assert sweep.carried_over(str(record), out, [run, other], configs) == {run: entry}
    # A run finished here wins over the record.
    _finished_run(out, run, wanted)
    assert sweep.carried_over(str(record), out, [run, other], configs) == {}

    changed = dict(entry, config=wanted.replace(**{"pretrain.learning_rate": 0.01}).to_dict())
    write([changed])
    with pytest.raises(runs_lib.SweepError, match=r"runs\[0\] \(r16-s1\) was trained with other"):
        sweep.carried_over(str(record), str(tmp_path / "new"), [run], configs)
    # A shorter pretraining cannot be extended without its checkpoints: the run trains again.
    write([dict(entry, config=wanted.replace(**{"pretrain.epochs": 30}).to_dict())])
    assert sweep.carried_over(str(record), str(tmp_path / "new"), [run], configs) == {}

    record.write_text('{"runs": []}')
    with pytest.raises(runs_lib.SweepError, match="not a sweep.json of format 1"):
        sweep.carried_over(str(record), out, [run], configs)
    with pytest.raises(runs_lib.SweepError, match="no such file"):
        sweep.carried_over(str(tmp_path / "gone.json"), out, [run], configs)


def test_runs_finished_while_the_sweep_runs_are_not_trained_again(tmp_path, capsys):
    runs = [runs_lib.Run(16, 1), runs_lib.Run("full", 1), runs_lib.Run(16, 2)]
    queue = list(runs)
    _finished_run(tmp_path, runs[1], config_lib.Config())  # by a `train` of its own, meanwhile
    assert sweep.next_run(str(tmp_path), queue) == runs[0]
    assert sweep.next_run(str(tmp_path), queue) == runs[2]
    assert "rfull-s1: finished meanwhile, not trained again" in capsys.readouterr().out
    assert sweep.next_run(str(tmp_path), queue) is None and queue == []


def test_sasrec_alone_needs_no_rank_and_a_sweep_of_nothing_is_refused(tmp_path):
    args, runs, *_ = sweep.resolve(["--seeds", "none:2", "--output", str(tmp_path), *TINY])
    assert [r.name for r in runs] == ["sasrec-s1", "sasrec-s2"]
    with pytest.raises(runs_lib.SweepError, match="no run"):
        sweep.resolve(["--seeds", "2", "--no_sasrec", "--output", str(tmp_path), *TINY])


def test_fine_tuning_another_sweeps_pretraining_waits_for_it_and_checks_its_model(tmp_path, capsys):
    source, output = tmp_path / "pretrained", tmp_path / "ce"
    base = ["--ranks", "full", "--seeds", "1", "--output", str(output), *TINY]
    with pytest.raises(runs_lib.SweepError, match="not a sweep directory"):
        sweep.resolve(base + ["--pretrained_from", str(source)])
    full, sasrec = runs_lib.Run("full", 1), runs_lib.Run("none", 1)
    os.makedirs(runs_lib.run_dir(str(source), full))
    args, runs, _, configs, _ = sweep.resolve(base + ["--pretrained_from", str(source)])
    encoder = os.path.join(runs_lib.run_dir(str(source), full), "pretrain", "encoder")
    assert configs[full].init_from == encoder and not configs[full].pretrains
    assert full.train_flags(str(source))[-2:] == ["--init_from", encoder]
    assert configs[sasrec].init_from is None and sasrec.train_flags(str(source)) == (
        sasrec.train_flags()
    )

    # Its source still pretraining: the run waits (said once); SASRec goes first meanwhile.
    queue, told = [full, sasrec], set()
    assert sweep.next_run(str(output), queue, str(source), told) == sasrec
    assert sweep.next_run(str(output), queue, str(source), told) is None and queue == [full]
    assert capsys.readouterr().out.count("rfull-s1: waiting (the pretraining in") == 1
    config_lib.save(configs[full], os.path.join(runs_lib.run_dir(str(source), full), "config.json"))
    os.makedirs(os.path.dirname(encoder))
    open(os.path.join(os.path.dirname(encoder), "summary.json"), "w").write("{}")
    assert sweep.next_run(str(output), queue, str(source), told) == full and queue == []
    recorded = runs_lib.pretraining_source(str(source), full)
    assert recorded["pretrain"] == configs[full].to_dict()["pretrain"]

    # A run directory another live process holds is left to it.
    os.makedirs(runs_lib.run_dir(str(output), full))
    lock = os.path.join(runs_lib.run_dir(str(output), full), "run.lock")
    open(lock, "w").write(f"{os.getpid()} {socket.gethostname()}\n")
    assert sweep.next_run(str(output), [full], str(source)) is None
    assert f"is being trained by process {os.getpid()}" in capsys.readouterr().out

    # A source that pretrains another model stops the sweep before any work.
    other = configs[full].replace(**{"model.hidden_size": 32})
    config_lib.save(other, os.path.join(runs_lib.run_dir(str(source), full), "config.json"))
    with pytest.raises(runs_lib.SweepError, match="model.hidden_size = 32 there, 16 here"):
        sweep.resolve(base + ["--pretrained_from", str(source)])


def test_an_interrupted_sweep_finishes_the_runs_it_started_before_starting_others(tmp_path):
    import tensorflow as tf

    from s3rec_tf import run_dir as run_dir_lib

    runs = runs_lib.plan({"full": 2, 16: 2, 4: 1, "none": 1})
    # Started: a checkpoint of either phase (what the training CLI resumes from); a directory
    # with only its config has nothing to finish.
    for name, phase in (("r16-s2", "finetune"), ("r4-s1", "pretrain")):
        directory = run_dir_lib.checkpoint_dir(str(tmp_path / "runs" / name), phase)
        tf.train.Checkpoint(step=tf.Variable(1)).save(os.path.join(directory, "ckpt"))
    os.makedirs(tmp_path / "runs" / "rfull-s2")
    order = [r.name for r in sweep.work_order(str(tmp_path), runs)]
    assert order == ["r4-s1", "r16-s2", "rfull-s1", "r16-s1", "sasrec-s1", "rfull-s2"]


def test_a_resumed_run_reports_where_it_resumed_and_then_only_its_new_epochs(tmp_path):
    directory = tmp_path / "r16-s1"
    os.makedirs(directory / "pretrain")
    log = directory / "pretrain" / "epochs.csv"
    log.write_text("epoch,epoch_seconds,loss\n0,100,5.0\n1,100,4.0\n2,100,3.0\n")
    budgets = {"pretrain": 5, "finetune": 20, "patience": 3, "monitor": "val_sampled_mrr"}
    item = processes.Active(runs_lib.Run(16, 1), 2, 4, None, str(directory), budgets)
    resumed = f"[2/4 rank 16 seed 1] resumed after pretrain epoch 3/5 in {directory}"
    assert item.start_line() == resumed
    assert item.progress_lines() == []  # the epochs an earlier sweep reported are not repeated
    with open(log, "a") as f:
        f.write("3,40,2.0\n")
    (line,) = item.progress_lines()
    assert line.startswith("[2/4 rank 16 seed 1] pretrain epoch 4/5, 85 s/epoch, elapsed 0:00")
    assert line.endswith("phase ETA 0:01:25")
    assert item.stop_line() == "[2/4 rank 16 seed 1] stopped after pretrain epoch 4/5"
    fresh = processes.Active(
        runs_lib.Run("none", 3), 4, 4, None, str(tmp_path / "sasrec-s3"), budgets
    )
    assert fresh.start_line() == f"[4/4 SASRec seed 3] started in {tmp_path / 'sasrec-s3'}"


def test_status_says_where_every_run_stands(tmp_path, monkeypatch):
    from s3rec_tf import run_dir as run_dir_lib

    runs = [
        runs_lib.Run(16, 1),
        runs_lib.Run("full", 1),
        runs_lib.Run("none", 1),
        runs_lib.Run(4, 1),
    ]
    # Unfinished runs' progress is their checkpoints' (run_dir.run_status, tested with real runs
    # in test_run_edges); here, what the table makes of it.
    progress = {
        "r16-s1": {
            "state": "pretraining",
            "pretrain": {"epochs_done": 3, "epochs": 50, "best_epoch": 0},
            "finetune": {"epochs_done": 0, "epochs": 200, "best_epoch": 0},
        },
        "sasrec-s1": {
            "state": "fine-tuning",
            "pretrain": {"epochs_done": 0, "epochs": 50, "best_epoch": 0},
            "finetune": {"epochs_done": 12, "epochs": 200, "best_epoch": 9},
        },
        "r4-s1": {"state": "not started"},
    }
    monkeypatch.setattr(run_dir_lib, "run_status", lambda d: progress[os.path.basename(d)])
    carried = {
        runs[1]: {
            "pretrain_epochs": 50,
            "finetune_epochs": {"run": 64, "best": 54},
            "test": {"sampled": {"hr@10": 0.57071, "ndcg@10": 0.38284}},
        }
    }
    now = __import__("datetime").datetime(2026, 12, 5, 9, 30)
    out = str(tmp_path)
    text = sweep.status(out, runs, carried, now=now)
    assert text.splitlines()[0] == f"1 of 4 runs finished ({out}, 2026-12-05 09:30 UTC)."
    assert "| r16-s1 | pretraining | 3/50 | 0/200 |  |  |" in text
    assert "| rfull-s1 | finished (carried over) | 50 | 64 (best 54) | 0.5707 | 0.3828 |" in text
    assert "| sasrec-s1 | fine-tuning | — | 12/200 (best 9) |  |  |" in text
    assert "| r4-s1 | not started |  |  |  |  |" in text


def test_a_second_sweep_on_the_same_directory_is_refused_and_a_stale_lock_taken_over(tmp_path):
    hold = functools.partial(
        lockfile.hold, str(tmp_path), sweep.LOCK_FILE, runs_lib.SweepError, holder="sweep process"
    )
    with hold():
        with pytest.raises(runs_lib.SweepError, match=f"in use by sweep process {os.getpid()} "):
            with hold():
                pass
    assert not (tmp_path / sweep.LOCK_FILE).exists()
    gone = subprocess.Popen(["true"])
    gone.wait()
    # A dead process's lock, in this version's "PID HOST" form and in older sweeps' "PID" form.
    for stale in (f"{gone.pid} {socket.gethostname()}\n", str(gone.pid)):
        (tmp_path / sweep.LOCK_FILE).write_text(stale)
        with hold():
            assert (tmp_path / sweep.LOCK_FILE).read_text().split()[0] == str(os.getpid())
        assert not (tmp_path / sweep.LOCK_FILE).exists()
    # A live process's lock of the old form still blocks.
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / sweep.LOCK_FILE).write_text(str(sleeper.pid))
        with pytest.raises(runs_lib.SweepError, match=f"in use by sweep process {sleeper.pid} "):
            with hold():
                pass
    finally:
        sleeper.kill()
        sleeper.wait()


# --------------------------------------------------------------------------------- intervals


def test_t_interval_and_paired_difference_equal_scipy():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 9):
        x = rng.normal(0.55, 0.01, n)
        y = x + rng.normal(0.002, 0.004, n)
        mean, low, high = report.t_interval(x)
        oracle = stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
        np.testing.assert_allclose([low, high], [oracle.low, oracle.high], rtol=1e-12)
        assert mean == pytest.approx(np.mean(x), rel=1e-15)
        diff = report.paired_difference(dict(enumerate(y)), dict(enumerate(x)))
        oracle = stats.ttest_rel(y, x).confidence_interval(0.95)
        np.testing.assert_allclose(diff["interval"], [oracle.low, oracle.high], rtol=1e-12)
        assert diff["sd"] == pytest.approx(np.std(y - x, ddof=1), rel=1e-12)
    # Only the seeds both sides have are paired; one seed gives no interval.
    diff = report.paired_difference({1: 0.5, 2: 0.6, 3: 0.7}, {2: 0.5, 9: 0.1})
    assert diff["seeds"] == [2] and diff["mean"] == pytest.approx(0.1) and diff["interval"] is None
    assert report.verdict(diff) == "too few seeds"


def test_no_verdict_below_three_paired_seeds_however_narrow_the_interval():
    # Our own seeds 1-2 of r = 16 vs full rank, sampled NDCG@10: the gaps agree to 1e-4 by
    # chance, so the 1-degree-of-freedom interval excludes 0 while saying nothing.
    r16, full = {1: 0.3655, 2: 0.3655}, {1: 0.3773, 2: 0.3772}
    diff = report.paired_difference(r16, full)
    assert diff["interval"][1] < 0
    assert report.verdict(diff) == "too few seeds"
    diff = report.paired_difference({**r16, 3: 0.3660}, {**full, 3: 0.3790})
    assert report.verdict(diff) == "lower"
    diff = report.paired_difference({**r16, 3: 0.3900}, {**full, 3: 0.3790})
    assert report.verdict(diff) == "not resolved"


def _synthetic_sweep(shift_r16: float, noise: float) -> dict:
    """A sweep.json with full rank, r = 16 and SASRec over 5 seeds, r16 = full + shift + noise."""
    rng = np.random.default_rng(1)
    config = config_lib.Config().to_dict()
    runs = []
    for seed in range(1, 6):
        base = 0.55 + rng.normal(0, 0.01)
        for rank, value in (
            ("full", base),
            (16, base + shift_r16 + rng.normal(0, noise)),
            ("none", 0.47),
        ):
            metrics = {"hr@10": value, "ndcg@10": value * 0.68, "mrr": value * 0.6}
            runs.append(
                {
                    "name": f"{rank}-{seed}",
                    "rank": rank,
                    "seed": seed,
                    "test": {
                        "sampled": dict(metrics),
                        "full": {k: v / 9 for k, v in metrics.items()},
                    },
                    "valid": {"sampled": dict(metrics), "full": dict(metrics)},
                    "parameters": {
                        "total": 900_000,
                        "aap": {"full": 4096, 16: 2048, "none": 0}[rank],
                        "map": {"full": 4096, 16: 2048, "none": 0}[rank],
                        "aap_reduction_vs_full": {"full": 0.0, 16: 0.5, "none": 1.0}[rank],
                        "map_reduction_vs_full": {"full": 0.0, 16: 0.5, "none": 1.0}[rank],
                    },
                    "pretrain_epochs": 0 if rank == "none" else 50,
                    "finetune_epochs": {"run": 60, "best": 50},
                    "wall_seconds": {
                        "pretrain": 0.0 if rank == "none" else 2000.0,
                        "finetune": 300.0,
                    },
                    "seconds_per_epoch": {
                        "pretrain": None if rank == "none" else 40.0,
                        "finetune": 5.0,
                    },
                    "pretrain_curve": {}
                    if rank == "none"
                    else {"aap_loss": [9.0, 5.0, 4.0], "mip_loss": [1.2, 1.0, 0.9]},
                    "machine": "test machine",
                    "jobs_side_by_side": 2,
                    "config": config,
                }
            )
    return {"runs": runs, "pending": [], "data": {"num_users": 10, "dupe_factor": 10}}


@pytest.mark.parametrize(
    "shift, noise, expected",
    [(0.02, 0.001, "higher"), (-0.02, 0.001, "lower"), (0.0, 0.01, "not resolved")],
)
def test_the_report_says_which_way_a_difference_goes_and_is_byte_identical_from_the_same_json(
    tmp_path, shift, noise, expected
):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(_synthetic_sweep(shift, noise)))
    report.main([str(tmp_path), "--out", str(tmp_path / "a")])
    report.main([str(path), "--out", str(tmp_path / "b")])
    first = (tmp_path / "a" / "sweep.md").read_bytes()
    assert first == (tmp_path / "b" / "sweep.md").read_bytes()
    # One low rank has nothing to be highest among.
    assert b"Highest mean" not in first
    # The report directory holds its JSON and regenerates from it alone.
    assert (tmp_path / "a" / "sweep.json").read_bytes() == path.read_bytes()
    report.main([str(tmp_path / "a")])
    assert (tmp_path / "a" / "sweep.md").read_bytes() == first
    text = first.decode()
    differences = text.split("## Paired difference")[1].split("##")[0]
    row = next(line for line in differences.splitlines() if line.startswith("| r = 16 | 5 | "))
    assert row.count(expected) >= 2, row  # both sampled metrics
    for name in report.PLOTS:
        assert (tmp_path / "a" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_gives_each_model_paired_to_sasrec_as_numpy_computes_it(tmp_path):
    sweep_json = _synthetic_sweep(-0.02, 0.001)
    text = report.markdown(sweep_json)
    table = text.split("## Does pretraining help?")[1].split("##")[0]
    rows = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| ")}
    assert "| SASRec" not in rows and "| model − SASRec" in rows
    for rank, label in ((16, "| r = 16"), ("full", "| full rank")):
        gaps = []
        for protocol, metric in report.METRICS:
            by_seed = {
                (r["rank"], r["seed"]): r["test"][protocol][metric] for r in sweep_json["runs"]
            }
            gap = np.array([by_seed[rank, s] - by_seed["none", s] for s in range(1, 6)])
            half = stats.t.ppf(0.975, 4) * gap.std(ddof=1) / np.sqrt(5)
            gaps.append(f"{gap.mean():+.4f} [{gap.mean() - half:+.4f}, {gap.mean() + half:+.4f}]")
        assert rows[label] == f"{label} | 5 | " + " | ".join(f"{g} higher" for g in gaps) + " |"


def test_the_report_counts_the_epochs_the_sp_loss_stays_at_ln_2():
    ln2 = float(np.log(2))
    curve = [ln2 + 1e-4, ln2, ln2 - 0.002, 0.60, ln2]  # the last epoch no longer counts
    assert report.sp_stall_epochs({"pretrain_curve": {"sp_loss": curve}}) == 3
    assert report.sp_stall_epochs({"pretrain_curve": {"sp_loss": [ln2] * 4}}) == 4
    assert report.sp_stall_epochs({"pretrain_curve": {}}) is None  # SASRec
    sweep_json = _synthetic_sweep(0.0, 0.001)
    for run in sweep_json["runs"]:
        if run["rank"] == 16:
            run["pretrain_curve"]["sp_loss"] = [ln2] * run["seed"] + [0.6]
    text = report.markdown(sweep_json)
    table = text.split("## Pretraining: how long")[1].split("##")[0]
    assert "| r = 16 | seed 1: 1, seed 2: 2, seed 3: 3, seed 4: 4, seed 5: 5 | 50 |" in table
    assert "| full rank |" not in table and "| SASRec |" not in table


def test_every_run_row_gives_its_epoch_times_and_how_many_runs_shared_the_cores():
    sweep_json = _synthetic_sweep(0.0, 0.001)
    for run in sweep_json["runs"]:
        run["jobs_side_by_side"] = 3 if run["seed"] == 1 else 2
        if run["rank"] == 16:
            run["seconds_per_epoch"] = {"pretrain": 100.0 + run["seed"], "finetune": 14.25}
    text = report.markdown(sweep_json)
    rows = text.split("## Every run")[1].splitlines()
    r16 = [line for line in rows if line.startswith("| r = 16 |")]
    assert [row.split(" | ")[-2:] for row in r16] == [
        [f"{100 + seed}.0, 14.2", f"{3 if seed == 1 else 2} |"] for seed in range(1, 6)
    ]
    sasrec = next(line for line in rows if line.startswith("| SASRec | 2 |"))
    assert sasrec.endswith(" | –, 5.0 | 2 |")
    assert "2, 3 run(s) side by side" in text


# ------------------------------------------------------------------------ end to end, killed


def _sweep_command(out):
    # Two seeds of one rank and SASRec: the fewest runs that show seeds apart, the report's
    # paired rows and the baseline.
    ranks = ["--ranks", "4", "--seeds", "4:2", "none:1"]
    return [sys.executable, "-m", "s3rec_tf.sweep", *ranks, "--output", str(out),
            "--poll_seconds", "0.5", *TINY]  # fmt: skip


def _invocations(run_directory):
    with open(os.path.join(run_directory, "train.log")) as f:
        return sum(1 for line in f if line.startswith("# ") and "s3rec_tf.train" in line)


@pytest.mark.slow
def test_sweep_and_report_end_to_end_resuming_after_a_kill_without_rerunning_finished_runs(
    tmp_path, capsys
):
    out = tmp_path / "sweep"
    # The runs use the bundled sample's shared cache (built once under a lock, test_run_edges):
    # a cold cache of its own would only add a Beam job to the suite's longest test.
    first_run = runs_lib.run_dir(str(out), runs_lib.Run(4, 1))
    second_run = runs_lib.run_dir(str(out), runs_lib.Run("none", 1))
    process = subprocess.Popen(_sweep_command(out), cwd=REPO, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    # Kill once the first run has finished and the second one has started.
    while not (
        os.path.exists(os.path.join(first_run, "results.json"))
        and os.path.exists(os.path.join(second_run, "train.log"))
    ):
        assert process.poll() is None, process.stdout.read()
        assert time.time() < deadline, "the first run did not finish in 300 s"
        time.sleep(0.5)
    finished_bytes = open(os.path.join(first_run, "results.json"), "rb").read()
    process.send_signal(signal.SIGKILL)
    process.wait()
    # Its training subprocess dies with it: no orphan keeps writing into the run directory.
    deadline = time.time() + 30
    while any(second_run in _cmdline(pid) for pid in _pids()):
        assert time.time() < deadline, "a training process outlived the killed sweep"
        time.sleep(0.2)

    # The sweeps that follow run in this process (the runs still train in subprocesses): the
    # killed one above was the separate process the kill needs.
    capsys.readouterr()
    assert sweep.main(_sweep_command(out)[3:]) == 0
    done = capsys.readouterr().out
    assert "3 runs, 1 finished, 2 to do" in done
    assert open(os.path.join(first_run, "results.json"), "rb").read() == finished_bytes
    assert _invocations(first_run) == 1 and _invocations(second_run) == 2
    assert "[2/3 SASRec seed 1] finetune epoch 1/1" in done

    result = json.load(open(out / "sweep.json"))
    assert result["pending"] == []
    by_name = {r["name"]: r for r in result["runs"]}
    assert sorted(by_name) == ["r4-s1", "r4-s2", "sasrec-s1"]
    for entry in by_name.values():
        run_results = json.load(open(out / entry["run_dir"] / "results.json"))
        assert entry["test"] == run_results["test"] and entry["valid"] == run_results["valid"]
        assert entry["config"]["seed"] == entry["seed"]
        # Where it trained, as its sweep process recorded it (--jobs 1: no thread count set).
        assert (entry["machine"], entry["tf_threads"], entry["jobs_side_by_side"]) == (
            sweep.machine(),
            None,
            1,
        )
    assert by_name["r4-s1"]["parameters"]["aap"] == 2 * 16 * 4
    assert by_name["r4-s1"]["parameters"]["aap_reduction_vs_full"] == 0.5
    assert by_name["r4-s1"]["parameters"]["map"] == 2 * 16 * 4
    assert by_name["sasrec-s1"]["pretrain_epochs"] == 0 and by_name["sasrec-s1"]["rank"] == "none"
    assert by_name["sasrec-s1"]["config"]["no_pretrain"] is True
    assert set(by_name["r4-s2"]["pretrain_curve"]) == {
        "aap_loss",
        "mip_loss",
        "map_loss",
        "sp_loss",
    }
    # Two seeds of one rank differ (the seed reaches the run), two ranks of one seed too.
    assert by_name["r4-s1"]["test"] != by_name["r4-s2"]["test"]

    assert sweep.main(_sweep_command(out)[3:]) == 0
    assert "3 runs, 3 finished, 0 to do" in capsys.readouterr().out

    report.main([str(out)])
    text = (out / "sweep.md").read_text()
    assert "| r = 4 | 2 |" in text and "| SASRec | 1 |" in text
    for name in report.PLOTS:
        assert (out / name).stat().st_size > 1000

    # The run directories gone (another machine): the record carries every run over, none trains.
    record = tmp_path / "record.json"
    shutil.copy(out / "sweep.json", record)
    elsewhere = tmp_path / "elsewhere"
    capsys.readouterr()
    assert sweep.main(_sweep_command(elsewhere)[3:] + ["--carry_over", str(record)]) == 0
    moved = capsys.readouterr().out
    assert f"3 runs, 3 finished (3 carried over from {record}), 0 to do" in moved, moved
    assert os.listdir(elsewhere / "runs") == []
    carried = json.load(open(elsewhere / "sweep.json"))
    assert carried["runs"] == json.load(open(record))["runs"] and carried["pending"] == []
    assert carried["carried_over"] == sorted(by_name)

    # --status: every run's state, here and carried over, trains nothing.
    for directory, state, extra in (
        (out, "finished", []),
        (elsewhere, "finished (carried over)", ["--carry_over", str(record)]),
    ):
        assert sweep.main(_sweep_command(directory)[3:] + extra + ["--status"]) == 0
        text = capsys.readouterr().out
        assert text.startswith(f"3 of 3 runs finished ({directory}, "), text
        r4 = by_name["r4-s1"]
        row = (
            f"| r4-s1 | {state} | 1 | {r4['finetune_epochs']['run']} (best "
            f"{r4['finetune_epochs']['best']}) | {r4['test']['sampled']['hr@10']:.4f} |"
        )
        assert row in text, text
    assert os.listdir(elsewhere / "runs") == []

    # Another loss over the same pretraining: fine-tuned from r4-s1's encoder, no pretraining.
    ce = tmp_path / "ce"
    command = ["--ranks", "4", "--seeds", "1", "--no_sasrec", "--pretrained_from", str(out),
               "--loss", "ce", "--output", str(ce), "--poll_seconds", "0.5", *TINY]  # fmt: skip
    assert sweep.main(command) == 0, capsys.readouterr().out
    entry = json.load(open(ce / "sweep.json"))["runs"][0]
    source = by_name["r4-s1"]
    assert entry["pretrained_from"]["run_dir"] == os.path.abspath(out / source["run_dir"])
    assert entry["pretrain_curve"] == source["pretrain_curve"] and entry["pretrain_epochs"] == 1
    assert entry["config"]["finetune"]["loss"] == "ce" and entry["test"] != source["test"]
    assert not os.path.exists(ce / entry["run_dir"] / "pretrain")
    run_results = json.load(open(ce / entry["run_dir"] / "results.json"))
    assert run_results["finetune"]["init"] == "pretrained", run_results["finetune"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_terminated_sweep_stops_its_runs_and_says_where_they_stand(tmp_path, signum):
    out = tmp_path / "sweep"
    run = runs_lib.run_dir(str(out), runs_lib.Run(4, 1))
    process = subprocess.Popen(_sweep_command(out), cwd=REPO, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(run, "train.log")):
        assert process.poll() is None, process.stdout.read()
        assert time.time() < deadline, "the first run did not start in 120 s"
        time.sleep(0.2)
    # The signal lands about when the run's process starts, where a handler's exception was once
    # swallowed by subprocess.Popen and the sweep went on.
    process.send_signal(signum)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, output
    assert "[1/3 rank 4 seed 1] stopped before its first epoch" in output, output
    assert output.rstrip().endswith(
        f"sweep {out}: stopped by {signum.name}; the same command continues every unfinished "
        "run from its last finished epoch"
    ), output
    assert not any(run in _cmdline(pid) for pid in _pids()), "the training process outlived it"
    assert json.load(open(out / "sweep.json"))["pending"][0] == "r4-s1"


def _pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
