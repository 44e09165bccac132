"""Where an anonymized instance lives in the archive, and writing its versions there."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from receiver.dicomfile import CHUNK, Bulk, copy_range
from receiver.durable import PendingSync, fsync_dir, write_atomic, write_atomic_with

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,63}")
"""What an archive folder or file name may be: a UID or a patient pseudonym, nothing else."""


def archive_relpath(ds: Dataset) -> Path:
    """``<patient>/<study>/<series>/<sop-instance>.dcm`` from anonymized identifiers.

    Each part must look like a UID or a pseudonym, so no value can climb out of the
    archive or name something else, even if a rule failed to replace it.
    """
    keywords = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    parts = [str(ds.get(keyword, "")) for keyword in keywords]
    for part in parts:
        if not SAFE_NAME.fullmatch(part) or ".." in part:
            raise ValueError(f"identifier {part[:80]!r} cannot name an archive folder or file")
    *folders, sop = parts
    return Path(*folders, f"{sop}.dcm")


def encode(ds: Dataset) -> bytes:
    """The dataset in DICOM file format, in the transfer syntax it arrived in.

    The file meta names the dataset's own SOP class and instance, whatever the
    sender's file meta said.
    """
    buffer = io.BytesIO()
    ds.preamble = bytes(128)  # a preamble is free space: never copy the sender's
    for meta_keyword, keyword in (
        ("MediaStorageSOPClassUID", "SOPClassUID"),
        ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
    ):
        if keyword in ds:
            setattr(ds.file_meta, meta_keyword, ds[keyword].value)
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class Streamed:
    """An archive copy whose pixel data is copied from the landed file, never held whole:
    the encoded header, the pixel data element's bytes in `source`, the encoded rest."""

    header: bytes
    source: Path
    bulk: Bulk
    tail: bytes

    def __len__(self) -> int:
        return len(self.header) + self.bulk.size + len(self.tail)

    def chunks(self) -> Iterator[bytes]:
        yield self.header
        with self.source.open("rb") as src:
            yield from copy_range(src, self.bulk.start, self.bulk.end)
        if self.tail:
            yield self.tail

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for chunk in self.chunks():
            digest.update(chunk)
        return digest.hexdigest()

    def write(self, fh: BinaryIO) -> None:
        for chunk in self.chunks():
            fh.write(chunk)


def encode_streamed(ds: Dataset, bulk: Bulk, source: Path) -> Streamed:
    """Like `encode`, with the pixel data left in `source` (`tasks.parse.read_landed` of a
    large file): `ds` holds everything else; the elements after the pixel data element
    follow it. Header and tail are encoded here, so an element that cannot be encoded
    fails now, not halfway through writing the archive copy.
    """
    trailer = Dataset()
    for tag in [tag for tag in list(ds.keys()) if tag > bulk.tag]:
        trailer.add(ds[tag])
        del ds[tag]
    try:
        header = encode(ds)
    finally:
        for elem in trailer:
            ds.add(elem)
    tail = b""
    if len(trailer):
        syntax = ds.file_meta.TransferSyntaxUID
        fp = DicomBytesIO()
        fp.is_implicit_VR, fp.is_little_endian = syntax.is_implicit_VR, syntax.is_little_endian
        write_dataset(fp, trailer)
        tail = fp.getvalue()
    return Streamed(header, source, bulk, tail)


def sha256_of(path: Path) -> str:
    """A file's sha256, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


INDEX_DIR = ".sop-index"
"""Under the archive: one small JSON file per archived SOP Instance UID, naming its file
and every version archived so far."""

SHARD_LOCK = ".lock"
"""In each index shard: held while an instance of the shard is read, written and indexed."""

Kind = Literal["new", "version", "duplicate"]


@dataclass(frozen=True)
class Written:
    """An instance's file in the archive, as it is on disk."""

    archive_dir: Path
    relpath: Path
    size: int
    sha256: str
    version: int
    kind: Kind
    """``new``: first archived; ``version``: different content replaced the archived one;
    ``duplicate``: this content is archived already (a repeat, or a re-run after a crash)."""

    @property
    def path(self) -> Path:
        return self.archive_dir / self.relpath

    @property
    def new(self) -> bool:
        return self.kind != "duplicate"


def index_entry(archive_dir: Path, sop_instance_uid: str) -> Path:
    """Where the archive records that `sop_instance_uid` is archived (sharded by its end)."""
    return archive_dir / INDEX_DIR / sop_instance_uid[-2:] / sop_instance_uid


@dataclass(frozen=True)
class Entry:
    """An index entry: where the current version is, and every version seen so far."""

    relpath: str
    sha256: str
    version: int
    versions: tuple[dict[str, Any], ...]
    """``{"version", "sha256", "landed"}`` per version, oldest first."""
    previous: str | None = None
    """The file of the version before, while it may still need removing (it moved)."""

    def encode(self) -> bytes:
        return json.dumps(
            {
                "relpath": self.relpath,
                "sha256": self.sha256,
                "version": self.version,
                "versions": list(self.versions),
                "previous": self.previous,
            }
        ).encode()


def read_entry(archive_dir: Path, entry: Path) -> Entry | None:
    """The index entry, None if there is none; a plain path (older layout) is version 1."""
    try:
        text = entry.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    if not text.startswith("{"):
        old = archive_dir / text
        digest = sha256_of(old) if old.is_file() else hashlib.sha256(b"").hexdigest()
        return Entry(text, digest, 1, ({"version": 1, "sha256": digest, "landed": None},))
    raw = json.loads(text)
    return Entry(
        raw["relpath"], raw["sha256"], int(raw["version"]), tuple(raw["versions"]), raw["previous"]
    )


