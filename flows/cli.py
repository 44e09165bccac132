"""The `dicomflow` command: receiver, autoload, serve, sql, catalog, quarantine, policy, demo,
report and remote nodes.

Only this module exits the process; everything below raises typed errors, which
`main` turns into one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from catalog.store import CatalogError
from flows import importer, progress, remote, report, share, status
from flows.args import int_between
from flows.importer import ImportStopped
from flows.remote import Interrupted, RemoteError
from flows.report import ReportError
from flows.serve import ServeError
from flows.settings import CONFIG_ENV, Settings, SettingsError, load_settings
from receiver.durable import restrict_new_files
from receiver.scp import ReceiverError
from receiver.settings import ReceiverSettings

if TYPE_CHECKING:
    from flows.autoload import AutoloadSummary

EXIT_USAGE = 2
EXIT_FAILURE = 1
MAX_TABLE_ROWS = 10_000_000
"""The most rows `sql --max-rows` shows (DuckDB's table printer takes a C int)."""


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line on stderr instead of the usage and the error."""

    def error(self, message: str) -> NoReturn:
        """Print `dicomflow: <message> (see <command> --help)` and exit with status 2."""
        self.exit(EXIT_USAGE, f"dicomflow: {message} (see {self.prog} --help)\n")


class CommandError(Exception):
    """A command that cannot do what was asked; its message is shown as is."""


def _receiver_settings(settings: Settings, args: argparse.Namespace) -> ReceiverSettings:
    overrides = {
        key: value
        for key, value in (("host", args.host), ("port", args.port), ("ae_title", args.ae_title))
        if value is not None
    }
    if not overrides:
        return settings.receiver
    from pydantic import ValidationError

    try:
        return ReceiverSettings.model_validate(settings.receiver.model_dump() | overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise SettingsError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}") from None


def _stop_on_signal() -> threading.Event:
    """An event set by SIGINT or SIGTERM; install it before serving so no signal is missed."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_receive(settings: Settings, args: argparse.Namespace) -> int:
    from functools import partial

    from flows.logs import configure_logging
    from receiver.pool import start_pool

    configure_logging(settings.data_dir, args.verbose)
    stop = _stop_on_signal()
    pool = start_pool(
        _receiver_settings(settings, args),
        settings.landing,
        settings.move_ledger(),
        settings.served_archive(),
        log_setup=partial(configure_logging, settings.data_dir, args.verbose),
    )
    try:
        stop.wait()
    finally:
        stored, refused = pool.stop()
    print(f"stopped: {stored} stored, {refused} refused")
    return 0


def _print_summary(summary: AutoloadSummary) -> None:
    from flows.summary import summary_lines

    print("\n".join(summary_lines(summary)))


def cmd_autoload(settings: Settings, args: argparse.Namespace) -> int:
    from flows.autoload import autoload, preflight
    from flows.logs import configure_logging

    preflight(settings)
    configure_logging(settings.data_dir, args.verbose)
    summary = autoload()
    _print_summary(summary)
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from flows.autoload import preflight
    from flows.logs import configure_logging
    from flows.serve import serve

    preflight(settings)
    configure_logging(settings.data_dir, args.verbose)
    serve(settings, _receiver_settings(settings, args))
    print("stopped")
    return 0


def cmd_sql(settings: Settings, args: argparse.Namespace) -> int:
    import duckdb

    import catalog
    from catalog.export import ExportError, choose_format, export

    store = settings.catalog_store()
    if store.read_manifest().generation == 0:
        print(f"dicomflow: note: no catalog at {settings.catalog_location} yet", file=sys.stderr)
    out = Path(args.out) if args.out else None
    con = catalog.connect(store)
    try:
        fmt = choose_format(args.format, out)
        statements = con.extract_statements(args.query)
        if not statements:
            raise CommandError("sql: no statement given, e.g. \"SELECT * FROM studies\"")
        if len(statements) > 1:
            raise CommandError(
                f"sql: one statement at a time ({len(statements)} given, separated by ';')"
            )
        relation = con.sql(args.query)
        if relation is None:  # a statement without a result
            return 0
        rows = export(relation, fmt, out, max_rows=args.max_rows)
    except duckdb.Error as exc:
        raise CommandError(f"SQL error: {str(exc).splitlines()[0]}") from None
    except (ExportError, OSError) as exc:
        raise CommandError(str(exc)) from None
    if out is not None:
        print(f"wrote {rows} rows to {out}", file=sys.stderr)
    return 0


def cmd_catalog_compact(settings: Settings, args: argparse.Namespace) -> int:
    """Merge small parts now (the `catalog-compact` deployment does it on a schedule)."""
    from catalog.compact import compact

    with progress.bar("compacting", None, progress.wanted(args.progress)) as bar:
        result = compact(
            settings.catalog_store(),
            settings.catalog.keep_replaced_seconds,
            on_merged=lambda done, total: bar.update(done, total),
        )
    for partition, parts in result.partitions.items():
        print(f"  {partition}: {parts} parts -> 1")
    print(
        f"merged {result.merged} parts into {result.written}, deleted {result.deleted} "
        f"old files in {result.seconds:.1f} s (merged-away parts stay for "
        f"catalog.keep_replaced_seconds = {settings.catalog.keep_replaced_seconds:g} s, "
        "for readers still using them)"
    )
    return 0


def cmd_catalog_export(settings: Settings, args: argparse.Namespace) -> int:
    """Write the catalog as one DuckDB file, for the DuckDB CLI and notebooks."""
    from catalog.export import ExportError, export_database

    out = Path(args.out)
    try:
        counts = export_database(settings.catalog_store(), out)
    except (ExportError, OSError) as exc:
        raise CommandError(str(exc)) from None
    shown = ", ".join(f"{table} {rows}" for table, rows in counts.items())
    print(
        f"wrote {out} ({shown}); open it with the DuckDB CLI (duckdb {shlex.quote(str(out))}) "
        f"or in Python: duckdb.connect({str(out)!r}, read_only=True)"
    )
    return 0


def cmd_catalog_check(settings: Settings, args: argparse.Namespace) -> int:
    """Every current row has its archive file (size, hash) and every archive file a row."""
    from catalog.check import check

    result = check(settings.catalog_store(), settings.archive, hashes=not args.no_hash)
    for problem in result.problems:
        print(problem)
    verdict = f"{len(result.problems)} problems" if result.problems else "ok"
    hashed = "sizes" if args.no_hash else "sizes and SHA-256"
    print(f"{verdict}: {result.rows} catalog rows, {result.files} archive files ({hashed} checked)")
    return EXIT_FAILURE if result.problems else 0


def _chosen_quarantine(settings: Settings, args: argparse.Namespace) -> list:
    from tasks.quarantine import entries

    found = entries(settings.quarantine)
    names = set(getattr(args, "names", None) or [])
    unknown = names - {e.name for e in found}
    if unknown:
        raise CommandError(f"not in quarantine: {', '.join(sorted(unknown))}")
    return [
        e
        for e in found
        if (not args.reason or e.reason == args.reason) and (not names or e.name in names)
    ]


def cmd_quarantine_list(settings: Settings, args: argparse.Namespace) -> int:
    """The files in quarantine, oldest first, with their reasons."""
    chosen = _chosen_quarantine(settings, args)
    for entry in chosen:
        when = f"{entry.time:%Y-%m-%d %H:%M:%S}" if entry.time else "?"
        size = f"{entry.size} B" if entry.size is not None else "(file gone back to landing)"
        detail = entry.detail if len(entry.detail) <= 100 else entry.detail[:97] + "..."
        print(f"{entry.name}  {entry.reason}  {when}  {size}\n    {detail}")
    by_reason: dict[str, int] = defaultdict(int)
    for entry in chosen:
        by_reason[entry.reason] += 1
    counts = ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items()))
    print(
        f"{len(chosen)} quarantined files{': ' + counts if counts else ''} ({settings.quarantine})"
    )
    return 0


