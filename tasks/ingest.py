"""One autoload batch, in three idempotent steps, without any orchestrator.

1. `archive_files`: parse, validate, anonymize and write each landed file into the
   archive (fsynced); unusable files go to quarantine with a reason.
2. `record_instances`: append catalog rows for instances the catalog lacks.
3. `clear_landing`: delete the landed files whose archive copy and rows are durable.

A crash between any two steps leaves work that the next run redoes harmlessly:
archive writes never overwrite, rows are only added for unrecorded instances,
and a landed file is deleted only after both.
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

from catalog.store import recorded_instances, write_parts
from receiver.durable import remove_durably
from receiver.landing import is_received_name
from tasks import burned_in, phi_gate
from tasks.anonymize import anonymize
from tasks.archive import archive_once, archive_relpath, encode, read_archived
from tasks.extract import rows_for, text, utc_now
from tasks.mapping import MappingRow, mapping_row, write_mapping
from tasks.parse import Rejected, read_instance
from tasks.policy import Policy, build_policy
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
    catalog_dir: Path
    salt: bytes = field(repr=False)
    run_id: str
    options: tuple[str, ...] = ()
    site_rules: Path | None = None
    burned_in: str = "quarantine"
    """``quarantine`` or ``flag`` for instances declaring BurnedInAnnotation YES."""
    mapping_dir: Path | None = None
    """Where to write original -> pseudonym rows; None: not written."""

    def policy(self) -> Policy:
        return build_policy(self.options, self.site_rules)

    def keys(self) -> Pseudonymizer:
        return Pseudonymizer(self.salt)


@dataclass(frozen=True)
class ArchivedInstance:
    """A landed file whose anonymized copy is in the archive."""

    landed: Path
    sop_instance_uid: str
    rows: dict[str, dict[str, Any]]
    new: bool
    mapping: MappingRow


@dataclass
class ArchiveOutcome:
    """What `archive_files` did with one batch."""

    archived: list[ArchivedInstance] = field(default_factory=list)
    quarantined: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def new(self) -> int:
        return sum(1 for a in self.archived if a.new)

    @property
    def duplicates(self) -> int:
        return sum(1 for a in self.archived if not a.new)

    @property
    def bytes(self) -> int:
        return sum(a.rows["instances"]["file_size"] for a in self.archived if a.new)


def landed_name(name: str, keys: Pseudonymizer) -> str:
    """What the catalog records of a landed file's name: ours as it is, any other (a file
    dropped into landing by hand, perhaps named after the patient) as a keyed hash."""
    return text(name) if is_received_name(name) else keys.landed_name(name)


def archive_one(
    path: Path, ctx: IngestContext, policy: Policy, keys: Pseudonymizer
) -> ArchivedInstance:
    """Parse, anonymize and archive one landed file; raises `Rejected` for unusable input."""
    ds = read_instance(path)
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
    data = encode(ds)
    try:
        written = archive_once(ctx.archive_dir, relpath, data)
    except OSError as exc:
        raise StorageUnavailable.during("archive write", exc) from exc
    described = ds if written.new else read_archived(written.path)
    facts = {
        "archive_path": str(written.path.resolve()),
        "archive_relpath": written.relpath.as_posix(),
        "file_size": written.size,
        "sha256": written.sha256,
        "landed_name": landed_name(path.name, keys),
    }
    rows = rows_for(described, facts, {"run_id": ctx.run_id, "recorded_at": utc_now()})
    mapping = original.completed(ds)
    return ArchivedInstance(path, str(ds.SOPInstanceUID), rows, written.new, mapping)


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
    with quiet_pydicom():
        for path in paths:
            _archive_or_quarantine(path, ctx, policy, keys, outcome)
    if ctx.mapping_dir is not None and outcome.archived:
        try:
            write_mapping(ctx.mapping_dir, ctx.run_id, [a.mapping for a in outcome.archived])
        except OSError as exc:
            raise StorageUnavailable.during("mapping table write", exc) from exc
    outcome.seconds = time.perf_counter() - started
    return outcome


def _archive_or_quarantine(
    path: Path, ctx: IngestContext, policy: Policy, keys: Pseudonymizer, outcome: ArchiveOutcome
) -> None:
    """Archive one file, or quarantine it with the reason; storage failures propagate."""
    if not path.exists():  # finished by an earlier, interrupted run
        return
    try:
        outcome.archived.append(archive_one(path, ctx, policy, keys))
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
    LOGGER.warning("quarantined %s: %s", path.name, reason)


def record_instances(archived: list[ArchivedInstance], catalog_dir: Path) -> int:
    """Step 2: write catalog rows for the instances not recorded yet; returns how many."""
    known = recorded_instances(catalog_dir, (a.sop_instance_uid for a in archived))
    fresh = [a for a in archived if a.sop_instance_uid not in known]
    if not fresh:
        return 0
    tables = {table: [a.rows[table] for a in fresh] for table in fresh[0].rows}
    try:
        write_parts(catalog_dir, tables)
    except OSError as exc:
        raise StorageUnavailable.during("catalog write", exc) from exc
    return len({a.sop_instance_uid for a in fresh})


def clear_landing(archived: list[ArchivedInstance]) -> int:
    """Step 3: remove landed files now safe in the archive and the catalog."""
    paths = [a.landed for a in archived]
    remove_durably(paths)
    return len(paths)
