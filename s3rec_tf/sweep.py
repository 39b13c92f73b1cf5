"""`python -m s3rec_tf.sweep`: the rank study's runs. The code is `s3rec_tf.study.sweep`."""

import sys

from s3rec_tf.study import sweep

if __name__ == "__main__":
    sys.exit(sweep.main())
