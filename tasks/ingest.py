"""One autoload batch, in three idempotent steps, without any orchestrator.

1. `archive_files`: parse, validate, anonymize and write each landed file into the
   archive (fsynced); unusable files go to quarantine with a reason.
2. `record_instances`: append catalog rows for the instance versions the catalog
   lacks, and new versions of the series, studies, patients and records they change.
3. `clear_landing`: delete the landed files whose archive copy and rows are durable.

A crash between any two steps leaves work that the next run redoes harmlessly:
the archive knows which landed file made which version, rows are only added for
unrecorded (instance, version) pairs, and a landed file is deleted only after both.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catalog.records import record_batch
from catalog.store import CatalogStore, open_store
from receiver.durable import remove_durably
from receiver.landing import is_received_name
from tasks import burned_in, phi_gate
from tasks.anonymize import anonymize
from tasks.archive import (
    ArchiveBatch,
    Kind,
    archive_relpath,
    archive_version,
    encode,
    encode_streamed,
)
from tasks.extract import dicom_json, received_at, rows_for, source_ae_title, text, utc_now
from tasks.mapping import MappingRow, mapping_row, write_mapping
from tasks.parse import Rejected, read_landed
from tasks.policy import Policy, build_policy
from tasks.prune import drop_removed_private
from tasks.pseudonyms import Pseudonymizer
from tasks.quarantine import quarantine

LOGGER = logging.getLogger("dicomflow.autoload")


class StorageUnavailable(OSError):
    """The archive, catalog or quarantine cannot be written (full, read-only, gone).

    A failure of the machine, not of the file: the batch stops, every landed file
    stays, and a retry or the next run picks the work up again.
    """

    @classmethod
    def during(cls, what: str, exc: OSError) -> StorageUnavailable:
        return cls(exc.errno, f"{what} failed: {exc.strerror or exc}")


@dataclass(frozen=True)
class IngestContext:
    """What a batch needs, built once per run from the settings."""

    archive_dir: Path
    quarantine_dir: Path
    catalog_dir: Path | str
    """The catalog's folder or fsspec URL."""
    salt: bytes = field(repr=False)
    run_id: str
    options: tuple[str, ...] = ()
    site_rules: Path | None = None
    burned_in: str = "quarantine"
    """``quarantine`` or ``flag`` for instances declaring BurnedInAnnotation YES."""
    mapping_dir: Path | None = None
    """Where to write original -> pseudonym rows; None: not written."""
    record_unit: str = "study"
    """What one row of the records table describes: patient, study or series."""
    catalog_options: dict[str, Any] = field(default_factory=dict)
    """fsspec storage options for a catalog given as a URL."""
    catalog_lock: Path | None = None
    """The catalog writers' lock file; None: beside a local catalog."""
    logs_dir: Path | None = None
    """Where the receiver's receipts log is; None: receipts are not read."""

    def policy(self) -> Policy:
        return build_policy(self.options, self.site_rules)

    def keys(self) -> Pseudonymizer:
        return Pseudonymizer(self.salt)

    def store(self) -> CatalogStore:
        return open_store(self.catalog_dir, self.catalog_options, self.catalog_lock)


@dataclass(frozen=True)
class ArchivedInstance:
    """A landed file whose anonymized copy is in the archive."""

    landed: Path
    sop_instance_uid: str
    rows: dict[str, dict[str, Any]]
    kind: Kind
    """new, version (different content replaced the archived copy) or duplicate."""
    mapping: MappingRow

    @property
    def new(self) -> bool:
        return self.kind != "duplicate"


@dataclass
class ArchiveOutcome:
    """What `archive_files` did with one batch."""

    archived: list[ArchivedInstance] = field(default_factory=list)
    quarantined: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def new(self) -> int:
        """Instances archived for the first time."""
        return sum(1 for a in self.archived if a.kind == "new")

    @property
    def versions(self) -> int:
        """Re-sent instances whose content changed: a new version replaced the archived one."""
        return sum(1 for a in self.archived if a.kind == "version")

    @property
    def duplicates(self) -> int:
        return sum(1 for a in self.archived if a.kind == "duplicate")

    @property
    def bytes(self) -> int:
        return sum(a.rows["instances"]["file_size"] for a in self.archived if a.new)


def landed_name(name: str, keys: Pseudonymizer) -> str:
    """What the catalog records of a landed file's name: ours as it is, any other (a file
    dropped into landing by hand, perhaps named after the patient) as a keyed hash."""
    return text(name) if is_received_name(name) else keys.landed_name(name)


