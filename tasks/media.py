"""Cohort export: archived instances as a DICOM File-set with a DICOMDIR, or a zip.

pydicom's FileSet is the File-set Creator (PS3.10, the General Purpose media
profiles of PS3.11): it lays the files out as ``PTxxxxxx/STxxxxxx/SExxxxxx/IMxxxxxx``
and writes the DICOMDIR that indexes them. A manifest of the exported rows goes
beside it, so a recipient knows what each file is without reading DICOM.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.fileset import FileInstance, FileSet

from receiver.durable import fsync_dir, temp_path_for
from tasks.replacements import dummy

FILESET_ID = "DICOMFLOW"
MANIFEST = "manifest"


class ExportError(Exception):
    """The export cannot be written; the message says why in one line."""


@dataclass(frozen=True)
class Exported:
    """Where the export went and how many instances it holds."""

    path: Path
    instances: int
    manifest: Path


_REQUIRED = re.compile(
    r"\(([0-9A-F]{4}),([0-9A-F]{4})\) '[^']*' element (cannot be empty|is missing)"
)
"""How pydicom's record creators name a Type 1 directory record key the instance lacks."""


def add_to_fileset(fileset: FileSet, ds: Dataset) -> FileInstance:
    """Add `ds`; a key its directory record needs (PS3.3 F.5, Type 1) but anonymization
    emptied, such as Study Date, gets our dummy value in the copy on media and its record,
    so the two agree."""
    for _ in range(8):
        try:
            return fileset.add(ds)
        except ValueError as exc:
            found = _REQUIRED.search(str(exc))
            if found is None:
                raise
            tag = int(found[1] + found[2], 16)
            value = dummy(str(dictionary_VR(tag)))
            keyword = keyword_for_tag(tag)
            if value in (None, "") or not keyword or getattr(ds, keyword, None) == value:
                raise
            setattr(ds, keyword, value)
    return fileset.add(ds)


def _manifest_rows(
    rows: Sequence[dict[str, object]], fileset_paths: Sequence[str]
) -> list[dict[str, object]]:
    return [{"fileset_path": where, **row} for where, row in zip(fileset_paths, rows, strict=True)]


def _scalar(value: object) -> object:
    if value is None or isinstance(value, str | int | float | bool | dt.date | dt.datetime):
        return value
    return str(value)


def write_manifest(folder: Path, rows: list[dict[str, object]]) -> Path:
    """manifest.parquet (every column as selected) and manifest.csv (values as text)."""
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, folder / f"{MANIFEST}.parquet", compression="zstd")
    flat = pa.Table.from_pylist([{k: _scalar(v) for k, v in row.items()} for row in rows])
    pa_csv.write_csv(flat, folder / f"{MANIFEST}.csv")
    return folder / f"{MANIFEST}.parquet"


def _fileset_into(
    sources: Sequence[Path], rows: Sequence[dict[str, object]], out: Path
) -> Exported:
    """Write the File-set, DICOMDIR and manifest into the new folder `out`, fsynced."""
    fileset = FileSet()
    fileset.ID = FILESET_ID
    uids = []
    for source in sources:
        try:
            uids.append(str(add_to_fileset(fileset, dcmread(source)).SOPInstanceUID))
        except (ValueError, KeyError, AttributeError, OSError) as exc:
            raise ExportError(f"{source} cannot go on media: {exc}") from None
    out.mkdir(parents=True)
    try:
        fileset.write(out)
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot write the File-set to {out}: {exc}") from None
    written = {
        str(i.SOPInstanceUID): Path(i.path).resolve().relative_to(out).as_posix() for i in fileset
    }
    manifest = write_manifest(out, _manifest_rows(rows, [written[uid] for uid in uids]))
    for folder, _, files in os.walk(out):
        for name in files:
            with open(Path(folder) / name, "rb+") as fh:
                os.fsync(fh.fileno())
        fsync_dir(Path(folder))
    return Exported(out, len(uids), manifest)


def write_fileset(
    sources: Sequence[Path], rows: Sequence[dict[str, object]], out: Path
) -> Exported:
    """Write `sources` as a File-set with DICOMDIR into the new or empty folder `out`.

    It is built in a hidden folder beside `out` and renamed into place when complete,
    so a failed export leaves nothing that looks like one.
    """
    out = out.resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an empty folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise ExportError(f"cannot write into {out.parent}: {exc.strerror or exc}") from None
    try:
        exported = _fileset_into(sources, rows, staging / "set")
        if out.exists():
            out.rmdir()
        os.replace(exported.path, out)
        fsync_dir(out.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Exported(out, exported.instances, out / exported.manifest.name)


def write_zip(sources: Sequence[Path], rows: Sequence[dict[str, object]], out: Path) -> Exported:
    """The same File-set, DICOMDIR and manifest, as one zip file written atomically."""
    out = out.resolve()
    if out.exists():
        raise ExportError(f"{out} exists already")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    except OSError as exc:
        raise ExportError(f"cannot write into {out.parent}: {exc.strerror or exc}") from None
    partial = temp_path_for(out)
    try:
        exported = _fileset_into(sources, rows, staging / "fileset")
        with zipfile.ZipFile(partial, "x", compression=zipfile.ZIP_DEFLATED) as archive:
            for folder, _, files in sorted(os.walk(exported.path)):
                for name in sorted(files):
                    path = Path(folder) / name
                    archive.write(path, path.relative_to(exported.path).as_posix())
        with open(partial, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, out)
        fsync_dir(out.parent)
    finally:
        partial.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return Exported(out, exported.instances, Path(MANIFEST + ".parquet"))
