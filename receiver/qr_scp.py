"""Query/Retrieve SCP over the catalog: C-FIND, C-MOVE and C-GET, Patient and Study Root.

Answers come from DuckDB over the catalog views (anonymized identifiers only); files
come from the archive. C-MOVE sends to destinations configured as nodes (an unknown
AE title gets 0xA801 from pynetdicom); C-GET sends on the requestor's association.
pynetdicom runs the sub-operations and puts their counts in the pending responses.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
from pydicom import dcmread
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context

from receiver import query
from receiver.matching import MatchError, build_query, response
from receiver.scu import VERIFICATION
from receiver.send import contexts_for
from receiver.settings import RemoteNode
from receiver.tls import TlsError, client_context

if TYPE_CHECKING:
    from catalog.store import CatalogStore

LOGGER = logging.getLogger("dicomflow.receiver")

FIND_MODELS = tuple(str(uid) for uid in query.FIND_MODELS.values())  # patient, study root
MOVE_MODELS = tuple(str(uid) for uid in query.MOVE_MODELS.values())
GET_MODELS = ("1.2.840.10008.5.1.4.1.2.1.3", "1.2.840.10008.5.1.4.1.2.2.3")
STUDY_ROOT_MODELS = frozenset((FIND_MODELS[1], MOVE_MODELS[1], GET_MODELS[1]))

PENDING = 0xFF00
IDENTIFIER_DOES_NOT_MATCH = 0xA900
"""C-FIND "Identifier does not match SOP Class" (PS3.4 C.4.1.1.4): a bad identifier."""
UNABLE_TO_PROCESS = 0xC000
"""C-FIND/C-MOVE/C-GET "Unable to process" (PS3.4 C.4): the catalog could not answer."""
CANCELLED = 0xFE00


def qr_contexts() -> list[PresentationContext]:
    """The FIND, MOVE and GET models of both roots, with pynetdicom's default syntaxes."""
    return [build_context(uid) for uid in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS)]


@dataclass(frozen=True)
class Archive:
    """What the Q/R SCP serves from: the catalog, and the nodes C-MOVE may send to."""

    catalog: CatalogStore | Path | str
    """The catalog's store, folder or fsspec URL."""
    nodes: dict[str, RemoteNode] = field(default_factory=dict)

    def rows(self, sql: str, params: list[object]) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one query on a fresh snapshot of the catalog."""
        import catalog

        con = catalog.connect(self.catalog)
        try:
            result = con.execute(sql, params)
            columns = [d[0] for d in result.description or []]
            return columns, result.fetchall()
        finally:
            con.close()

    def destination(self, ae_title: str) -> RemoteNode | None:
        wanted = ae_title.strip()
        return next((n for n in self.nodes.values() if n.ae_title == wanted), None)


def _study_root(event: Event) -> bool:
    return str(event.request.AffectedSOPClassUID) in STUDY_ROOT_MODELS


def handle_find(event: Event, archive: Archive) -> Iterator[tuple[int, Any]]:
    """Yield one pending response per match, then pynetdicom sends the final Success."""
    try:
        query = build_query(event.identifier, study_root=_study_root(event))
        columns, rows = archive.rows(query.sql, query.params)
    except MatchError as exc:
        LOGGER.warning("C-FIND refused: %s", exc)
        yield IDENTIFIER_DOES_NOT_MATCH, None
        return
    except (duckdb.Error, OSError) as exc:
        LOGGER.error("C-FIND failed: %s", exc)
        yield UNABLE_TO_PROCESS, None
        return
    LOGGER.info("C-FIND at %s level: %d matches", query.level, len(rows))
    for row in rows:
        if event.is_cancelled:
            yield CANCELLED, None
            return
        yield PENDING, response(query, columns, row)


def _instances(event: Event, archive: Archive) -> list[tuple[Path, tuple[str, str]]] | int:
    """The archived files a C-MOVE or C-GET identifier selects, or a failure status."""
    try:
        query = build_query(event.identifier, with_paths=True, study_root=_study_root(event))
        _, rows = archive.rows(query.sql, query.params)
    except MatchError as exc:
        LOGGER.warning("retrieve refused: %s", exc)
        return IDENTIFIER_DOES_NOT_MATCH
    except (duckdb.Error, OSError) as exc:
        LOGGER.error("retrieve failed: %s", exc)
        return UNABLE_TO_PROCESS
    return [(Path(path), (str(sop), str(syntax))) for path, sop, syntax in rows]


def _datasets(event: Event, files: list[tuple[Path, tuple[str, str]]]) -> Iterator[tuple[int, Any]]:
    for path, _ in files:
        if event.is_cancelled:
            yield CANCELLED, None
            return
        try:
            yield PENDING, dcmread(path)
        except OSError as exc:
            LOGGER.error("retrieve: cannot read %s: %s", path.name, exc.strerror or exc)
            # Anything but a Dataset with Pending counts as a failed sub-operation.
            yield PENDING, "unreadable"


def handle_move(event: Event, archive: Archive, own_ae_title: str = "") -> Iterator[Any]:
    """Destination first (None: unknown, 0xA801), then the count, then each dataset.

    pynetdicom associates with the destination between the first and the second yield,
    so a refusal (a bad identifier) still goes there first, with only a Verification
    context, and ends with its status; a destination we cannot reach is "unknown".
    """
    wanted = (event.move_destination or "").strip()
    node = archive.destination(wanted)
    if node is None or wanted == own_ae_title.strip():
        why = "ourselves: it would loop" if node is not None else "not a configured node"
        LOGGER.warning("C-MOVE to %r refused: %s", wanted, why)
        yield None, None
        return
    try:
        socket.getaddrinfo(node.host, node.port)
        tls = (client_context(node.tls), node.host) if node.tls is not None else None
    except (OSError, TlsError) as exc:
        LOGGER.error("C-MOVE to %s: %s", node.ae_title, exc)
        yield None, None
        return
    files = _instances(event, archive)
    contexts = contexts_for(k for _, k in files) if isinstance(files, list) and files else None
    options: dict[str, Any] = {
        "ae_title": node.ae_title,
        "contexts": contexts or [build_context(VERIFICATION)],
    }
    if tls is not None:
        options["tls_args"] = tls
    yield node.host, node.port, options
    if isinstance(files, int):  # a failure status must follow a count (pynetdicom's order)
        yield 1
        yield files, None
        return
    LOGGER.info("C-MOVE to %s: %d instances", node.ae_title, len(files))
    yield len(files)
    yield from _datasets(event, files)


def handle_get(event: Event, archive: Archive) -> Iterator[Any]:
    """The count, then each dataset, sent back on the requestor's own association."""
    files = _instances(event, archive)
    if isinstance(files, int):
        yield 1
        yield files, None
        return
    LOGGER.info("C-GET: %d instances", len(files))
    yield len(files)
    yield from _datasets(event, files)
