"""`dicomflow nodes | echo | find | move | retrieve`: working with remote PACS nodes.

Each command resolves NODE from the ``[nodes.NAME]`` tables of the settings (or an
ad-hoc ``AETITLE@host:port``), C-ECHOes it before every association, and turns
every failure into one line. A C-MOVE to our own AE title needs our receiver up:
the one already listening on the configured port, or one started for the command.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any

from flows import progress
from flows.args import positive_int
from flows.settings import Settings
from receiver.scu import Peer, ScuError, echo, peer_for
from receiver.settings import RemoteNode

LOOPBACK = "127.0.0.1"


class RemoteError(Exception):
    """A remote operation failed; the message is one line for the user."""


def _peer(settings: Settings, args: argparse.Namespace) -> Peer:
    """The node the command names; logging set up as every command that talks DICOM does."""
    from flows.logs import configure_logging

    configure_logging(settings.data_dir, args.verbose)
    if not args.verbose:  # our own messages say what failed; pynetdicom's would repeat it
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    try:
        return peer_for(args.node, settings.nodes, settings.receiver.ae_title, settings.scu)
    except ScuError as exc:
        raise RemoteError(str(exc)) from None


@contextmanager
def cancel_on_interrupt() -> Iterator[threading.Event]:
    """The first Ctrl-C sets the event (the operation sends C-CANCEL and winds down);
    a second one interrupts at once."""
    cancel = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("\ncancelling (Ctrl-C again to abort) ...", file=sys.stderr)

    signal.signal(signal.SIGINT, handler)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def our_receiver(settings: Settings) -> Iterator[str]:
    """Make sure our receiver takes the C-STOREs a C-MOVE to us causes.

    A receiver answering C-ECHO on the configured port (`dicomflow serve` or
    `receive`) is used; otherwise one is started here for the length of the block.
    """
    from receiver.scp import start_receiver

    host = settings.receiver.host
    us = RemoteNode(
        ae_title=settings.receiver.ae_title,
        host=LOOPBACK if host in ("0.0.0.0", "::", "") else host,
        port=settings.receiver.port or 11112,
    )
    try:  # nothing listening is the common case: say so without a failed association
        socket.create_connection((us.host, us.port), timeout=2).close()
        echo(Peer("our receiver", us, settings.receiver.ae_title, settings.scu))
    except (OSError, ScuError):
        pass
    else:
        yield "running"
        return
    receiver = start_receiver(
        settings.receiver, settings.landing, settings.move_ledger(), settings.served_archive()
    )
    try:
        yield "started"
    finally:
        receiver.stop()


# --- nodes and echo ---------------------------------------------------------------------


def cmd_nodes(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.nodes:
        print("no nodes configured: add [nodes.NAME] tables (ae_title, host, port) to the config")
        return 0
    width = max(len(n) for n in settings.nodes)
    for name, node in sorted(settings.nodes.items()):
        print(
            f"{name:<{width}}  {node.ae_title:<16}  {node.host}:{node.port}  "
            f"max {node.max_associations} associations"
        )
    return 0


def cmd_echo(settings: Settings, args: argparse.Namespace) -> int:
    peer = _peer(settings, args)
    failures = 0
    for attempt in range(args.count):
        try:
            ms = echo(peer)
        except ScuError as exc:
            if args.count == 1:
                raise RemoteError(str(exc)) from None
            failures += 1
            print(f"C-ECHO failed: {exc}")
        else:
            print(f"C-ECHO {peer.describe()}: success in {ms:.1f} ms")
        if attempt + 1 < args.count:
            time.sleep(0.5)
    if failures:
        raise RemoteError(f"{failures} of {args.count} C-ECHO failed")
    return 0


# --- find -------------------------------------------------------------------------------


def cmd_find(settings: Settings, args: argparse.Namespace) -> int:
    import duckdb
    import pyarrow as pa

    from catalog.export import ExportError, choose_format, export
    from receiver.query import RETURN_KEYS, as_row, build_identifier, find, parse_keys

    peer = _peer(settings, args)
    level = args.level.upper()
    out = Path(args.out) if args.out else None
    try:
        fmt = choose_format(args.format, out)
        keys = parse_keys(args.key or [])
        identifier = build_identifier(args.root, level, keys)
        with cancel_on_interrupt() as cancel:
            result = find(peer, args.root, identifier, cancel=cancel)
    except (ScuError, ExportError) as exc:  # QueryError is a ScuError
        raise RemoteError(str(exc)) from None
    columns = list(dict.fromkeys([*RETURN_KEYS[level], *keys]))
    rows = [as_row(m, columns) for m in result.matches]
    table = pa.Table.from_pylist(rows, pa.schema([(c, pa.string()) for c in columns]))
    con = duckdb.connect()
    try:
        written = export(con.from_arrow(table), fmt, out, max_rows=args.max_rows)
    except (ExportError, OSError) as exc:
        raise RemoteError(str(exc)) from None
    finally:
        con.close()
    note = " (cancelled)" if result.cancelled else ""
    print(f"{len(rows)} matches, {result.meaning}{note}", file=sys.stderr)
    if out is not None:
        print(f"wrote {written} rows to {out}", file=sys.stderr)
    return 0


# --- move -------------------------------------------------------------------------------


def _move_target(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    """The level and unique keys of a move from --patient/--study/--series/--instance."""
    keys: dict[str, str] = {}
    if args.patient:
        keys["PatientID"] = args.patient
    if args.study:
        keys["StudyInstanceUID"] = args.study
    if args.series:
        keys["SeriesInstanceUID"] = args.series
    if args.instance:
        keys["SOPInstanceUID"] = "\\".join(args.instance)
    for level, keyword in (
        ("IMAGE", "SOPInstanceUID"),
        ("SERIES", "SeriesInstanceUID"),
        ("STUDY", "StudyInstanceUID"),
        ("PATIENT", "PatientID"),
    ):
        if keyword in keys:
            return level, keys
    raise RemoteError("say what to move: --study UID, --series UID, --instance UID or --patient ID")


def cmd_move(settings: Settings, args: argparse.Namespace) -> int:
    from receiver.move import MoveProgress, move, move_identifier
    from receiver.query import QueryError

    peer = _peer(settings, args)
    level, keys = _move_target(args)
    destination = args.dest or settings.receiver.ae_title
    try:
        identifier = move_identifier(args.root, level, keys)  # type: ignore[arg-type]
    except QueryError as exc:
        raise RemoteError(str(exc)) from None

    def show(p: MoveProgress) -> None:
        if not sys.stderr.isatty():
            return
        remaining = "?" if p.remaining is None else p.remaining
        print(
            f"\r  remaining {remaining}, completed {p.completed}, failed {p.failed}, "
            f"warning {p.warning}",
            end="",
            file=sys.stderr,
            flush=True,
        )

    ours = destination == settings.receiver.ae_title
    with our_receiver(settings) if ours else _nothing() as receiver_state:
        if receiver_state == "started":
            print(f"receiving as {destination} on port {settings.receiver.port}", file=sys.stderr)
        ledger = settings.move_ledger()
        try:
            job = f"move-{int(time.time())}"
            with (
                ledger.opened(settings.receiver.ae_title, job) as message_id,
                cancel_on_interrupt() as cancel,
            ):
                result = move(peer, args.root, identifier, destination, message_id, show, cancel)
        except ScuError as exc:
            raise RemoteError(str(exc)) from None
        finally:
            if sys.stderr.isatty():
                print(file=sys.stderr)
    p = result.progress
    print(
        f"C-MOVE {level} to {destination}: {result.meaning}; completed {p.completed}, "
        f"failed {p.failed}, warning {p.warning}"
    )
    if result.category == "Failure":
        hint = result.hint or (
            f"no transfer started: does the node know {destination!r} (AE title, host, port)?"
            if p.completed == 0 and p.failed == 0
            else None
        )
        comment = f" ({result.comment})" if result.comment else ""
        why = f"; {hint}" if hint else ""
        raise RemoteError(f"the move failed: {result.meaning}{comment}{why}")
    if p.failed:
        raise RemoteError(f"{p.failed} sub-operations failed")
    if ours:
        print("the instances are in the landing zone; `dicomflow autoload` archives them")
    return 0


@contextmanager
def _nothing() -> Iterator[str]:
    yield "not needed"


# --- retrieve ---------------------------------------------------------------------------


def _reachable(peer: Peer) -> None:
    """One C-ECHO before a job; `RemoteError` saying why a node cannot be reached."""
    try:
        echo(peer)
    except ScuError as exc:
        message = str(exc)
        prefix = "cannot connect to "
        if message.startswith(prefix):
            message = "cannot reach " + message.removeprefix(prefix)
        raise RemoteError(message) from None


INTERRUPTED = "interrupted (the job can be re-run: it does what is left)"


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped a command; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(INTERRUPTED)
        self.signum = signum


def stop_temporary_servers() -> None:
    """Stop the temporary Prefect server this process started, if any (no PREFECT_API_URL)."""
    try:
        from prefect.server.api.server import SubprocessASGIServer
    except ImportError:  # pragma: no cover - a Prefect without a server
        return
    for server in list(SubprocessASGIServer._instances.values()):
        with suppress(Exception):  # on the way out: nothing left to tell
            server.stop()


def run_interruptibly(work: Any, *args: Any, **kwargs: Any) -> Any:
    """`work(*args, **kwargs)` in a thread, the main thread waiting for it or for a signal.

    Prefect's engine, when it runs in the main thread, turns SIGTERM into a crash it
    reports to the API and then waits for task threads sleeping out their retry delays,
    minutes. Here SIGINT and SIGTERM raise `Interrupted` at once; what the job did is on
    disk, and a re-run does what is left.
    """
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = work(*args, **kwargs)
        except BaseException as exc:  # handed to the main thread
            result["error"] = exc

    received: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    try:
        worker = threading.Thread(target=target, name="dicomflow-flow", daemon=True)
        worker.start()
        while worker.is_alive() and not received:
            worker.join(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise Interrupted(received[0])
    if "error" in result:
        raise result["error"]
    return result["value"]


def cmd_retrieve(settings: Settings, args: argparse.Namespace) -> int:
    from flows.retrieve import RetrieveError, read_requests, retrieve, summary_lines
    from tasks.retrieval import JobError, check_job_id, job_id_for

    if bool(args.job) == bool(args.sql):
        raise RemoteError("give a job file (CSV or Parquet) or --sql QUERY")
    try:
        if args.job_id is not None:
            check_job_id(args.job_id)
        requests = read_requests(args.job, args.sql)
    except (RetrieveError, JobError) as exc:
        raise RemoteError(f"--job-id: {exc}" if isinstance(exc, JobError) else str(exc)) from None
    peer = _peer(settings, args)
    if settings.scu.echo_first:  # a node that is down gets no job: say so at once
        _reachable(peer)
    job_id = args.job_id or job_id_for(args.node, requests)
    job_file = str(Path(args.job).resolve()) if args.job else None
    destination = args.dest or settings.receiver.ae_title
    ours = destination == settings.receiver.ae_title
    with our_receiver(settings) if ours else _nothing():
        done = threading.Event()
        watcher = threading.Thread(
            target=_show_progress,
            args=(settings, job_id, len(requests), done, progress.wanted(args.progress)),
            daemon=True,
        )
        watcher.start()
        try:
            summary = run_interruptibly(
                retrieve,
                node=args.node,
                job_file=job_file,
                sql=args.sql,
                job_id=job_id,
                destination=args.dest,
            )
        finally:
            done.set()
            watcher.join(timeout=2)
    print("\n".join(summary_lines(summary)))
    unfinished = {s: n for s, n in summary.states.items() if s not in ("complete", "skipped")}
    if unfinished:
        for state, reason, n in summary.reasons:
            print(f"  {n} {state}: {reason}", file=sys.stderr)
        what = ", ".join(f"{n} {s}" for s, n in sorted(unfinished.items()))
        raise RemoteError(
            f"not everything is archived ({what}): see {summary.outcome_file}; "
            "run the same job again to do what is left"
        )
    return 0


def _show_progress(
    settings: Settings, job_id: str, total: int, done: threading.Event, shown: bool
) -> None:
    """A progress bar fed by the job's progress file (the flow may run elsewhere), until `done`."""
    from tasks.retrieval import read_progress

    with progress.bar(f"retrieve {job_id}", total, shown) as bar:
        while not done.wait(0.5):
            bar.update(read_progress(settings.retrieve_dir, job_id).get("done", 0))
        bar.update(read_progress(settings.retrieve_dir, job_id).get("done", 0))


