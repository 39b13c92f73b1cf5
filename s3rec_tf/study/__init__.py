"""Studies of many runs: `sweep` trains them (`python -m s3rec_tf.sweep`), `report` turns their
record into tables and plots (`python -m s3rec_tf.report`). `runs` plans them and reads their
run directories; `processes` runs and watches the training subprocesses.

No TensorFlow at import: the sweep loads the training CLI only once it has its arguments.
"""
