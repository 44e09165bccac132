"""Logging set-up for the command line; library modules only create loggers."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

RECEIPTS_FILE = Path("logs") / "receipts.jsonl"


def configure_logging(data_dir: Path, verbose: bool = False) -> Path:
    """Log to stderr, and append every C-STORE receipt as a JSON line under `data_dir`.

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
    receipts_path.parent.mkdir(parents=True, exist_ok=True)
    receipts = logging.getLogger("dicomflow.receipts")
    if not any(getattr(h, "_dicomflow", False) for h in receipts.handlers):
        handler = logging.FileHandler(receipts_path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._dicomflow = True  # type: ignore[attr-defined]
        receipts.addHandler(handler)
    receipts.propagate = verbose
    return receipts_path
