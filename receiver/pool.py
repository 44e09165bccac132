"""Several receiver processes behind one port, so associations do not share one GIL.

Each process is a whole pynetdicom AE listening with SO_REUSEPORT on the same
address; the kernel hands each new connection to one of them. The first process
binds (and resolves port 0); the others join it on the port it got. Children end
when the parent asks (SIGTERM) or when it dies (Linux PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import signal
import threading
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from receiver.durable import restrict_new_files
from receiver.move_ledger import MoveLedger
from receiver.qr_scp import Archive
from receiver.scp import Receiver, ReceiverError, start_receiver
from receiver.settings import ReceiverSettings

LOGGER = logging.getLogger("dicomflow.receiver")


def die_with_parent() -> None:
    """In a child process: get SIGTERM when the parent dies, even by SIGKILL (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def _child(
    settings: ReceiverSettings,
    landing: Path,
    ledger: MoveLedger | None,
    archive: Archive | None,
    log_setup: Any,
    ready: Queue[Any],
    counts: Queue[Any],
) -> None:
    """One extra receiver process: serve until SIGTERM, then report its counts."""
    die_with_parent()
    restrict_new_files()
    if log_setup is not None:
        log_setup()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent's Ctrl-C stops us via SIGTERM
    try:
        receiver = start_receiver(settings, landing, ledger, archive)
    except ReceiverError as exc:
        ready.put(str(exc))
        return
    ready.put(None)
    stop.wait()
    receiver.stop()
    counts.put((receiver.counter.stored, receiver.counter.failed))


@dataclass
class ReceiverPool:
    """The receiver of this process and its sibling processes on the same port."""

    main: Receiver
    children: list[BaseProcess] = field(default_factory=list)
    counts: Queue[Any] | None = None

    @property
    def port(self) -> int:
        return self.main.port

    def stop(self) -> tuple[int, int]:
        """Stop every process; (stored, refused) over all of them."""
        for child in self.children:
            child.terminate()
        self.main.stop()
        stored, failed = self.main.counter.stored, self.main.counter.failed
        for child in self.children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
        if self.counts is not None:
            while not self.counts.empty():
                more_stored, more_failed = self.counts.get_nowait()
                stored, failed = stored + more_stored, failed + more_failed
        return stored, failed


def start_pool(
    settings: ReceiverSettings,
    landing: Path,
    ledger: MoveLedger | None = None,
    archive: Archive | None = None,
    log_setup: Any = None,
) -> ReceiverPool:
    """`settings.processes` receivers on one port; `log_setup()` runs in each child.

    Raises ReceiverError when any of them cannot start, after stopping the others.
    """
    main = start_receiver(settings, landing, ledger, archive)
    pool = ReceiverPool(main)
    if settings.processes == 1:
        return pool
    context = multiprocessing.get_context("spawn")
    ready, pool.counts = context.Queue(), context.Queue()
    joined = settings.model_copy(update={"port": main.port})
    for _ in range(settings.processes - 1):
        child = context.Process(
            target=_child,
            args=(joined, landing, ledger, archive, log_setup, ready, pool.counts),
            name="dicomflow-receiver",
            daemon=True,
        )
        child.start()
        pool.children.append(child)
    problems = [ready.get(timeout=60) for _ in pool.children]
    if any(problems):
        pool.stop()
        raise ReceiverError(next(p for p in problems if p))
    LOGGER.info("%d receiver processes share port %d", settings.processes, main.port)
    return pool
