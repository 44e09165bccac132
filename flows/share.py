"""`dicomflow send | export`: hand archived instances onward, to a node or on media.

Both take their instances from the catalog (`--study`, `--series`, or any `--sql`
query returning ``archive_path``), so what leaves the archive is always what the
catalog says is there, and always anonymized.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows import progress
from flows.args import positive_int
from flows.remote import RemoteError, _peer
from flows.settings import Settings

if TYPE_CHECKING:  # imported when a command runs: `dicomflow --help` stays quick
    from catalog.selection import Selected
    from receiver.send import SendReport, Sent


def _selection(settings: Settings, args: argparse.Namespace) -> list[Selected]:
    from catalog.selection import SelectionError, select_archived

    try:
        return select_archived(
            settings.catalog_store(),
            archive=settings.archive,
            study=args.study,
            series=args.series,
            sql=args.sql,
        )
    except SelectionError as exc:
        raise RemoteError(str(exc)) from None


def report_lines(report: SendReport, limit: int = 20) -> list[str]:
    """The summary a user reads: counts, then each failure with its meaning."""
    lines = [
        f"sent {report.sent}, warnings {report.warnings}, failed {len(report.failed)} "
        f"of {len(report.results)}"
    ]
    for meaning, count in Counter(r.describe() for r in report.results if r.status).items():
        if not meaning.startswith("0x0000"):
            lines.append(f"  {count} x {meaning}")
    for result in report.failed[:limit]:
        lines.append(f"  failed: {result.path.name}: {result.describe()}")
    if len(report.failed) > limit:
        lines.append(f"  ... and {len(report.failed) - limit} more")
    return lines


def cmd_send(settings: Settings, args: argparse.Namespace) -> int:
    from receiver.scu import ScuError
    from receiver.send import send

    peer = _peer(settings, args)
    selected = _selection(settings, args)
    with progress.bar(f"send to {args.node}", len(selected), progress.wanted(args.progress)) as bar:

        def advance(_: Sent) -> None:
            bar.advance()

        try:
            report = send(
                peer, [s.path for s in selected], batch_size=args.batch_size, on_sent=advance
            )
        except ScuError as exc:
            raise RemoteError(str(exc)) from None
    print("\n".join(report_lines(report)))
    if report.failed:
        raise RemoteError(f"{len(report.failed)} instance(s) not sent (tried twice)")
    return 0


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    from tasks.media import ExportError, write_fileset, write_zip

    selected = _selection(settings, args)
    out = Path(args.out)
    sources, rows = [s.path for s in selected], [s.row for s in selected]
    try:
        as_zip = args.zip or out.suffix.lower() == ".zip"
        exported = write_zip(sources, rows, out) if as_zip else write_fileset(sources, rows, out)
    except ExportError as exc:
        raise RemoteError(str(exc)) from None
    print(f"exported {exported.instances} instances to {exported.path} (DICOMDIR, manifest)")
    return 0


def _selection_options(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--study", metavar="UID", help="an archived Study Instance UID")
    which.add_argument("--series", metavar="UID", help="an archived Series Instance UID")
    which.add_argument(
        "--sql",
        metavar="QUERY",
        help="a catalog query returning archive_path, e.g. "
        "\"SELECT archive_path FROM instances WHERE modality = 'CT'\"",
    )


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register send and export on the `dicomflow` parser."""
    send_p = sub.add_parser(
        "send", parents=[common], help="C-STORE archived instances to a remote node"
    )
    send_p.add_argument("node", metavar="NODE", help="a [nodes.NAME], or AETITLE@host:port")
    _selection_options(send_p)
    send_p.add_argument(
        "--batch-size", type=positive_int, default=500, help="instances per association (500)"
    )
    progress.add_option(send_p)
    send_p.set_defaults(func=cmd_send)

    export_p = sub.add_parser(
        "export", parents=[common], help="write archived instances as a DICOM File-set"
    )
    _selection_options(export_p)
    export_p.add_argument("--out", required=True, metavar="PATH", help="new folder (or .zip)")
    export_p.add_argument("--zip", action="store_true", help="one zip file instead of a folder")
    export_p.set_defaults(func=cmd_export)