def archive_one(
    path: Path,
    ctx: IngestContext,
    policy: Policy,
    keys: Pseudonymizer,
    batch: ArchiveBatch | None = None,
) -> ArchivedInstance:
    """Parse, anonymize and archive one landed file; raises `Rejected` for unusable input.

    A large file's pixel data is never read whole: it is copied in chunks from the
    landed file into the archive copy.
    """
    landed = read_landed(path, prune=lambda ds: drop_removed_private(ds, policy))
    ds = landed.ds
    sender = source_ae_title(ds)  # the anonymizer removes it from the file meta
    if ctx.burned_in == "quarantine" and burned_in.declared(ds) == "YES":
        raise Rejected("burned-in", "BurnedInAnnotation is YES: the pixels may show identity")
    whole, parts = phi_gate.originals(ds, policy.gate_keywords(phi_gate.IDENTIFYING_KEYWORDS))
    original = mapping_row(ds)
    anonymize(ds, policy, keys, (whole, parts))
    try:
        phi_gate.check(ds, whole, parts, policy.own_values)
    except phi_gate.PhiFound as found:
        raise Rejected("phi-gate", str(found)) from None
    relpath = archive_relpath(ds)
    data = encode(ds) if landed.bulk is None else encode_streamed(ds, landed.bulk, path)
    try:
        written = archive_version(ctx.archive_dir, relpath, data, path.name, batch)
    except OSError as exc:
        raise StorageUnavailable.during("archive write", exc) from exc
    facts: dict[str, Any] = {
        "archive_path": str(written.path.resolve()),
        "archive_relpath": written.relpath.as_posix(),
        "file_size": written.size,
        "sha256": written.sha256,
        "landed_name": landed_name(path.name, keys),
        "received_at": received_at(path.name),
        "calling_ae_title": sender,
        "version": written.version,
        **policy.lineage(),
        # a duplicate has the archived copy's bytes, so `ds` describes that copy too
        "dicom_json": dicom_json(ds),
    }
    if landed.bulk is not None:  # copied from the landed file, not in `ds`
        facts["has_pixel_data"] = True
    rows = rows_for(ds, facts, {"run_id": ctx.run_id, "recorded_at": utc_now()})
    mapping = original.completed(ds)
    return ArchivedInstance(path, str(ds.SOPInstanceUID), rows, written.kind, mapping)


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Keep pydicom's complaints about odd values out of logs: they quote the values."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logger.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            logger.setLevel(level)


def archive_files(paths: list[Path], ctx: IngestContext) -> ArchiveOutcome:
    """Step 1 for a batch. Per-file problems quarantine that file; storage problems stop all."""
    started = time.perf_counter()
    policy, keys = ctx.policy(), ctx.keys()
    outcome = ArchiveOutcome()
    batch = ArchiveBatch(ctx.archive_dir)
    with quiet_pydicom():
        for path in paths:
            _archive_or_quarantine(path, ctx, policy, keys, outcome, batch)
    try:
        batch.commit()  # one fsync per file and folder, before any row names them
    except OSError as exc:
        raise StorageUnavailable.during("archive write", exc) from exc
    if ctx.mapping_dir is not None and outcome.archived:
        try:
            write_mapping(ctx.mapping_dir, ctx.run_id, [a.mapping for a in outcome.archived])
        except OSError as exc:
            raise StorageUnavailable.during("mapping table write", exc) from exc
    outcome.seconds = time.perf_counter() - started
    return outcome


def _archive_or_quarantine(
    path: Path,
    ctx: IngestContext,
    policy: Policy,
    keys: Pseudonymizer,
    outcome: ArchiveOutcome,
    batch: ArchiveBatch,
) -> None:
    """Archive one file, or quarantine it with the reason; storage failures propagate."""
    if not path.exists():  # finished by an earlier, interrupted run
        return
    try:
        outcome.archived.append(archive_one(path, ctx, policy, keys, batch))
        return
    except Rejected as rejected:
        reason, detail = rejected.reason, rejected.detail
    except StorageUnavailable:
        raise
    except Exception as exc:  # any failure of this file alone, RecursionError included
        reason, detail = "processing-error", f"{type(exc).__name__}: {exc}"
    try:
        quarantine(path, ctx.quarantine_dir, reason, detail)
    except OSError as exc:
        raise StorageUnavailable.during("quarantine write", exc) from exc
    outcome.quarantined[reason] += 1
    # A name someone else gave the file may name the patient: log what the catalog keeps.
    LOGGER.warning("quarantined %s: %s", landed_name(path.name, keys), reason)


def record_instances(
    archived: list[ArchivedInstance],
    catalog: CatalogStore | Path | str,
    record_unit: str = "study",
) -> int:
    """Step 2: catalog rows for the instance versions not recorded yet; returns how many.

    Also writes the new versions of the series, studies, patients and records whose
    current instances they change, in the same manifest swap.
    """
    if not archived:
        return 0
    run_id = str(archived[0].rows["instances"].get("run_id") or "local")
    try:
        recorded = record_batch(
            open_store(catalog), [a.rows for a in archived], record_unit, run_id
        )
    except OSError as exc:
        raise StorageUnavailable.during("catalog write", exc) from exc
    return recorded.instances


def clear_landing(archived: list[ArchivedInstance]) -> int:
    """Step 3: remove landed files now safe in the archive and the catalog."""
    paths = [a.landed for a in archived]
    remove_durably(paths)
    return len(paths)
