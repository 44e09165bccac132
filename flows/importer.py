"""`dicomflow import PATH...`: existing folders, DICOMDIR media and zips into landing."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flows import progress
from flows.settings import Settings

SHOWN_FAILURES = 20
"""Failures listed one per line; the rest are counted."""


class ImportStopped(Exception):
    """The import stopped; the message says why in one line."""


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from receiver.landing import LandingZone
    from receiver.space import NoRoom
    from tasks.importing import import_into

    paths = [Path(p) for p in args.paths]
    landing = LandingZone(settings.landing)
    counts = {"imported": 0, "skipped": 0, "failed": 0}
    with progress.bar("importing", None, progress.wanted(args.progress)) as bar:

        def seen(where: str, outcome: str) -> None:
            counts[outcome] += 1
            bar.update(sum(counts.values()), text=", ".join(f"{v} {k}" for k, v in counts.items()))

        try:
            report = import_into(paths, landing, settings.receiver.min_free_bytes, seen)
        except NoRoom as exc:
            raise ImportStopped(f"import stopped after {counts['imported']} files: {exc}") from None
    media = f"read {report.dicomdirs} DICOMDIR; " if report.dicomdirs else ""
    print(
        f"imported {report.imported} files into {settings.landing}; {media}"
        f"skipped {report.skipped} that are not DICOM; {len(report.failed)} failed"
    )
    for where, why in report.failed[:SHOWN_FAILURES]:
        print(f"  failed: {where}: {why}")
    if len(report.failed) > SHOWN_FAILURES:
        print(f"  ... and {len(report.failed) - SHOWN_FAILURES} more failed")
    if args.autoload and report.imported:
        from flows.autoload import autoload

        with progress.bar("autoload", None, progress.wanted(args.progress), counted=False):
            summary = autoload()
        print(
            f"autoload: archived {summary.archived}, new versions {summary.versions}, "
            f"duplicates {summary.duplicates}, "
            f"quarantined {sum(summary.quarantined.values())}"
        )
    return 1 if report.failed else 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register import on the `dicomflow` parser."""
    parser = sub.add_parser(
        "import",
        parents=[common],
        help="copy DICOM files from folders, DICOMDIR media or zips into landing",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="folder, DICOMDIR or .zip")
    parser.add_argument("--autoload", action="store_true", help="run autoload afterwards")
    progress.add_option(parser)
    parser.set_defaults(func=cmd_import)
