"""The JSON files of run, sweep and export directories, read and written in one way.

`write` goes through a temporary name renamed into place, so a reader (a sweep's `--status`, a
run resuming after a kill) never sees half a file. A path with a scheme (gs://, ...) goes through
`tf.io.gfile`, imported only then: no TensorFlow here otherwise, so that the sweep and the report
read and write their local files without it.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional


def _remote(path: str) -> bool:
    return "://" in path


def write(path: str, value: Any, indent: int = 2, end: str = "") -> None:
    """Writes `value` as JSON (keys sorted, then `end`) to `path`, atomically."""
    text = json.dumps(value, indent=indent, sort_keys=True) + end
    tmp = path + ".tmp"
    if _remote(path):
        import tensorflow as tf

        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(text)
        tf.io.gfile.rename(tmp, path, overwrite=True)
        return
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read(path: str) -> Optional[Any]:
    """The JSON value in `path`; None when there is no such file (json.JSONDecodeError when it
    is not JSON)."""
    if _remote(path):
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            return None
        with tf.io.gfile.GFile(path) as f:
            return json.load(f)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
