"""`dicomflow report --out report.html`: the catalog's charts on one page to share."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from flows.args import iso_date
from flows.settings import Settings


class ReportError(Exception):
    """The report cannot be written; one line says why."""


def check_folder(out: Path) -> None:
    """Fail before the queries and charts, not after, when `out` has no folder to go in."""
    if not out.parent.is_dir():
        raise ReportError(f"--out {out}: folder {out.parent} does not exist")


def write_page(page: str, out: Path) -> None:
    """Write `page` to `out`, or raise `ReportError` naming the path and the cause."""
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ReportError(f"--out {out}: {exc.strerror or exc}") from None


def cmd_report(settings: Settings, args: argparse.Namespace) -> int:
    import catalog
    from catalog.report_data import gather
    from catalog.report_html import render

    if not args.out.strip():
        raise ReportError("--out: empty path")
    out = Path(args.out)
    check_folder(out)
    store = settings.catalog_store()
    notice = None  # after the page is written, so a bad --out stays the only line
    if not settings.data_dir.is_dir() and settings.catalog_dir is None:
        notice = (
            f"warning: data root {settings.data_dir} does not exist "
            "(--data-dir or DICOMFLOW_DATA_DIR?); the page shows an empty catalog"
        )
    elif store.read_manifest().generation == 0:
        notice = f"note: no catalog at {settings.catalog_location} yet"
    data = gather(catalog.connect(store), args.since)
    write_page(render(data, str(settings.catalog_location)), out)
    if notice:
        print(f"dicomflow: {notice}", file=sys.stderr)
    shown = "empty" if data.empty else f"{data.totals.instances} instances"

    print(f"wrote {out} (catalog: {shown})")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register report on the `dicomflow` parser."""
    parser = sub.add_parser(
        "report",
        parents=[common],
        help="write an HTML page of charts: arrivals per day, modalities, SOP classes, "
        "transfer syntaxes, quarantine, archive growth",
    )
    parser.add_argument("--out", required=True, metavar="FILE", help="e.g. report.html")
    parser.add_argument(
        "--since", type=iso_date, metavar="DATE", help="charts from this UTC day on (YYYY-MM-DD)"
    )
    parser.set_defaults(func=cmd_report)
