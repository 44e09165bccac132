"""C-MOVE as SCU: ask a node to send instances to a destination AE, and follow it.

The node answers with pending responses carrying its sub-operation counts
(remaining, completed, failed, warning) and ends with a final status (PS3.4
C.4.2.1.4); `move` reports each to a callback and returns the last.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom.status import QR_MOVE_SERVICE_CLASS_STATUS, code_to_category

from receiver.query import LEVELS, MOVE_MODELS, UNIQUE_KEYS, Level, QueryError, Root
from receiver.scu import AssociationLost, Peer, associate

MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_DOES_NOT_MATCH = 0xA900
OUT_OF_RESOURCES_MATCHES = 0xA701
OUT_OF_RESOURCES_SUBOPERATIONS = 0xA702

PERMANENT_FAILURES = frozenset({MOVE_DESTINATION_UNKNOWN, IDENTIFIER_DOES_NOT_MATCH})
"""Statuses no retry can change: the request or our configuration at the node is wrong."""

HINTS = {
    MOVE_DESTINATION_UNKNOWN: "the node does not know the destination AE title: declare it "
    "there (AE title, our host and port) or pass another with --dest",
    OUT_OF_RESOURCES_MATCHES: "the node is busy or out of resources: try again later",
    OUT_OF_RESOURCES_SUBOPERATIONS: "the node is busy or out of resources: try again later",
    IDENTIFIER_DOES_NOT_MATCH: "the node refused the keys of this request",
}


@dataclass
class MoveProgress:
    """The sub-operation counts of one C-MOVE, as the node last reported them."""

    remaining: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    status: int | None = None
    failed_instances: list[str] = field(default_factory=list)

    def update(self, status: Dataset) -> None:
        self.status = int(status.Status)
        remaining = status.get("NumberOfRemainingSuboperations")
        if remaining is not None:
            self.remaining = int(remaining)
        elif code_to_category(self.status) != "Pending":
            self.remaining = 0  # a final response leaves it out once all are done
        for attribute, keyword in (
            ("completed", "NumberOfCompletedSuboperations"),
            ("failed", "NumberOfFailedSuboperations"),
            ("warning", "NumberOfWarningSuboperations"),
        ):
            value = status.get(keyword)
            if value is not None:
                setattr(self, attribute, int(value))


@dataclass
class MoveResult:
    """How a C-MOVE ended."""

    status: int
    meaning: str
    progress: MoveProgress
    comment: str | None = None
    """The node's Error Comment, if it sent one."""

    @property
    def category(self) -> str:
        return code_to_category(self.status)

    @property
    def ok(self) -> bool:
        """Every sub-operation completed (Success, or Warning with no failures)."""
        return self.category == "Success" or (
            self.category == "Warning" and self.progress.failed == 0
        )

    @property
    def permanent(self) -> bool:
        return self.status in PERMANENT_FAILURES

    @property
    def hint(self) -> str | None:
        return HINTS.get(self.status)


def move_identifier(root: Root, level: Level, keys: Mapping[str, str]) -> Dataset:
    """The C-MOVE identifier: the level and the unique keys down to it (PS3.4 C.4.2.2.1)."""
    if root == "study" and level == "PATIENT":
        raise QueryError("the Study Root model has no PATIENT level: use --root patient")
    first = 0 if root == "patient" else 1
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for above in LEVELS[first : LEVELS.index(level) + 1]:
        unique = UNIQUE_KEYS[above]
        value = keys.get(unique, "")
        if not value:
            raise QueryError(f"a {level} move in the {root} root model needs {unique}")
        setattr(ds, unique, value)
    return ds


def move_meaning(code: int) -> str:
    category, text = QR_MOVE_SERVICE_CLASS_STATUS.get(code, (code_to_category(code), ""))
    return f"0x{code:04X} {category}" + (f": {text}" if text else "")


def move(
    peer: Peer,
    root: Root,
    identifier: Dataset,
    destination: str,
    message_id: int = 1,
    on_progress: Callable[[MoveProgress], None] | None = None,
    cancel: threading.Event | None = None,
) -> MoveResult:
    """C-MOVE `identifier` from `peer` to the AE titled `destination`.

    Failure statuses are returned, not raised, with the counts so far; a lost
    association or an unanswered request raises `AssociationLost`.
    """
    model = MOVE_MODELS[root]
    progress = MoveProgress()
    cancelled = False
    with associate(peer, [model]) as assoc:
        responses = assoc.send_c_move(identifier, destination, model, msg_id=message_id)
        for status, answer in responses:
            if "Status" not in status:
                raise AssociationLost(
                    f"{peer.describe()} stopped answering the C-MOVE after "
                    f"{progress.completed} completed sub-operations (aborted, or no "
                    f"response within {peer.scu.dimse_timeout:g} s)"
                )
            progress.update(status)
            if on_progress is not None:
                on_progress(progress)
            code = int(status.Status)
            if code_to_category(code) == "Pending":
                if cancel is not None and cancel.is_set() and not cancelled:
                    assoc.send_c_cancel(message_id, query_model=model)
                    cancelled = True
                continue
            if answer is not None and "FailedSOPInstanceUIDList" in answer:
                failed = answer.FailedSOPInstanceUIDList or []
                failed = [failed] if isinstance(failed, str) else failed
                progress.failed_instances = [str(u) for u in failed]
            comment = str(status.get("ErrorComment", "") or "").strip() or None
            return MoveResult(code, move_meaning(code), progress, comment)
    raise AssociationLost(f"{peer.describe()} ended the C-MOVE without a final status")
