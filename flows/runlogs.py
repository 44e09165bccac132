"""Our loggers' and pynetdicom's INFO records in the flow run's logs in the Prefect UI.

Prefect sends only its run loggers (`get_run_logger`) to the API. Its
``PREFECT_LOGGING_EXTRA_LOGGERS`` setting adds others, but only if set before
``import prefect`` in every process (CLI, worker, served runs), and leaves their
level alone, so INFO never gets through Prefect's WARNING root. Instead each flow
attaches a handler for as long as it runs. Records from threads Prefect does not
know (pynetdicom's association threads) are filed under the run that attached it.

What goes there is what goes to the console: messages naming AE titles, UIDs, counts
and reason codes. pynetdicom logs C-FIND/C-MOVE identifiers (patient data) at INFO
unless told not to, so that switch is turned off first, in every flow process.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from prefect.logging.handlers import APILogHandler

RUN_LOGGERS = ("dicomflow", "pynetdicom")
"""The loggers whose INFO records a flow run shows, with their children."""

OWN_FILES = ("dicomflow.receipts", "dicomflow.audit")
"""Children with a JSON-lines file of their own (flows/logs.py): not run logs."""


class RunLogHandler(APILogHandler):
    """Prefect's API log handler, filing records made outside any run context under
    `flow_run_id` instead of dropping them with a warning."""

    def __init__(self, flow_run_id: UUID) -> None:
        super().__init__(level=logging.INFO)
        self.flow_run_id = flow_run_id
        self.addFilter(lambda record: not record.name.startswith(OWN_FILES))

    def prepare(self, record: logging.LogRecord) -> dict[str, Any]:
        if getattr(record, "flow_run_id", None) is None and not _in_run_context():
            record = copy.copy(record)
            record.flow_run_id = self.flow_run_id
        return super().prepare(record)


class _Propagate(logging.Handler):
    """Hands on to the parent logger's handlers what propagation handed them before the
    run lowered `logger`'s level from `level_before` to INFO (the console stays as quiet)."""

    def __init__(self, logger: logging.Logger, level_before: int) -> None:
        super().__init__()
        self.logger = logger
        self.level_before = level_before

    def _passed_before(self, record: logging.LogRecord) -> bool:
        """Would the record's own logger have let it through with the old level?"""
        source = logging.getLogger(record.name)
        while source is not self.logger and source.level == logging.NOTSET and source.parent:
            source = source.parent
        return record.levelno >= (self.level_before if source is self.logger else source.level)

    def emit(self, record: logging.LogRecord) -> None:
        if self.logger.parent is not None and self._passed_before(record):
            self.logger.parent.handle(record)


def _in_run_context() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def hide_identifiers() -> None:
    """Keep pynetdicom from logging query identifiers (patient names and IDs) at INFO."""
    from pynetdicom import _config

    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False


@contextmanager
def _routed(logger: logging.Logger, handler: logging.Handler) -> Iterator[None]:
    """`handler` on `logger` at INFO; the console keeps getting what it got before."""
    level, propagate = logger.level, logger.propagate
    effective = logger.getEffectiveLevel()
    forward = _Propagate(logger, effective) if propagate and effective > logging.INFO else None
    logger.addHandler(handler)
    if forward is not None:
        logger.addHandler(forward)
        logger.propagate = False
    if effective > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for added in (handler, forward):
            if added is not None:
                logger.removeHandler(added)
        logger.setLevel(level)
        logger.propagate = propagate


@contextmanager
def run_logs(flow_run_id: UUID | str | None) -> Iterator[None]:
    """For the body of a flow run: `RUN_LOGGERS` at INFO into its logs in the UI.

    A subflow (autoload inside retrieve) finds the handler in place and adds none:
    records made in its context go to its own run, Prefect's handler sees to that.
    """
    hide_identifiers()
    loggers = [logging.getLogger(name) for name in RUN_LOGGERS]
    attached = any(isinstance(h, RunLogHandler) for lg in loggers for h in lg.handlers)
    if flow_run_id is None or attached:
        yield
        return
    handler = RunLogHandler(UUID(str(flow_run_id)))
    with _routed(loggers[0], handler), _routed(loggers[1], handler):
        yield
