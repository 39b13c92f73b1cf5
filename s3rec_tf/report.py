"""`python -m s3rec_tf.report`: a sweep's tables and plots. The code is `s3rec_tf.study.report`."""

from s3rec_tf.study import report

if __name__ == "__main__":
    report.main()
