"""The lock that keeps one autoload (or anything that moves its files) per data root.

Apart from the flow so that commands which only need the lock do not import Prefect.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(lock_path: Path, wait_seconds: float = 0.0) -> Iterator[bool]:
    """Hold an exclusive lock on `lock_path`, waiting up to `wait_seconds` for it to be
    free; yields whether we got it."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_seconds
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.2)
        yield True
    finally:
        os.close(fd)


def autoload_lock(data_dir: Path) -> Path:
    """Held by the autoload run working on a data root, and by whatever moves its files."""
    return data_dir / "autoload.lock"