RETRY_LOCK_WAIT_SECONDS = 600.0
"""How long `quarantine retry` waits for a running autoload to finish."""


def cmd_quarantine_retry(settings: Settings, args: argparse.Namespace) -> int:
    """Move quarantined files back into landing, so autoload tries them again."""
    from flows.locks import autoload_lock, exclusive
    from tasks.operations import record_quarantine
    from tasks.pseudonyms import Pseudonymizer
    from tasks.quarantine import QuarantineError, release

    chosen = _chosen_quarantine(settings, args)
    moved = 0
    # Autoload moves files into quarantine: never at the same time as this.
    with exclusive(autoload_lock(settings.data_dir), RETRY_LOCK_WAIT_SECONDS) as owner:
        if not owner:
            raise CommandError(
                f"an autoload run is still working after {RETRY_LOCK_WAIT_SECONDS:.0f} s;"
                " try again later"
            )
        try:
            for entry in chosen:
                if release(entry, settings.landing) is not None:
                    moved += 1
        except QuarantineError as exc:
            raise CommandError(f"{exc} ({moved} moved before)") from None
        finally:
            keys = Pseudonymizer(settings.salt())
            record_quarantine(settings.catalog_store(), settings.quarantine, "retry", keys)
    print(f"moved {moved} files back to landing ({settings.landing})")
    if not moved:
        return 0
    if args.autoload:
        return cmd_autoload(settings, args)
    print("`dicomflow autoload` (or the next scheduled run) processes them")
    return 0


