from setuptools import find_packages, setup

setup(
    name="s3rec-tf",
    version="0.1.0",
    description="S3-Rec self-supervised sequential recommendation on TensorFlow, Keras and Beam",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["s3rec_tf*", "keras_models*", "beam_pipelines*", "export*"])
    + ["s3rec_tf.configs"],
    # The YAML presets live in the repository's top-level configs/ and ship as the package data
    # s3rec_tf/configs/; with the bundled sample's raw files, that makes
    # `python -m s3rec_tf.train --config sample` work after a plain (non-editable) install. (An
    # editable install reads configs/ from the checkout: s3rec_tf.config.CONFIG_DIR.)
    package_dir={"s3rec_tf.configs": "configs"},
    include_package_data=True,
    package_data={"beam_pipelines": ["sample_data/*"], "s3rec_tf.configs": ["*.yaml"]},
    install_requires=[
        "tensorflow==2.20.*",
        "tf-keras==2.20.*",
        "tensorflow-recommenders>=0.7.3,<0.8",
        "apache-beam>=2.60,<3",
        # Beam's TFRecord framing computes CRC32C checksums; without this package it cannot.
        "google-crc32c",
        "numpy",
        "pandas",
        "pyyaml",
        # The rank study's report: t-intervals and plots.
        "scipy",
        "matplotlib",
    ],
    extras_require={
        # setuptools: tests/test_packaging.py builds the project without build isolation, with
        # this environment's setuptools, which from 70.1 on builds wheels without the `wheel`
        # package (a fresh Python 3.11 venv comes with setuptools 65.5).
        # pytest < 9.2: from 9.2 on, pytest-xdist 3.8's --dist loadgroup silently stops grouping
        # (pytest-xdist#1386), and the suite's shared fixtures are built once per worker
        # (tests/test_suite_ends.py checks it).
        "test": ["pytest>=9,<9.2", "pytest-xdist>=3.5", "ruff==0.17.*", "setuptools>=70.1"],
        "scann": ["scann[tf]==1.4.2"],
    },
)
