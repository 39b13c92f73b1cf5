from setuptools import find_packages, setup

setup(
    name="s3rec-tf",
    version="0.1.0",
    description="S3-Rec self-supervised sequential recommendation on TensorFlow, Keras and Beam",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["s3rec_tf*", "keras_models*", "beam_pipelines*", "export*"]),
    include_package_data=True,
    # The bundled sample's raw files and the YAML presets ship inside the packages, so that
    # `python -m s3rec_tf.train --config sample` works after a plain (non-editable) install.
    package_data={"beam_pipelines": ["sample_data/*"], "s3rec_tf": ["configs/*.yaml"]},
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
        "test": ["pytest>=9", "pytest-xdist>=3.5", "ruff==0.17.*"],
        "scann": ["scann[tf]==1.4.2"],
    },
)