# --- the parsers ------------------------------------------------------------------------


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register nodes, echo, find, move and retrieve on the `dicomflow` parser."""
    from receiver.query import LEVELS, ROOTS

    nodes = sub.add_parser("nodes", parents=[common], help="list the configured remote nodes")
    nodes.set_defaults(func=cmd_nodes)

    node_help = "a [nodes.NAME] of the config, or AETITLE@host:port"
    echo_p = sub.add_parser("echo", parents=[common], help="C-ECHO a remote node")
    echo_p.add_argument("node", metavar="NODE", help=node_help)
    echo_p.add_argument("-c", "--count", type=positive_int, default=1, help="how many (1)")
    echo_p.set_defaults(func=cmd_echo)

    find_p = sub.add_parser(
        "find", parents=[common], help="C-FIND on a remote node (patient or study root)"
    )
    find_p.add_argument("node", metavar="NODE", help=node_help)
    find_p.add_argument("--root", choices=ROOTS, default="study", help="information model")
    find_p.add_argument(
        "--level", type=str.upper, choices=LEVELS, default="STUDY", help="query level"
    )
    find_p.add_argument(
        "-k",
        "--key",
        action="append",
        metavar="KEYWORD[=VALUE]",
        help="a matching key such as PatientID=123*, StudyDate=20240101-20240131, "
        "ModalitiesInStudy=CT; without =VALUE, a return key (repeatable)",
    )
    find_p.add_argument("--format", choices=["table", "csv", "json", "parquet"])
    find_p.add_argument("--out", metavar="FILE", help="write the matches to FILE (.csv, .parquet)")
    find_p.add_argument(
        "--max-rows", type=positive_int, default=50, help="rows shown as a table (50)"
    )
    find_p.set_defaults(func=cmd_find)

    move_p = sub.add_parser(
        "move", parents=[common], help="C-MOVE a study, series or instances from a node"
    )
    move_p.add_argument("node", metavar="NODE", help=node_help)
    move_p.add_argument("--root", choices=ROOTS, default="study", help="information model")
    move_p.add_argument("--patient", metavar="ID", help="Patient ID (patient root)")
    move_p.add_argument("--study", metavar="UID", help="Study Instance UID")
    move_p.add_argument("--series", metavar="UID", help="Series Instance UID (needs --study)")
    move_p.add_argument(
        "--instance", metavar="UID", action="append", help="SOP Instance UID (repeatable)"
    )
    move_p.add_argument("--dest", metavar="AETITLE", help="destination (default: our receiver)")
    move_p.set_defaults(func=cmd_move)

    ret = sub.add_parser(
        "retrieve", parents=[common], help="pull a list of studies from a node (Prefect flow)"
    )
    ret.add_argument("job", nargs="?", metavar="JOBFILE", help="CSV or Parquet list of studies")
    ret.add_argument("--node", required=True, metavar="NODE", help=node_help)
    ret.add_argument("--sql", metavar="QUERY", help="DuckDB query giving the list instead")
    ret.add_argument("--job-id", help="name the job (default: derived from node and list)")
    ret.add_argument("--dest", metavar="AETITLE", help="destination (default: our receiver)")
    progress.add_option(ret)
    ret.set_defaults(func=cmd_retrieve)
