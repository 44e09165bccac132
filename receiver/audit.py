"""Security-relevant events as structured JSON lines, apart from the receipts.

Who got in, who was turned away and why, TLS failures, quarantines: one line each
on the ``dicomflow.audit`` logger, which the command line writes to
``<data_dir>/logs/audit.jsonl``. Lines carry AE titles, addresses and UIDs, never
patient names or IDs.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime

AUDIT = logging.getLogger("dicomflow.audit")


def audit_line(event: str, **fields: object) -> str:
    """The JSON line for `event`; fields that are None are left out."""
    record: dict[str, object] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "event": event,
        "process": os.getpid(),
    }
    record.update({key: value for key, value in fields.items() if value is not None})
    return json.dumps(record, default=str)


def audit(event: str, **fields: object) -> None:
    """Log one audit event (``association-accepted``, ``association-rejected``, ...)."""
    AUDIT.info(audit_line(event, **fields))
