"""A directory held by one process at a time: the lock of a run directory and of a sweep directory.

The lock is a file holding "PID HOST", created atomically (written under a temporary name, then
hard-linked into place, so it never exists half written). A second process is refused at once,
naming the first; a lock whose process no longer runs on this host (killed, machine restarted) is
taken over, so a killed job resumes. No TensorFlow here: the sweep takes its lock without it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from typing import Optional

logger = logging.getLogger(__name__)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's process
    try:  # a killed process that its parent has not reaped yet holds nothing any more
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_lock(lock_file: str) -> tuple:
    """(pid, host) of the holder, or (None, "") when there is none or the file is not a lock."""
    try:
        with open(lock_file) as f:
            pid, _, host = f.read().strip().partition(" ")
        return int(pid), host
    except (OSError, ValueError):
        return None, ""


def live_holder(lock_file: str) -> Optional[str]:
    """Who holds `lock_file` ("123", or "123 on HOST" for a process of another machine), or None
    when nobody does: no lock, or one left by a process that no longer runs on this host."""
    return _live(*read_lock(lock_file))


def _live(pid: Optional[int], holder_host: str) -> Optional[str]:
    """`live_holder` of a lock already read."""
    # No host: an older sweep's lock, which held only the PID of a process on this machine.
    elsewhere = holder_host not in ("", socket.gethostname())
    if pid is None or not (elsewhere or process_alive(pid)):
        return None
    return f"{pid}" + (f" on {holder_host}" if elsewhere else "")


@contextlib.contextmanager
def hold(directory: str, file_name: str, error: type[Exception], holder: str = "process"):
    """Holds `directory` for this process through `directory/file_name`.

    Args:
      directory: an existing local directory.
      file_name: the lock file's name inside it.
      error: the exception class raised when another live process holds the lock.
      holder: what the other process is, for the message ("process", "sweep process").
    """
    lock_file = os.path.join(directory, file_name)
    host = socket.gethostname()
    mine = f"{lock_file}.{os.getpid()}"
    with open(mine, "w") as f:
        f.write(f"{os.getpid()} {host}\n")
    try:
        _take(lock_file, mine, directory, error, holder)
    finally:
        os.remove(mine)
    try:
        yield
    finally:
        if read_lock(lock_file)[0] == os.getpid():
            os.remove(lock_file)


def _take(lock_file, mine, directory, error, holder) -> None:
    for _ in range(10):
        try:
            os.link(mine, lock_file)
            return
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
            pid, holder_host = read_lock(lock_file)  # once: the same holder judged and named
            taken_by = _live(pid, holder_host)
            if taken_by is not None:
                raise error(
                    f"{directory} is in use by {holder} {taken_by} (it holds {lock_file}). Wait "
                    "for it to finish or stop it, or choose another --output; a lock left by a "
                    "process that no longer runs does not block."
                ) from None
            if pid is not None:
                logger.info("Taking over %s from process %d, which no longer runs.", lock_file, pid)
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock_file)
    raise error(f"Could not take {lock_file}: other processes keep taking it.")