def cmd_conformance(settings: Settings, args: argparse.Namespace) -> int:
    from receiver.conformance import conformance

    text = conformance(settings.receiver, settings.scu)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_policy(settings: Settings, args: argparse.Namespace) -> int:
    """Print the rule each attribute gets under the configured options and site rules."""
    from tasks.policy import build_policy
    from tasks.profile import ProfileError
    from tasks.rules import RulesError

    try:
        policy = build_policy(settings.anonymize.options, settings.anonymize.site_rules)
    except (ProfileError, RulesError) as exc:
        raise SettingsError(f"anonymize: {exc}") from None
    try:
        rows = [r for a in args.attributes for r in policy.lookup(a)] or policy.describe()
    except LookupError as exc:
        raise CommandError(str(exc)) from None
    print("De-identification Method:")
    print("\n".join(f"  {value}" for value in policy.method()))
    width = min(40, max(len(r[1]) for r in rows))
    for tag, keyword, action, origin in rows:
        print(f"{tag}  {keyword:<{width}}  {action:<17}  {origin}")
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    import catalog
    from flows.autoload import autoload, preflight
    from flows.demo import send_samples
    from flows.logs import configure_logging

    preflight(settings)
    configure_logging(settings.data_dir, args.verbose)
    print(f"demo data root: {settings.data_dir.resolve()}")
    bars = progress.wanted(args.progress)
    print("sending the sample files over C-STORE ...")
    with progress.bar("sending", None, bars) as bar:
        results, stored = send_samples(settings, lambda done, total: bar.update(done, total))
    refused = [r for r in results if not r.ok]
    print(f"sent {len(results)} files: {stored} stored by the receiver, {len(refused)} not stored")
    print("running the autoload flow ...")
    with progress.bar("autoload", None, bars, counted=False):
        summary = autoload()
    _print_summary(summary)
    con = catalog.connect(settings.catalog_store())
    print("\ninstances per modality:")
    con.sql(
        "SELECT modality, count(*) AS instances, count(DISTINCT series_instance_uid) AS series, "
        "count(DISTINCT study_instance_uid) AS studies FROM instances GROUP BY ALL "
        "ORDER BY instances DESC"
    ).show()
    con.sql(
        "SELECT (SELECT count(*) FROM patients) AS patients, (SELECT count(*) FROM studies) "
        "AS studies, (SELECT count(*) FROM series) AS series, "
        "(SELECT count(*) FROM instances) AS instances"
    ).show()
    if refused:
        print("sample files not stored by the receiver (broken on purpose, mostly):")
        by_reason: dict[str, list[str]] = defaultdict(list)
        for result in refused:
            by_reason[result.error or f"status 0x{result.status:04X}"].append(result.path.name)
        for reason, names in sorted(by_reason.items(), key=lambda item: -len(item[1])):
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            print(f"  {len(names):4d}  {reason}\n        {shown}")
    _print_quarantine(settings.quarantine)
    command = sys.argv[0] if sys.argv[0].endswith("dicomflow") else "dicomflow"
    query = shlex.quote("SELECT * FROM studies")
    print(f"\nquery it: {command} --data-dir {shlex.quote(str(settings.data_dir))} sql {query}")
    return 0


