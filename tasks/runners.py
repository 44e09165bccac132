"""Where autoload's batches run: here one after another, in local processes, or on Dask.

Only the archive step runs in parallel: it parses, anonymizes and writes files, and
batches never share a landed file (and take the archive index's shard locks for SOP
instances they share). The flow keeps the catalog single-writer: it takes each
batch's result in order, records its rows, then clears its landed files.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

CONNECT_TIMEOUT = 5.0
"""Seconds to wait for a Dask scheduler to accept a connection before giving up."""


class RunnerError(Exception):
    """The configured Dask scheduler cannot be used; the message is one line saying why."""


def check_scheduler(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail in one line, before any batch is submitted, if nothing answers at `address`."""
    parts = urlsplit(address)
    if parts.scheme == "inproc":
        return
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise RunnerError(f"autoload.dask_address {address}: {exc}") from None
    if not host or not port:
        raise RunnerError(f"autoload.dask_address {address} needs a host and a port")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RunnerError(
            f"autoload.dask_address {address}: no Dask scheduler reachable ({reason})"
        ) from None


def batch_runner(workers: int, dask_address: str | None) -> TaskRunner[Any]:
    """The task runner for the archive step: Dask if an address is set, else a process
    pool of `workers`, else one thread (batches one after another, as the flow goes).
    The flow's preflight has checked the scheduler answers (`check_scheduler`)."""
    if dask_address:
        from prefect_dask import DaskTaskRunner  # imports dask: only when asked for

        return DaskTaskRunner(address=dask_address)
    if workers > 1:
        return ProcessPoolTaskRunner(max_workers=workers)
    return ThreadPoolTaskRunner(max_workers=1)


def in_flight(workers: int, dask_address: str | None) -> int:
    """How many batches to have submitted and not yet recorded: enough to keep every
    worker busy while the flow records, few enough that results do not pile up."""
    return 64 if dask_address else workers + 1
