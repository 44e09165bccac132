"""Logging set-up for the command line; library modules only create loggers."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

RECEIPTS_FILE = Path("logs") / "receipts.jsonl"
AUDIT_FILE = Path("logs") / "audit.jsonl"


def _json_lines(logger_name: str, path: Path, propagate: bool) -> None:
    """Append the records of `logger_name` to `path`, one message per line, once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(logger_name)
    if not any(getattr(h, "_dicomflow", False) for h in logger.handlers):
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._dicomflow = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = propagate


def configure_logging(data_dir: Path, verbose: bool = False) -> Path:
    """Log to stderr; append C-STORE receipts and audit events as JSON lines under `data_dir`.

    Where Prefect has set up logging already, its console handler is used. pynetdicom's
    per-message chatter stays at WARNING unless `verbose`; pydicom's parse warnings,
    which quote element values, are not logged.
    """
    logging.getLogger("dicomflow").setLevel(logging.INFO)
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    root = logging.getLogger()
    if not root.handlers:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(console)
    logging.getLogger("pynetdicom").setLevel(logging.INFO if verbose else logging.WARNING)
    receipts_path = data_dir / RECEIPTS_FILE
    _json_lines("dicomflow.receipts", receipts_path, propagate=verbose)
    _json_lines("dicomflow.audit", data_dir / AUDIT_FILE, propagate=verbose)
    return receipts_path