def _print_quarantine(folder: Path) -> None:
    import json

    reasons = sorted(folder.glob("*.reason.json")) if folder.is_dir() else []
    if not reasons:
        return
    print(f"files quarantined by autoload ({folder}):")
    for path in reasons:
        record = json.loads(path.read_text())
        print(f"  {path.name.removesuffix('.reason.json')}: {record['reason']}: {record['detail']}")


def _common_options() -> Parser:
    """Options every command takes, before or after its name; the later one wins."""
    common = Parser(add_help=False)
    keep = argparse.SUPPRESS  # an option given only before the command is not reset after it
    common.add_argument(
        "--config", metavar="FILE", default=keep, help=f"TOML settings file (or ${CONFIG_ENV})"
    )
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        default=keep,
        help="data root, as DICOMFLOW_DATA_DIR (default ./dicomflow-data; demo: ./dicomflow-demo)",
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", default=keep, help="log DICOM traffic too"
    )
    common.add_argument(
        "--debug", action="store_true", default=keep, help="show tracebacks of failures"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = Parser(
        prog="dicomflow",
        description="DICOM receiver, anonymizing autoloader and SQL catalog.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def network_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
        p.add_argument("--port", type=int, help="TCP port (default 11112)")
        p.add_argument("--ae-title", help="our AE title (default DICOMFLOW)")

    receive = sub.add_parser(
        "receive",
        parents=[common],
        help="run the DICOM receiver (C-ECHO, C-STORE; C-FIND, C-MOVE, C-GET of the archive)",
    )
    network_options(receive)
    receive.set_defaults(func=cmd_receive)

    auto = sub.add_parser(
        "autoload", parents=[common], help="run one autoload now: landing -> archive + catalog"
    )
    auto.set_defaults(func=cmd_autoload)

    serve = sub.add_parser(
        "serve", parents=[common], help="receiver plus autoload on its interval; Ctrl-C stops"
    )
    network_options(serve)
    serve.set_defaults(func=cmd_serve)

    sql = sub.add_parser("sql", parents=[common], help="query the catalog with DuckDB SQL")
    sql.add_argument("query", help='e.g. "SELECT modality, count(*) FROM instances GROUP BY ALL"')
    sql.add_argument(
        "--format",
        choices=["table", "csv", "json", "parquet"],
        help="table on screen (default), csv, json (JSON Lines) or parquet; with --out, "
        "the default comes from the file's suffix",
    )
    sql.add_argument("--out", metavar="FILE", help="write the result to FILE instead")
    sql.add_argument(
        "--max-rows",
        type=int_between(1, MAX_TABLE_ROWS),
        default=50,
        help=f"rows shown as a table (50; at most {MAX_TABLE_ROWS:_})",
    )
    sql.set_defaults(func=cmd_sql)

    policy = sub.add_parser(
        "policy",
        parents=[common],
        help="show what anonymization does to each attribute under the current settings",
    )
    policy.add_argument(
        "attributes", nargs="*", metavar="ATTRIBUTE", help="keywords or tags to show (all)"
    )
    policy.set_defaults(func=cmd_policy)

    cat = sub.add_parser(
        "catalog", parents=[common], help="keep the catalog: compact, export, check"
    )
    cat_sub = cat.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    compact = cat_sub.add_parser(
        "compact", parents=[common], help="merge small Parquet parts (readers keep working)"
    )
    progress.add_option(compact)
    compact.set_defaults(func=cmd_catalog_compact)
    export = cat_sub.add_parser(
        "export", parents=[common], help="write the catalog as one DuckDB database file"
    )
    export.add_argument("--out", metavar="FILE", required=True, help="e.g. catalog.duckdb")
    export.set_defaults(func=cmd_catalog_export)
    check = cat_sub.add_parser(
        "check",
        parents=[common],
        help="compare catalog rows with archive files (existence, size, SHA-256)",
    )
    check.add_argument("--no-hash", action="store_true", help="compare sizes only (faster)")
    check.set_defaults(func=cmd_catalog_check)

    quar = sub.add_parser(
        "quarantine", parents=[common], help="list quarantined files, or retry them"
    )
    quar_sub = quar.add_subparsers(dest="quarantine_command", required=True, metavar="ACTION")
    qlist = quar_sub.add_parser("list", parents=[common], help="quarantined files and reasons")
    qlist.add_argument("--reason", metavar="R", help="only this reason, e.g. phi-gate")
    qlist.set_defaults(func=cmd_quarantine_list)
    retry = quar_sub.add_parser(
        "retry",
        parents=[common],
        help="move quarantined files back into landing for autoload (after a rule change)",
    )
    retry.add_argument("names", nargs="*", metavar="NAME", help="quarantine names (default all)")
    retry.add_argument("--reason", metavar="R", help="only files quarantined for this reason")
    retry.add_argument("--autoload", action="store_true", help="run autoload on them right after")
    retry.set_defaults(func=cmd_quarantine_retry)

    statement = sub.add_parser(
        "conformance",
        parents=[common],
        help="write the DICOM conformance statement of this configuration",
    )
    statement.add_argument("--out", metavar="FILE", help="write to FILE (default: stdout)")
    statement.set_defaults(func=cmd_conformance)

    demo = sub.add_parser(
        "demo",
        parents=[common],
        help="send real sample files to a local receiver, autoload, summarize",
    )
    progress.add_option(demo)
    demo.set_defaults(func=cmd_demo)
    remote.add_commands(sub, common)
    share.add_commands(sub, common)
    status.add_commands(sub, common)
    importer.add_commands(sub, common)
    report.add_commands(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("config", "data_dir", "verbose", "debug"):
        if not hasattr(args, name):
            setattr(args, name, None if name in ("config", "data_dir") else False)
    # Hospital networks are offline: no usage reports from the Prefect servers we start.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Flow runs load settings themselves (also in served subprocesses): pass via environment.
    if args.config:
        os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
    if args.data_dir:
        os.environ["DICOMFLOW_DATA_DIR"] = str(Path(args.data_dir).resolve())
    elif args.command == "demo" and "DICOMFLOW_DATA_DIR" not in os.environ:
        os.environ["DICOMFLOW_DATA_DIR"] = str(Path("dicomflow-demo").resolve())
    restrict_new_files()
    try:
        settings = load_settings()
        return int(args.func(settings, args))
    except (
        SettingsError,
        CommandError,
        ServeError,
        ReceiverError,
        RemoteError,
        ReportError,
        CatalogError,
        ImportStopped,
    ) as exc:
        print(f"dicomflow: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, SettingsError) else EXIT_FAILURE
    except Interrupted as exc:
        remote.stop_temporary_servers()
        print(f"dicomflow: {exc}", file=sys.stderr, flush=True)
        # Task threads still sleeping out a retry delay would hold the exit for minutes.
        os._exit(128 + exc.signum)
    except KeyboardInterrupt:
        print(f"dicomflow: {remote.INTERRUPTED}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dicomflow policy | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if args.debug:
            raise
        print(f"dicomflow: {type(exc).__name__}: {exc} (--debug shows more)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
