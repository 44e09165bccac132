"""Where the catalog lives and how it changes: Parquet parts, listed by one manifest.

Layout under the catalog root, a local folder or an fsspec URL::

    _manifest.json                                   the parts that make the catalog now
    <table>/ingest_date=YYYY-MM-DD/part-<time>-<id>.parquet

A part is invisible until the manifest lists it, and the manifest is replaced
atomically (a rename on a local disk, one PUT on object storage): a reader sees
every table of a batch, or none of it. Parts a compaction merged away leave the
manifest at once but stay on disk for a grace period, so a reader that listed
them a moment before keeps working. Readers take no lock; writers hold a lock
file only while they swap the manifest.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from catalog.schema import PARTITION_COLUMN, TABLE_BY_NAME, arrow_schema, layout
from receiver.durable import fsync_dir, write_atomic, write_atomic_with

MANIFEST = "_manifest.json"
FORMAT = 1
COMPRESSION = "zstd"
ROW_GROUP_ROWS = 122_880
"""DuckDB's own row-group size: it reads one row group per thread."""

WRITE_ORDER = ("patients", "studies", "series", "instances", "records", "superseded")


class CatalogError(Exception):
    """The catalog cannot be read or written as asked; the message says why in one line."""


@dataclass(frozen=True)
class Part:
    """One Parquet file of one table, relative to the catalog root.

    Compaction sorts the rows of a versioned table into parts of current rows and
    parts of superseded ones, so that the current views read the first kind as they
    are, instead of joining every row against `superseded` (which means reading
    every key: most of a query's time).
    """

    table: str
    path: str
    rows: int
    bytes: int
    generation: int = 0
    """Manifest generation that published the part (0: before generations were kept)."""
    current_as_of: int | None = None
    """Set by compaction: no row here is superseded by a `superseded` part of this
    generation or earlier."""
    replaced: bool = False
    """Set by compaction: every row here is superseded; the current views skip the part."""
    layout: str = ""
    """`catalog.schema.layout` of the columns written ("": unknown, from older code)."""

    @property
    def ingest_date(self) -> str:
        """The partition the part belongs to, from its folder name."""
        folder = self.path.split("/")[-2]
        return folder.removeprefix(f"{PARTITION_COLUMN}=")


@dataclass(frozen=True)
class Retired:
    """A part no longer in the catalog, kept until `retired_at` + grace for open readers."""

    path: str
    retired_at: datetime


