"""`dicomflow catalog check`: do the catalog and the archive describe the same files?

Every current instance row must point at an archive file of the recorded size
and SHA-256, every archive file must have a current row, and every part the
manifest lists must exist. What is off is returned, one problem per line.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb

from catalog.query import attach
from catalog.store import CatalogStore

INDEX_DIR = ".sop-index"


@dataclass(frozen=True)
class Problem:
    """One thing the catalog and the archive disagree on."""

    kind: str
    """missing-file, size-differs, hash-differs, no-row, missing-part."""
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.detail}"


@dataclass(frozen=True)
class CheckResult:
    rows: int
    files: int
    problems: list[Problem]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def archive_files(archive_dir: Path) -> Iterator[str]:
    """Relative paths of the archived instance files (the index and temporary files left out)."""
    if not archive_dir.is_dir():
        return
    for folder, dirs, files in os.walk(archive_dir):
        dirs[:] = [d for d in dirs if d != INDEX_DIR and not d.startswith(".")]
        for name in files:
            if name.endswith(".dcm") and not name.startswith("."):
                yield Path(folder, name).relative_to(archive_dir).as_posix()


def check(store: CatalogStore, archive_dir: Path, hashes: bool = True) -> CheckResult:
    """Compare the current instance rows with the archive; `hashes` also reads every file."""
    manifest = store.read_manifest()
    on_disk = store.part_files()
    problems = [
        Problem("missing-part", p.path, "listed in the manifest, not on disk")
        for p in manifest.parts
        if p.path not in on_disk
    ]
    if problems:  # the views would fail on the missing parts
        return CheckResult(0, 0, problems)
    con = duckdb.connect()
    try:
        attach(con, store, manifest)
        rows = con.execute(
            "SELECT archive_relpath, file_size, sha256, sop_instance_uid FROM instances"
        ).fetchall()
    finally:
        con.close()
    recorded = {str(r[0]): r for r in rows}

    def examine(row: tuple) -> Problem | None:
        relpath, size, sha256, uid = row
        path = archive_dir / relpath
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            return Problem("missing-file", relpath, f"instance {uid} has no archive file")
        if actual != size:
            return Problem("size-differs", relpath, f"{actual} bytes, the catalog says {size}")
        if hashes and _sha256(path) != sha256:
            return Problem("hash-differs", relpath, "content differs from the recorded SHA-256")
        return None

    with ThreadPoolExecutor(max_workers=4) as pool:  # hashing releases the GIL
        problems += [p for p in pool.map(examine, rows) if p is not None]
    files = 0
    for relpath in archive_files(archive_dir):
        files += 1
        if relpath not in recorded:
            problems.append(
                Problem("no-row", relpath, "archive file without a current catalog row")
            )
    problems.sort(key=lambda p: (p.kind, p.path))
    return CheckResult(len(rows), files, problems)
