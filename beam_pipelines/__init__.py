"""Apache Beam jobs: raw Amazon reviews (2014, 2018, 2023) or the S3-Rec format to TFRecords.

Modules: `preprocess` (command line, `run(argv)`), `config` (`PreprocessOptions`: every flag,
default and help; `PreprocessConfig`; pre-flight checks), `formats` (the input format registry),
`parse` (the parser DoFns and dead letters of every format), the job's steps, one module each:
`reading` (files -> parsed records), `filtering` (ratings), `histories`, `kcore`, `ids`,
`attributes`, `segments` (sequences.txt and the SP segment look-ups), `examples` (TFRecord
shards); `job` (the chain), `stats` (metrics and stat names), `writers` (text files: temporary
name, then rename), the pure Python/NumPy rules `algorithms`, `pretrain_examples` and `records`,
and `raw_format` / `sample_data` (test and sample inputs).

Only `examples` imports TensorFlow (it writes tf.train.Example), and `job`, which chains it;
every other module, `s3rec_tf.schema` included, is TensorFlow-free: tests/test_imports.py keeps
the list.
"""