@dataclass
class Manifest:
    """The state of the catalog: which parts make each table, and what was read from logs."""

    generation: int = 0
    parts: list[Part] = field(default_factory=list)
    retired: list[Retired] = field(default_factory=list)
    receipt_offsets: dict[str, int] = field(default_factory=dict)
    """Receipts logs read so far: a hash of each log's first line -> bytes consumed."""

    def of(self, table: str) -> list[Part]:
        return [p for p in self.parts if p.table == table]

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": FORMAT,
                "generation": self.generation,
                "written_at": datetime.now(UTC).isoformat(),
                "parts": [p.__dict__ for p in self.parts],
                "retired": [
                    {"path": r.path, "retired_at": r.retired_at.isoformat()} for r in self.retired
                ],
                "receipt_offsets": self.receipt_offsets,
            },
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        try:
            raw = json.loads(data)
            if raw.get("format") != FORMAT:
                raise CatalogError(f"{where}: unknown manifest format {raw.get('format')!r}")
            return cls(
                generation=int(raw["generation"]),
                parts=[Part(**p) for p in raw["parts"]],
                retired=[
                    Retired(r["path"], datetime.fromisoformat(r["retired_at"]))
                    for r in raw["retired"]
                ],
                receipt_offsets={str(k): int(v) for k, v in raw["receipt_offsets"].items()},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CatalogError(f"{where} is damaged: {type(exc).__name__}: {exc}") from None


def _is_url(location: str) -> bool:
    return "://" in location or "::" in location


class CatalogStore:
    """A catalog root on a filesystem: reads the manifest, writes parts, swaps the manifest.

    `location` is a local folder, or any fsspec URL (``file://``, ``memory://``,
    ``s3://`` ... with the matching fsspec package installed); `storage_options`
    go to fsspec. Writers on one machine are serialized by `lock_path` (a local
    file); only one machine may write a catalog.
    """

    def __init__(
        self,
        location: str | Path,
        storage_options: Mapping[str, Any] | None = None,
        lock_path: Path | None = None,
    ) -> None:
        text = str(location)
        self.location = text
        if isinstance(location, Path) or not _is_url(text) or text.startswith("file://"):
            local = Path(text.removeprefix("file://")).expanduser().absolute()
            self.fs: fsspec.AbstractFileSystem = LocalFileSystem()
            self.root = str(local)
            self.local_root: Path | None = local
        else:
            try:
                self.fs, self.root = fsspec.url_to_fs(text, **dict(storage_options or {}))
            except (ImportError, ValueError) as exc:
                raise CatalogError(f"catalog {text}: {exc}") from None
            self.root = self.root.rstrip("/")
            self.local_root = None
        if lock_path is None:
            if self.local_root is not None:
                lock_path = self.local_root / ".lock"
            else:
                digest = hashlib.sha256(text.encode()).hexdigest()[:16]
                lock_path = Path(tempfile.gettempdir()) / f"dicomflow-catalog-{digest}.lock"
        self.lock_path = lock_path

    def __repr__(self) -> str:
        return f"CatalogStore({self.location!r})"

    # -- paths ------------------------------------------------------------------------------

    def path(self, relpath: str) -> str:
        """The filesystem path of `relpath` under the root."""
        return f"{self.root}/{relpath}"

    def uri(self, relpath: str) -> str:
        """What DuckDB opens for `relpath`: a local path, or a URL of the registered fs."""
        if self.local_root is not None:
            return str(self.local_root / relpath)
        return str(self.fs.unstrip_protocol(self.path(relpath)))

    # -- manifest ---------------------------------------------------------------------------

    def read_manifest(self) -> Manifest:
        """The catalog as of now; an empty one where nothing was written yet."""
        where = self.uri(MANIFEST)
        try:
            data = self.fs.cat_file(self.path(MANIFEST))
        except FileNotFoundError:
            return Manifest()
        except OSError as exc:
            raise CatalogError(f"cannot read {where}: {exc}") from None
        return Manifest.from_json(data, where)

    def _write_manifest(self, manifest: Manifest) -> None:
        data = manifest.to_json()
        if self.local_root is not None:
            write_atomic(self.local_root / MANIFEST, data)
        else:
            self.fs.pipe_file(self.path(MANIFEST), data)  # one PUT: all or nothing

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the writers' lock (blocking): one manifest swap at a time."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def commit(self, change: Callable[[Manifest], None]) -> Manifest:
        """Apply `change` to the latest manifest and publish it as the next generation.

        Parts it adds without a generation get this one.
        """
        with self.locked():
            manifest = self.read_manifest()
            listed = {p.path for p in manifest.parts}
            change(manifest)
            manifest.generation += 1
            manifest.parts = [
                p
                if p.generation or p.path in listed
                else replace(p, generation=manifest.generation)
                for p in manifest.parts
            ]
            self._write_manifest(manifest)
            return manifest

    # -- parts ------------------------------------------------------------------------------

    def write_part(self, table: str, rows: pa.Table, now: datetime | None = None) -> Part:
        """Write `rows` as a new part of `table`, sorted for pruning; not yet in the manifest."""
        now = now or datetime.now(UTC)
        spec = TABLE_BY_NAME[table]
        rows = rows.select(spec.names).cast(arrow_schema(table))
        if spec.sort and rows.num_rows > 1:
            rows = rows.sort_by([(c, "ascending") for c in spec.sort])
        relpath = (
            f"{table}/{PARTITION_COLUMN}={now:%Y-%m-%d}/"
            f"part-{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:12]}.parquet"
        )
        writer = partial(
            pq.write_table, rows, compression=COMPRESSION, row_group_size=ROW_GROUP_ROWS
        )
        if self.local_root is not None:
            final = write_atomic_with(self.local_root / relpath, writer)
            size = final.stat().st_size
        else:
            target = self.path(relpath)
            self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            with self.fs.open(target, "wb") as fh:
                writer(fh)
            size = int(self.fs.size(target))
        return Part(table, relpath, rows.num_rows, size, layout=layout(table))

    def append(
        self,
        tables: Mapping[str, pa.Table | list[dict[str, Any]]],
        receipt_offsets: Mapping[str, int] | None = None,
    ) -> list[Part]:
        """Write each non-empty table as one part, then publish them all in one manifest swap."""
        now = datetime.now(UTC)
        order = [t for t in WRITE_ORDER if t in tables] + [
            t for t in tables if t not in WRITE_ORDER
        ]
        parts = []
        for table in order:
            rows = tables[table]
            if isinstance(rows, list):
                if not rows:
                    continue
                names = TABLE_BY_NAME[table].names
                rows = pa.Table.from_pylist(
                    [{n: r.get(n) for n in names} for r in rows], arrow_schema(table)
                )
            if rows.num_rows:
                parts.append(self.write_part(table, rows, now))
        if not parts and not receipt_offsets:
            return []

        def add(manifest: Manifest) -> None:
            manifest.parts.extend(parts)
            if receipt_offsets:
                manifest.receipt_offsets.update(receipt_offsets)

        self.commit(add)
        return parts

    def columns(self, relpath: str) -> set[str]:
        """The column names a part holds, from its Parquet footer."""
        if self.local_root is not None:
            return set(pq.read_schema(self.local_root / relpath).names)
        with self.fs.open(self.path(relpath), "rb") as fh:
            return set(pq.read_schema(fh).names)

    def delete(self, relpath: str) -> None:
        """Remove a part file (gone already is fine)."""
        if self.local_root is not None:
            target = self.local_root / relpath
            target.unlink(missing_ok=True)
            if target.parent.is_dir():
                fsync_dir(target.parent)
        else:
            with suppress(FileNotFoundError):
                self.fs.rm_file(self.path(relpath))

    def part_files(self) -> dict[str, float]:
        """Every Parquet file under the root (relative path -> modification time, epoch s)."""
        found: dict[str, float] = {}
        if self.local_root is not None:
            if not self.local_root.is_dir():
                return found
            for path in self.local_root.rglob("*.parquet"):
                if not path.name.startswith("."):
                    found[path.relative_to(self.local_root).as_posix()] = path.stat().st_mtime
            return found
        try:
            listing = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            return found
        for name, info in listing.items():
            if name.endswith(".parquet"):
                relpath = name[len(self.root) :].lstrip("/")
                found[relpath] = _mtime(info)
        return found


def _mtime(info: Mapping[str, Any]) -> float:
    """Modification time from an fsspec listing entry, whatever the backend calls it."""
    for key in ("mtime", "LastModified", "last_modified", "created", "updated"):
        value = info.get(key)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value).timestamp()
            except ValueError:
                continue
    return datetime.now(UTC).timestamp()  # unknown: treat as new, so never deleted early


def open_store(
    location: CatalogStore | str | Path,
    storage_options: Mapping[str, Any] | None = None,
    lock_path: Path | None = None,
) -> CatalogStore:
    """A `CatalogStore` for `location` (returned as is when it is one already)."""
    if isinstance(location, CatalogStore):
        return location
    return CatalogStore(location, storage_options, lock_path)
