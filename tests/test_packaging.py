"""A plain (non-editable) install works: the README's first command, run from another directory.

The project is installed with `pip install --no-deps --no-build-isolation .` from a copy of the
repository into a fresh virtual environment that sees this machine's packages (TensorFlow, Beam,
...; nothing is downloaded). The presets (`--config sample`) and the bundled sample's raw files
must come from the installed package, not from a checkout.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_installed_package_runs_the_readme_command_from_another_directory(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", "__pycache__", "*.egg-info", "build", "runs", ".pytest_cache", "reports"
        ),
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["S3REC_CACHE"] = str(tmp_path / "cache")  # the sample is preprocessed from the install
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
        + [str(source)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    shutil.rmtree(source)  # nothing may be read from the copy any more

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [python, "-c", "import s3rec_tf, beam_pipelines; print(s3rec_tf.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert where.stdout.strip().startswith(str(venv)), where.stdout

    command = [python, "-m", "s3rec_tf.train", "--rank", "16", "--config", "sample"]
    command += ["--output", "runs/sample"]
    # Tiny budgets keep the test short; the preset itself must still resolve.
    command += ["--pretrain_epochs", "1", "--finetune_epochs", "1"]
    out = subprocess.run(
        command, cwd=elsewhere, capture_output=True, text=True, env=env, timeout=1200
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.load(open(elsewhere / "runs" / "sample" / "results.json"))
    assert results["config"]["model"]["aap_rank"] == 16
    assert results["config"]["finetune"]["patience"] == 5  # from the installed sample preset
    assert 0.0 <= results["test"]["sampled"]["hr@10"] <= 1.0
    # Not a terminal: one log line per epoch, no carriage-return progress bars.
    assert "\r" not in out.stdout and "\r" not in out.stderr
