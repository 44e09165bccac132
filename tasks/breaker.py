"""A circuit breaker per remote node: after repeated failures, leave the node alone a while.

A PACS that is down or overloaded gains nothing from a retrieval job trying study
after study. After `failures` echo or association failures in a row the breaker
opens for `cooldown` seconds; every retrieval (in this run, or in another process
sharing the data root) then defers its work instead of connecting. State is one
small JSON file per node, updated under a file lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from receiver.durable import write_atomic


@dataclass(frozen=True)
class CircuitBreaker:
    """The breaker of one node, kept in `path`."""

    path: Path
    failures: int
    cooldown: float

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                state = json.loads(self.path.read_text())
            except (OSError, ValueError):
                state = {}
            before = dict(state)
            yield state
            if state != before:
                write_atomic(self.path, json.dumps(state).encode())
        finally:
            os.close(fd)

    def open_until(self, now: float | None = None) -> float | None:
        """When the breaker closes again, if it is open now."""
        now = time.time() if now is None else now
        with self._locked() as state:
            until = float(state.get("open_until") or 0)
        return until if until > now else None

    def success(self) -> None:
        with self._locked() as state:
            state.update(consecutive_failures=0, open_until=None)

    def failure(self, now: float | None = None) -> bool:
        """Count a failure; True when this one opened the breaker."""
        now = time.time() if now is None else now
        with self._locked() as state:
            count = int(state.get("consecutive_failures") or 0) + 1
            state["consecutive_failures"] = count
            if count >= self.failures and float(state.get("open_until") or 0) <= now:
                state["open_until"] = now + self.cooldown
                state["consecutive_failures"] = 0
                return True
        return False
