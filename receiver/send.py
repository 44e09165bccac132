"""Send archived instances to a remote node (C-STORE SCU), one association per batch.

Each file is offered in its own transfer syntax, with Explicit and Implicit VR
Little Endian as fallbacks for its SOP class; a compressed file the node will only
take uncompressed is decompressed on the way. Failures get one more try on a fresh
association, then are reported with the status's meaning from pynetdicom.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS, code_to_category

from receiver.scu import Peer, ScuError, associate, echo

MAX_CONTEXTS = 128
"""Presentation contexts one association may propose (PS3.8 9.3.2.2)."""

FALLBACKS = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def status_meaning(code: int | None) -> str:
    """What a C-STORE status means, as pynetdicom's status tables say."""
    if code is None:
        return "no response"
    category, text = STORAGE_SERVICE_CLASS_STATUS.get(code, (code_to_category(code), ""))
    return f"0x{code:04X} {category}{': ' + text if text else ''}"


@dataclass(frozen=True)
class Sent:
    """The outcome of one file: its final status, or why it could not be sent."""

    path: Path
    status: int | None
    error: str | None = None

    @property
    def category(self) -> str:
        if self.status is None:
            return "Failure"
        return code_to_category(self.status)

    @property
    def ok(self) -> bool:
        return self.category == "Success"

    def describe(self) -> str:
        return self.error or status_meaning(self.status)


@dataclass
class SendReport:
    """What happened to every file, with counts by outcome."""

    results: list[Sent] = field(default_factory=list)

    def count(self, category: str) -> int:
        return sum(1 for r in self.results if r.category == category)

    @property
    def sent(self) -> int:
        return self.count("Success")

    @property
    def warnings(self) -> int:
        return self.count("Warning")

    @property
    def failed(self) -> list[Sent]:
        return [r for r in self.results if r.category not in ("Success", "Warning")]


def header_key(ds: Dataset) -> tuple[str, str]:
    """The presentation context a file needs: its SOP class and transfer syntax."""
    return str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)


def contexts_for(keys: Iterable[tuple[str, str]]) -> list[PresentationContext]:
    """One context per (SOP class, own syntax), and one per SOP class with the fallbacks."""
    keys = sorted(set(keys))
    contexts = [build_context(sop_class, syntax) for sop_class, syntax in keys]
    for sop_class in sorted({sop_class for sop_class, _ in keys}):
        contexts.append(build_context(sop_class, list(FALLBACKS)))
    return contexts


Header = tuple[Path, tuple[str, str]]
"""A file and its (SOP class, transfer syntax)."""


def plan_batches(headers: Sequence[Header], size: int) -> list[list[Header]]:
    """Cut files into batches of at most `size` whose contexts fit one association."""
    batches: list[list[Header]] = []
    current: list[Header] = []
    keys: set[tuple[str, str]] = set()
    for path, key in headers:
        grown = keys | {key}
        if current and (len(current) >= size or len(contexts_for(grown)) > MAX_CONTEXTS):
            batches.append(current)
            current, grown = [], {key}
        current.append((path, key))
        keys = grown
    if current:
        batches.append(current)
    return batches


def _accepts(assoc: Association, ds: Dataset) -> bool:
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    for cx in assoc.accepted_contexts:
        if cx.abstract_syntax != ds.SOPClassUID or not cx.transfer_syntax:
            continue
        accepted = UID(str(cx.transfer_syntax[0]))
        if accepted == syntax or (not syntax.is_compressed and not accepted.is_compressed):
            return True
    return False


def _store(assoc: Association, path: Path) -> Sent:
    try:
        ds = dcmread(path)
        if not _accepts(assoc, ds) and UID(str(ds.file_meta.TransferSyntaxUID)).is_compressed:
            ds.decompress()
        reply = assoc.send_c_store(ds)
    except Exception as exc:  # one file's problem must not stop the batch
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return Sent(path, None, f"not sent: {type(exc).__name__}: {first_line}")
    if "Status" not in reply:
        return Sent(path, None, "no response (association lost)")
    return Sent(path, int(reply.Status))


def send_batch(
    peer: Peer, batch: Sequence[tuple[Path, tuple[str, str]]], on_sent: Callable[[Sent], None]
) -> list[Sent]:
    """C-STORE one batch on one association (C-ECHO first, as every association we start)."""
    contexts = contexts_for(key for _, key in batch)
    sop_classes = list(dict.fromkeys(str(cx.abstract_syntax) for cx in contexts))
    results: list[Sent] = []
    with associate(peer, sop_classes, contexts) as assoc:
        for path, _ in batch:
            if not assoc.is_established:
                results.append(Sent(path, None, "not sent: association lost"))
                continue
            result = _store(assoc, path)
            results.append(result)
            on_sent(result)
    return results


def send(
    peer: Peer,
    paths: Sequence[Path],
    *,
    batch_size: int = 500,
    on_sent: Callable[[Sent], None] = lambda _: None,
) -> SendReport:
    """Send every file; failed ones get a second try on a new association.

    A node that does not answer a C-ECHO at the start raises ScuError at once, rather
    than failing every file twice.
    """
    if peer.scu.echo_first and paths:
        echo(peer)
    headers: list[Header] = []
    report = SendReport()
    for path in paths:
        try:
            headers.append((path, header_key(dcmread(path, stop_before_pixels=True))))
        except Exception as exc:
            report.results.append(Sent(path, None, f"not sendable: {type(exc).__name__}: {exc}"))
    outcome: dict[Path, Sent] = {}
    for batch in plan_batches(headers, batch_size):
        for result in _attempt(peer, batch, on_sent):
            outcome[result.path] = result
    retry = [(p, k) for p, k in headers if outcome[p].category not in ("Success", "Warning")]
    for batch in plan_batches(retry, batch_size):
        for result in _attempt(peer, batch, lambda _: None):
            outcome[result.path] = result
    report.results.extend(outcome[p] for p, _ in headers)
    return report


def _attempt(peer: Peer, batch: list[Header], on_sent: Callable[[Sent], None]) -> list[Sent]:
    try:
        return send_batch(peer, batch, on_sent)
    except ScuError as exc:  # no association at all: every file of the batch failed
        failed = [Sent(path, None, str(exc)) for path, _ in batch]
        for result in failed:
            on_sent(result)
        return failed
