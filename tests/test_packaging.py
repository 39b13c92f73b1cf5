"""A plain (non-editable) install runs the README's first command, exactly, from another directory.

The project is installed with `pip install --no-deps --no-build-isolation .` from a copy of the
repository into a fresh virtual environment that sees the packages of the environment running the
tests (TensorFlow, Beam, ...; nothing is downloaded), and builds with its setuptools (>= 70.1, the
`test` extra's: a fresh venv's own 65.5 has no bdist_wheel without the `wheel` package). The
presets (`--config sample`, shipped from the top-level configs/) and the bundled sample's raw files
must come from the installed package, not from a checkout.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig

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
    # Not --system-site-packages: that would be the base interpreter's site-packages, not those of
    # the (virtual) environment running this test. Without pip, so without the venv's own old
    # setuptools: pip and setuptools come from here too, through a .pth file.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    venv_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    here = [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")]
    here = here or [sysconfig.get_paths()["purelib"]]
    with open(os.path.join(venv_site, "test_environment.pth"), "w") as f:
        f.write("".join(p + "\n" for p in here))
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
        [
            python,
            "-c",
            "import os, s3rec_tf, beam_pipelines; from s3rec_tf import config; "
            "print(s3rec_tf.__file__); print(config.CONFIG_DIR); "
            "print(' '.join(os.listdir(config.CONFIG_DIR))); "
            "print(config.load('reference_weights').pretrain.aap_weight)",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    package_file, config_dir, presets, aap_weight = where.stdout.strip().splitlines()[-4:]
    assert package_file.startswith(str(venv)), where.stdout
    # The presets (the repository's top-level configs/) are the installed package's data.
    assert config_dir == os.path.join(os.path.dirname(package_file), "configs"), where.stdout
    assert {"reference_weights.yaml", "sample.yaml"} <= set(presets.split()), where.stdout
    assert aap_weight == "0.2", where.stdout  # reference_weights.yaml: the authors' AAP weight

    # `python -m s3rec_tf.train --rank 16 --config sample --output runs/sample`, from a cold
    # cache: the bundled sample is preprocessed by Beam on first use, then the sample preset runs.
    command = [python, "-m", "s3rec_tf.train", "--rank", "16", "--config", "sample"]
    command += ["--output", "runs/sample"]
    out = subprocess.run(
        command, cwd=elsewhere, capture_output=True, text=True, env=env, timeout=3000
    )
    assert out.returncode == 0, out.stderr[-3000:]
    cache = tmp_path / "cache"
    cached = [d for d in os.listdir(cache) if d.startswith("sample-v") and (cache / d).is_dir()]
    assert len(cached) == 1
    results = json.load(open(elsewhere / "runs" / "sample" / "results.json"))
    assert results["config"]["data"]["data_dir"] == str(cache / cached[0])
    # The Beam job's output is what trained: its metadata, copied into the run, and every test
    # user evaluated (the metrics are multiples of 1/496).
    metadata = json.load(open(cache / cached[0] / "metadata.json"))
    assert metadata["num_users"] == 496 and metadata["num_items"] == 310
    assert json.load(open(elsewhere / "runs" / "sample" / "data_metadata.json")) == metadata
    hits = results["test"]["sampled"]["hr@20"] * metadata["num_users"]
    assert abs(hits - round(hits)) < 1e-3 and round(hits) > 0
    assert results["config"]["model"]["aap_rank"] == 16
    # The installed sample preset: 10 pretraining epochs, up to 30 of fine-tuning, patience 5.
    assert results["config"]["finetune"]["patience"] == 5
    assert results["pretrain"]["epochs"] == 10
    assert 1 <= results["finetune"]["epochs_run"] <= 30
    # Chance is 0.10 (1 target among 100 candidates); on the sample a last-item transition
    # recommender reaches 0.70 (docs/preprocessing.md).
    assert results["test"]["sampled"]["hr@10"] > 0.3
    assert "Test: sampled HR@10" in out.stderr
    # Not a terminal: one log line per epoch, no carriage-return progress bars.
    assert "\r" not in out.stdout and "\r" not in out.stderr

    # The study tooling, the s3rec_tf.study sub-package behind these two commands, ships too.
    for module in ("s3rec_tf.sweep", "s3rec_tf.report"):
        shown = subprocess.run(
            [python, "-m", module, "--help"], cwd=elsewhere, capture_output=True, text=True, env=env
        )
        assert shown.returncode == 0, shown.stderr[-3000:]
        assert f"usage: python -m {module}" in shown.stdout, shown.stdout