class ArchiveBatch:
    """The archive writes of one batch, made durable together by `commit`.

    Each file and its index entry go into place unsynced (other batches, in other
    processes, see them at once); `commit` fsyncs them all, then each folder once, and
    only then removes the old files of versions that moved. Nothing names them outside
    the archive before that: catalog rows are written after `commit`, landed files
    removed after the rows. A crash before `commit` may leave an entry whose file did
    not reach the disk; the landed file is still there, and a re-run finds the
    archived copy does not hold the bytes its entry says (`_holds`) and writes it again.
    """

    def __init__(self, archive_dir: Path) -> None:
        self.archive_dir = archive_dir
        self.files = PendingSync()
        self.removals: list[Path] = []

    def commit(self) -> None:
        """Files and entries durable, then the old files of moved versions gone."""
        self.files.flush()
        for old in self.removals:
            _remove(old)
        self.removals.clear()


@contextmanager
def instance_lock(entry_path: Path) -> Iterator[None]:
    """Hold the lock of the index shard of `entry_path`, blocking: batches in parallel
    processes (or machines sharing the archive) read, write and index one SOP instance
    at a time, so a re-sent instance in two batches at once still gets one version each.
    """
    lock_path = entry_path.parent / SHARD_LOCK
    entry_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _holds(path: Path, digest: str) -> bool:
    """Whether the archived file has the bytes its entry names (not so after a crash
    before the batch's commit)."""
    try:
        return sha256_of(path) == digest
    except FileNotFoundError:
        return False


def archive_version(
    archive_dir: Path,
    relpath: Path,
    data: bytes | Streamed,
    landed: str,
    batch: ArchiveBatch | None = None,
) -> Written:
    """Archive `data` as the current version of its SOP instance, unless it is one already.

    A second object with the same SOP Instance UID is the same instance (PS3.3
    C.12.1.1.1), even when it arrives under another patient or study. The same
    bytes again are a duplicate; other bytes are a new version, which replaces the
    archived file (at the path its own identifiers give). The file is written before
    the index entry, and a duplicate is one only if the archived file holds its bytes,
    so a crash anywhere is repaired by the re-run; and the landed file that made each
    version is remembered, so a re-run after a crash gets back the version that file
    made instead of making another. Streamed `data` is read twice from its landed
    file, to hash it and to write it, and never held whole. With `batch`, nothing is
    durable before `batch.commit()`; without, this call commits its own.
    """
    own = batch is None
    batch = batch or ArchiveBatch(archive_dir)
    digest = data.sha256() if isinstance(data, Streamed) else hashlib.sha256(data).hexdigest()
    entry_path = index_entry(archive_dir, relpath.stem)
    with instance_lock(entry_path):
        written = _archive_into(batch, entry_path, relpath, data, digest, landed)
    if own:
        batch.commit()
    return written


def _archive_into(
    batch: ArchiveBatch,
    entry_path: Path,
    relpath: Path,
    data: bytes | Streamed,
    digest: str,
    landed: str,
) -> Written:
    archive_dir = batch.archive_dir
    current = read_entry(archive_dir, entry_path)
    kind: Kind
    version: int
    versions: tuple[dict[str, Any], ...]
    if current is None:
        version, kind, versions = 1, "new", ()
    elif (archive_dir / current.relpath).is_file():
        if current.previous:  # a crash came between move and removal
            batch.removals.append(archive_dir / current.previous)
        intact = current.sha256 != digest or _holds(archive_dir / current.relpath, digest)
        for seen in current.versions:
            if seen.get("landed") == landed and seen["sha256"] == digest and intact:
                return Written(  # this file, again
                    archive_dir, relpath, len(data), digest, seen["version"], "duplicate"
                )
        if current.sha256 == digest and intact:
            return Written(archive_dir, relpath, len(data), digest, current.version, "duplicate")
        if current.sha256 == digest:  # its bytes lost in a crash: write them again
            version, kind, versions = current.version, "new", current.versions[:-1]
        else:
            version, kind, versions = current.version + 1, "version", current.versions
    elif current.sha256 == digest:  # indexed, its file lost: write it again
        version, kind, versions = current.version, "new", current.versions[:-1]
    else:
        version, kind, versions = current.version + 1, "version", current.versions
    versions = (*versions, {"version": version, "sha256": digest, "landed": landed})
    if isinstance(data, Streamed):
        write_atomic_with(archive_dir / relpath, data.write, pending=batch.files)
    else:
        write_atomic(archive_dir / relpath, data, pending=batch.files)
    moved = current.relpath if current and current.relpath != relpath.as_posix() else None
    entry = Entry(relpath.as_posix(), digest, version, versions, moved)
    write_atomic(entry_path, entry.encode(), pending=batch.files)
    if moved:
        batch.removals.append(archive_dir / moved)
    return Written(archive_dir, relpath, len(data), digest, version, kind)


def _remove(path: Path) -> None:
    if path.exists():
        path.unlink()
        fsync_dir(path.parent)


def read_archived(path: Path) -> Dataset:
    """The header of an archived file (no pixel data), to describe it in the catalog."""
    return dcmread(path, stop_before_pixels=True)
