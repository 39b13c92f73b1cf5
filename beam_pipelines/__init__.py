"""Apache Beam jobs: raw Amazon reviews (2014, 2018, 2023) or the S3-Rec format to TFRecords.

Modules: `preprocess` (options, `run(argv)`), `config` (the options' dataclass and pre-flight
checks), `parse` (readers and dead letters per input format), `algorithms` (pure Python/NumPy),
`pretrain_examples` (per-user splits, negatives and pretraining examples; NumPy), `steps` (the
composite PTransforms), `writers` (files: temporary name, then rename), `job` (the job's
PTransform), `raw_format` and `sample_data` (test and sample inputs).

Nothing here imports TensorFlow at package import; `writers` does (the data contract
`s3rec_tf.schema` and tf.train.Example), and so do `steps` (its write steps are writers' DoFns)
and `job` (it chains the steps): tests/test_imports.py keeps the list.
"""
