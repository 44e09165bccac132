"""Pick archived instances out of the catalog: by study, by series, or by any SQL query.

Send and export take their instances from here, so a cohort is whatever a
researcher can express in SQL over the catalog views.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

import catalog
from catalog.store import CatalogStore


class SelectionError(Exception):
    """The selection cannot be made; the message says why in one line."""


@dataclass(frozen=True)
class Selected:
    """One archived instance: where its file is, and its catalog row as selected."""

    path: Path
    row: dict[str, object]


def _read_only(con: duckdb.DuckDBPyConnection, location: CatalogStore | Path | str) -> None:
    """After the views exist: no file access beyond the catalog, settings locked.

    A query given to send or export (from the command line or a deployment's form)
    can then read the catalog and nothing else, and write nowhere.
    """
    root = getattr(location, "local_root", None)
    if root is None and not isinstance(location, CatalogStore):
        root = Path(location)
    if root is None:
        return  # an fsspec catalog: DuckDB reads it through fsspec; paths are still checked
    con.execute("SET allowed_directories = [?]", [str(Path(root).resolve())])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def select_archived(
    location: CatalogStore | Path | str,
    *,
    archive: Path,
    study: str | None = None,
    series: str | None = None,
    sql: str | None = None,
) -> list[Selected]:
    """The archived instances of `study`, of `series`, or returned by `sql`.

    `sql` must return an ``archive_path`` column (``SELECT archive_path FROM instances
    WHERE ...``, or ``SELECT * ...``); its other columns are kept for the manifest.
    Every path must lie inside `archive`: nothing else (quarantine, landing) may leave.
    """
    given = [name for name, value in (("study", study), ("series", series), ("sql", sql)) if value]
    if len(given) != 1:
        raise SelectionError("give exactly one of --study, --series or --sql")
    con = catalog.connect(location)
    _read_only(con, location)
    try:
        if study:
            relation = con.execute(
                "SELECT * FROM instances WHERE study_instance_uid = ? ORDER BY archive_relpath",
                [study],
            )
        elif series:
            relation = con.execute(
                "SELECT * FROM instances WHERE series_instance_uid = ? ORDER BY archive_relpath",
                [series],
            )
        else:
            relation = con.execute(str(sql))
        if relation.description is None:
            raise SelectionError("the query returned no result set")
        columns = [d[0] for d in relation.description]
        rows = relation.fetchall()
    except duckdb.Error as exc:
        raise SelectionError(f"SQL error: {str(exc).splitlines()[0]}") from None
    finally:
        con.close()
    if "archive_path" not in columns:
        raise SelectionError(
            "the query must return an archive_path column, e.g. SELECT archive_path FROM instances"
        )
    at = columns.index("archive_path")
    unique = {str(r[at]): dict(zip(columns, r, strict=True)) for r in rows if r[at] is not None}
    selected = [Selected(Path(path), row) for path, row in unique.items()]
    root = archive.resolve()
    outside = [s.path for s in selected if not s.path.resolve().is_relative_to(root)]
    if outside:
        raise SelectionError(
            f"{len(outside)} selected path(s) are not in the archive {root}, first "
            f"{outside[0]}: only archived (anonymized) instances can be sent or exported"
        )
    missing = [s.path for s in selected if not s.path.is_file()]
    if missing:
        raise SelectionError(
            f"{len(missing)} selected file(s) are not in the archive, first {missing[0]}: "
            "run dicomflow catalog check"
        )
    if not selected:
        what = f"study {study}" if study else f"series {series}" if series else "the query"
        raise SelectionError(f"no archived instances for {what}")
    return selected
