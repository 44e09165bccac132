"""Receive throughput: dcmtk storescu into dicomflow, dcmtk storescp and Orthanc, side by side.

Run from the repository root::

    .venv/bin/python bench/receive.py [--count N] [--runs R] [--corpus ct|small|both]

Every receiver gets the same corpus over one association from the same client
(dcmtk ``storescu``), in interleaved runs, each on a fresh, empty storage folder.
storescp and Orthanc cannot be told which address to listen on (they bind
0.0.0.0), so the whole benchmark runs in a private network namespace that holds
only the loopback interface; see `isolate_network`.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydicom import Dataset

# pydicom and numpy are imported inside the functions that use them: numpy starts a
# thread pool on import, and an unprivileged unshare() needs a single-threaded process.

LOOPBACK = "127.0.0.1"
SCU_AET = "BENCHSCU"
NODELAY_ENV = {"TCP_NODELAY": "1"}
"""Debian's dcmtk (and Orthanc, built on it) leave Nagle's algorithm on unless this is
set, which costs about 88 ms per image; it is set for storescu, storescp and Orthanc."""
TCP_LISTEN = "0A"
"""The LISTEN state in /proc/net/tcp."""
START_TIMEOUT = 60.0
STOP_GRACE = 15.0
SEND_TIMEOUT = 900.0
CT_STUDIES = 5
CT_SERIES_PER_STUDY = 2
CT_SCALE = 4
"""CT_small.dcm is 128x128 16-bit; scaling by 4 gives 512x512, 512 KiB of pixel data."""

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFREQ = struct.Struct("16sH22x")


class BenchError(Exception):
    """The benchmark cannot give a trustworthy figure; the message says why."""


@dataclass(frozen=True)
class Corpus:
    """A folder of DICOM files sent as one association."""

    name: str
    folder: Path
    count: int
    nbytes: int


@dataclass(frozen=True)
class Running:
    """A receiver ready to accept: where to send and how to count what it stored."""

    port: int
    ae_title: str
    count_stored: Callable[[], int]


@dataclass(frozen=True)
class Receiver:
    """A named way to start a receiver on a fresh run folder."""

    name: str
    start: Callable[[Path], AbstractContextManager[Running]]
    must_land_all: bool = False
    loopback_only: bool = False


@dataclass
class Result:
    """The runs of one receiver on one corpus."""

    receiver: str
    corpus: Corpus
    seconds: list[float] = field(default_factory=list)
    stored: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def images_per_second(self) -> float:
        return self.corpus.count / self.median

    @property
    def mb_per_second(self) -> float:
        return self.corpus.nbytes / 1e6 / self.median


# --- network isolation -------------------------------------------------------------------


def bring_loopback_up() -> None:
    """A new network namespace starts with ``lo`` down; set IFF_UP with two ioctls."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        current = fcntl.ioctl(sock, SIOCGIFFLAGS, IFREQ.pack(b"lo", 0))
        _, flags = IFREQ.unpack(current)
        fcntl.ioctl(sock, SIOCSIFFLAGS, IFREQ.pack(b"lo", flags | IFF_UP))


def isolate_network() -> str | None:
    """Enter a network namespace with loopback only; return why not, or None on success.

    storescp and Orthanc 1.10 have no listen-address option and bind 0.0.0.0; inside
    this namespace 0.0.0.0 is reachable from loopback alone. Must run before any thread
    starts (unprivileged user namespaces require a single-threaded caller).
    """
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWNET | CLONE_NEWUSER
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(flags) != 0:
        return f"unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())}"
    try:
        if flags & CLONE_NEWUSER:
            Path("/proc/self/setgroups").write_text("deny")
            Path("/proc/self/uid_map").write_text(f"0 {uid} 1")
            Path("/proc/self/gid_map").write_text(f"0 {gid} 1")
        bring_loopback_up()
    except OSError as exc:
        return f"setting up the namespace failed: {exc}"
    names = [name for _, name in socket.if_nameindex()]
    return None if names == ["lo"] else f"unexpected interfaces in namespace: {names}"


# --- corpus --------------------------------------------------------------------------------


def template() -> Dataset:
    """pydicom's CT_small.dcm: a real CT image, Explicit VR Little Endian."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    if path is None:
        raise BenchError("pydicom's test file CT_small.dcm is missing")
    return dcmread(path)


def upscale(ds: Dataset, factor: int) -> None:
    """Blow the pixels up by `factor` per axis so each file is about 512 KB, like a CT slice."""
    import numpy as np

    pixels = np.repeat(np.repeat(ds.pixel_array, factor, axis=0), factor, axis=1)
    ds.PixelData = pixels.astype(ds.pixel_array.dtype).tobytes()
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelSpacing = [float(value) / factor for value in ds.PixelSpacing]


def save(ds: Dataset, folder: Path, index: int) -> int:
    """Write one instance with a fresh SOP Instance UID; return its size in bytes."""
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.InstanceNumber = index + 1
    path = folder / f"{index:06d}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path.stat().st_size


def build_ct(folder: Path, count: int) -> Corpus:
    """`count` 512x512 CT images in a handful of studies of two series each."""
    from pydicom.uid import generate_uid

    ds = template()
    upscale(ds, CT_SCALE)
    per_series = max(1, -(-count // (CT_STUDIES * CT_SERIES_PER_STUDY)))
    nbytes = 0
    for index in range(count):
        if index % (per_series * CT_SERIES_PER_STUDY) == 0:
            ds.StudyInstanceUID = generate_uid()
        if index % per_series == 0:
            ds.SeriesInstanceUID = generate_uid()
        nbytes += save(ds, folder, index)
    return Corpus("ct", folder, count, nbytes)


def build_small(folder: Path, count: int) -> Corpus:
    """`count` copies of CT_small.dcm (~39 KB) that differ only in SOP Instance UID."""
    ds = template()
    nbytes = sum(save(ds, folder, index) for index in range(count))
    return Corpus("small", folder, count, nbytes)


def build_corpus(name: str, workdir: Path, count: int) -> Corpus:
    """Build the named corpus and flush it, so write-back does not hit the first run."""
    folder = workdir / f"corpus-{name}"
    folder.mkdir()
    corpus = (build_ct if name == "ct" else build_small)(folder, count)
    os.sync()
    return corpus


# --- processes -----------------------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on right now (the namespace is private, so it stays free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """Our environment without DICOMFLOW_* (so user settings cannot skew ours), plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DICOMFLOW_")}
    return env | extra


def log_tail(log: Path, lines: int = 15) -> str:
    """The end of a server's log, for error messages."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def listening(port: int) -> bool:
    """Whether a socket listens on `port` in this namespace, per /proc/net/tcp and tcp6.

    Deliberately no connect(): a bare connect-and-close leaves dicomflow (pynetdicom)
    holding a half-open association until its 30 s ACSE timeout, a thread that polls
    every millisecond during the measurement and delays shutdown by 10 s.
    """
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            if state == TCP_LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def wait_for_port(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Poll until the server listens on `port`; fail early if it exits."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{proc.args} exited with {proc.returncode}:\n{log_tail(log)}")
        if listening(port):
            return
        time.sleep(0.02)
    raise BenchError(f"{proc.args} did not listen on port {port} in {START_TIMEOUT:.0f} s")


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the server, give it STOP_GRACE seconds, then kill it; never leave it running."""
    try:
        if proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        print(f"  warning: pid {proc.pid} ignored {sig.name} for {STOP_GRACE:.0f} s; killed")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextmanager
def server(
    cmd: list[str], port: int, log: Path, env: dict[str, str], sig: signal.Signals
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `cmd` until the block ends; yields once it listens on `port`."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for_port(proc, port, log)
        yield proc
    finally:
        stop(proc, sig)


def count_files(folder: Path, pattern: str = "*") -> int:
    """Regular, non-hidden files below `folder` matching `pattern`."""
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.rglob(pattern) if p.is_file() and not p.name.startswith("."))


def first_line(cmd: list[str]) -> str:
    """First line a program prints, for the version report."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        return f"unavailable ({exc})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


# --- receivers -----------------------------------------------------------------------------


def dicomflow_command() -> str:
    """The dicomflow script beside this interpreter (the project's .venv), else on PATH."""
    beside = Path(sys.executable).parent / "dicomflow"
    found = str(beside) if beside.exists() else shutil.which("dicomflow")
    if not found:
        raise BenchError("dicomflow is not installed; run from the project's .venv")
    return found


@contextmanager
def run_ours(run_dir: Path, processes: int = 1) -> Iterator[Running]:
    """dicomflow receive: each instance is written, fsynced and renamed before Success;
    with `processes` > 1, that many receiver processes share the port."""
    port, data = free_port(), run_dir / "data"
    cmd = [dicomflow_command(), "--data-dir", str(data), "receive"]
    cmd += ["--host", LOOPBACK, "--port", str(port), "--ae-title", "DICOMFLOW"]
    env = child_env({"DICOMFLOW_RECEIVER__PROCESSES": str(processes)})
    with server(cmd, port, run_dir / "server.log", env, signal.SIGINT):
        if processes > 1:
            time.sleep(2.0)  # the other processes join the port after the first listens
        yield Running(port, "DICOMFLOW", lambda: count_files(data / "landing", "*.dcm"))


@contextmanager
def run_storescp(run_dir: Path, fork: bool = False) -> Iterator[Running]:
    """dcmtk storescp in its default mode: parse, write the file (no fsync), answer;
    with `fork`, one child process per association (its --fork mode)."""
    port, out = free_port(), run_dir / "out"
    out.mkdir()
    cmd = ["storescp", "-aet", "STORESCP", *(["--fork"] if fork else []), "-od", str(out)]
    cmd.append(str(port))
    with server(cmd, port, run_dir / "server.log", child_env(NODELAY_ENV), signal.SIGTERM):
        yield Running(port, "STORESCP", lambda: count_files(out))


def orthanc_binary() -> str:
    """Orthanc from PATH, else where Debian puts it (/usr/sbin is not on every PATH)."""
    return shutil.which("Orthanc") or "/usr/sbin/Orthanc"


def orthanc_config(run_dir: Path, port: int) -> Path:
    """A minimal Orthanc config: DICOM only, HTTP off, no plugins, storage under run_dir."""
    config = {
        "Name": "dicomflow-bench",
        "StorageDirectory": str(run_dir / "storage"),
        "IndexDirectory": str(run_dir / "index"),
        "DicomServerEnabled": True,
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "HttpServerEnabled": False,
        "HttpPort": free_port(),
        "RemoteAccessAllowed": False,
        "Plugins": [],
        "StorageCompression": False,
        "SyncStorageArea": True,
        "SaveJobs": False,
    }
    path = run_dir / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path


@contextmanager
def run_orthanc(run_dir: Path) -> Iterator[Running]:
    """Orthanc: stores the file (fsynced, SyncStorageArea) and indexes it in SQLite."""
    binary = orthanc_binary()
    port = free_port()
    config = orthanc_config(run_dir, port)
    env = child_env(NODELAY_ENV)
    with server([binary, str(config)], port, run_dir / "server.log", env, signal.SIGTERM):
        yield Running(port, "ORTHANC", lambda: count_files(run_dir / "storage"))


@contextmanager
def run_null(run_dir: Path) -> Iterator[Running]:
    """pynetdicom answering Success and storing nothing (bench/null_scp.py): the ceiling
    of pynetdicom's own network handling, one process, threads per association."""
    port = free_port()
    cmd = [sys.executable, str(Path(__file__).with_name("null_scp.py")), str(port)]
    with server(cmd, port, run_dir / "server.log", child_env({}), signal.SIGTERM):
        yield Running(port, "NULLSCP", lambda: 0)


RECEIVERS = (
    Receiver("dicomflow", run_ours, must_land_all=True, loopback_only=True),
    Receiver("storescp", run_storescp),
    Receiver("orthanc", run_orthanc),
    Receiver("pynetdicom", run_null, loopback_only=True),
)
"""pynetdicom (storing nothing) is a reference, not a contender: it keeps no file."""


# --- measuring -----------------------------------------------------------------------------


def send(corpus: Corpus, running: Running, parallel: int = 1) -> float:
    """Wall time of storescu sending the whole corpus: over one association, or split
    over `parallel` storescu processes at once, one association each."""
    cmd = ["storescu", "-aet", SCU_AET, "-aec", running.ae_title, LOOPBACK, str(running.port)]
    files = sorted(str(p) for p in corpus.folder.rglob("*") if p.is_file())
    shares = [files[i::parallel] for i in range(parallel)] if parallel > 1 else [[]]
    started = time.perf_counter()
    senders = [
        subprocess.Popen(
            cmd + (share or ["+sd", str(corpus.folder)]),
            env=child_env(NODELAY_ENV),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for share in shares
    ]
    outcomes = [
        (s.wait(timeout=SEND_TIMEOUT), s.stderr.read() if s.stderr else "") for s in senders
    ]
    elapsed = time.perf_counter() - started
    for code, err in outcomes:
        if code != 0:
            raise BenchError(f"storescu failed ({code}):\n{err[-2000:]}")
    return elapsed


def measure(
    receiver: Receiver, corpus: Corpus, run_dir: Path, parallel: int = 1
) -> tuple[float, int]:
    """One run on a fresh folder; counts what landed while the receiver still runs."""
    run_dir.mkdir()
    try:
        with receiver.start(run_dir) as running:
            seconds = send(corpus, running, parallel)
            stored = running.count_stored()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        os.sync()  # storescp does not fsync; flush its write-back before the next run
    if receiver.must_land_all and stored != corpus.count:
        raise BenchError(f"{receiver.name} landed {stored} of {corpus.count} files")
    return seconds, stored


def bench_corpus(
    corpus: Corpus, receivers: list[Receiver], runs: int, workdir: Path, parallel: int = 1
) -> list[Result]:
    """Interleave the receivers run by run, so drift in the machine hits all alike."""
    results = [Result(r.name, corpus) for r in receivers]
    for run in range(runs):
        for receiver, result in zip(receivers, results, strict=True):
            run_dir = workdir / f"{receiver.name}-{corpus.name}-{run}"
            seconds, stored = measure(receiver, corpus, run_dir, parallel)
            result.seconds.append(seconds)
            result.stored.append(stored)
            note = "" if stored == corpus.count else f"  MISSING {corpus.count - stored}"
            if receiver.name == "pynetdicom":
                note = "  (keeps nothing)"
            print(
                f"  run {run + 1}/{runs} {corpus.name:5} {receiver.name:9} {seconds:7.2f} s"
                f"  stored {stored}/{corpus.count}{note}",
                flush=True,
            )
    return results


# --- report --------------------------------------------------------------------------------


def print_environment(isolation: str | None) -> None:
    """Machine and versions, so figures can be compared across machines."""
    print(f"date (UTC):  {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}")
    print(f"nproc:       {len(os.sched_getaffinity(0))}    {load_average()}")
    print(f"kernel:      {platform.release()}")
    print(f"python:      {platform.python_version()}")
    print(f"storescu:    {first_line(['storescu', '--version'])}")
    print(f"Orthanc:     {first_line([orthanc_binary(), '--version'])}")
    print(f"pynetdicom:  {version('pynetdicom')}    pydicom: {version('pydicom')}")
    print("TCP_NODELAY=1 is set for storescu, storescp and Orthanc (Debian's dcmtk leaves")
    print("  Nagle's algorithm on otherwise, costing ~88 ms per image); dicomflow sets it itself.")
    if isolation is None:
        print("network:     private namespace with loopback only; storescp and Orthanc cannot be")
        print("  bound to 127.0.0.1 (they listen on 0.0.0.0), here that reaches loopback alone.")
    else:
        print(f"network:     NOT isolated ({isolation})")


def load_average() -> str:
    """Other work on the machine skews every figure; show how much there was."""
    return "load average: " + " ".join(f"{value:.2f}" for value in os.getloadavg())


BASES = ("storescp", "orthanc")
"""The receivers every other one is compared with."""


def ratio(results: list[Result], result: Result, base_name: str) -> float | None:
    """`result`'s throughput over `base_name`'s on the same corpus (None if not run)."""
    base = next((r for r in results if r.receiver == base_name and r.corpus is result.corpus), None)
    return result.images_per_second / base.images_per_second if base else None


def paired_ratio(results: list[Result], result: Result, base_name: str) -> float | None:
    """The median over runs of `result`'s throughput over `base_name`'s in the same round:
    the runs are interleaved, so each pair saw the machine in the same state."""
    base = next((r for r in results if r.receiver == base_name and r.corpus is result.corpus), None)
    if base is None:
        return None
    pairs = zip(base.seconds, result.seconds, strict=True)
    return statistics.median(theirs / ours for theirs, ours in pairs)


def ratio_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def durability_floor(folder: Path, nbytes: int, count: int = 100) -> float:
    """Seconds per file to write `nbytes`, fsync, rename and fsync the folder, as a
    receiver that answers Success only once a file is durable must, one at a time."""
    data = os.urandom(nbytes)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for index in range(count):
            tmp, final = folder / f".{index}.tmp", folder / f"{index}.dcm"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    seconds = (time.perf_counter() - started) / count
    shutil.rmtree(folder, ignore_errors=True)
    return seconds


def write_json(path: Path, results: list[Result], floors: dict[str, float], parallel: int) -> None:
    """The figures for bench/all.py: medians, runs and ratios per receiver and corpus."""
    rows = [
        {
            "receiver": r.receiver,
            "corpus": r.corpus.name,
            "parallel": parallel,
            "images": r.corpus.count,
            "runs_s": r.seconds,
            "median_s": r.median,
            "images_per_s": r.images_per_second,
            "vs_storescp": paired_ratio(results, r, "storescp"),
            "vs_orthanc": paired_ratio(results, r, "orthanc"),
            "vs_storescp_of_medians": ratio(results, r, "storescp"),
            "vs_orthanc_of_medians": ratio(results, r, "orthanc"),
        }
        for r in results
    ]
    payload = {"load_average": os.getloadavg(), "fsync_floor_s": floors, "results": rows}
    path.write_text(json.dumps(payload, indent=2))


def print_table(results: list[Result]) -> None:
    """Medians per receiver and corpus, with throughput relative to storescp."""
    header = (
        f"{'receiver':10} {'corpus':6} {'images':>6} {'stored':>7} {'median s':>9} "
        f"{'images/s':>9} {'MB/s':>7} {'vs storescp':>11} {'vs orthanc':>10}  runs (s)"
    )
    print(header)
    print("-" * len(header))
    for result in results:
        runs = " ".join(f"{s:.2f}" for s in result.seconds)
        vs_storescp, vs_orthanc = (ratio_text(ratio(results, result, r)) for r in BASES)
        print(
            f"{result.receiver:10} {result.corpus.name:6} {result.corpus.count:6d} "
            f"{min(result.stored):7d} {result.median:9.2f} {result.images_per_second:9.1f} "
            f"{result.mb_per_second:7.1f} {vs_storescp:>11} {vs_orthanc:>10}  {runs}"
        )
    print("stored: fewest files found on disk after a run; MB = 10^6 bytes of DICOM files sent.")
    print("durability: dicomflow and Orthanc fsync each file before answering; storescp does not;")
    print("  pynetdicom (bench/null_scp.py) answers Success and keeps nothing, a reference.")
    print(f"at the end: {load_average()}")


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="images per corpus (500)")
    parser.add_argument("--runs", type=int, default=3, help="runs per receiver (3)")
    parser.add_argument("--corpus", choices=("ct", "small", "both"), default="both")
    parser.add_argument("--workdir", type=Path, help="parent of the scratch folder (system tmp)")
    parser.add_argument(
        "--allow-all-interfaces",
        action="store_true",
        help="if no private network namespace can be made, still run storescp and Orthanc, "
        "which then listen on all interfaces (default: skip them)",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="senders at once, one association each (1); with more, dicomflow runs that "
        "many receiver processes and storescp runs with --fork",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.count < 1 or args.runs < 1 or args.parallel < 1:
        parser.error("--count, --runs and --parallel must be at least 1")
    return args


def choose_receivers(isolation: str | None, allow_all: bool, parallel: int) -> list[Receiver]:
    """All receivers when isolated; without isolation only those that bind loopback."""
    receivers = list(RECEIVERS)
    if parallel > 1:
        receivers = [
            Receiver("dicomflow", partial(run_ours, processes=parallel), True, True),
            Receiver("storescp", partial(run_storescp, fork=True)),
            Receiver("orthanc", run_orthanc),
            Receiver("pynetdicom", run_null, loopback_only=True),
        ]
    if isolation is None or allow_all:
        return receivers
    print(
        "skipping storescp and Orthanc: they would listen on all interfaces "
        "(pass --allow-all-interfaces to run them anyway)"
    )
    return [r for r in receivers if r.loopback_only]


def run(args: argparse.Namespace) -> int:
    isolation = isolate_network()  # first: before numpy or anything else starts threads
    print_environment(isolation)
    receivers = choose_receivers(isolation, args.allow_all_interfaces, args.parallel)
    if args.parallel > 1:
        print(f"parallel:    {args.parallel} senders at once, one association each")
    names = ["ct", "small"] if args.corpus == "both" else [args.corpus]
    workdir = Path(tempfile.mkdtemp(prefix="dicomflow-bench-", dir=args.workdir))
    print(f"scratch:     {workdir}")
    results: list[Result] = []
    floors: dict[str, float] = {}
    try:
        for name in names:
            corpus = build_corpus(name, workdir, args.count)
            print(f"corpus {name}: {corpus.count} files, {corpus.nbytes / 1e6:.1f} MB", flush=True)
            results += bench_corpus(corpus, receivers, args.runs, workdir, args.parallel)
            floors[name] = durability_floor(workdir / "floor", corpus.nbytes // corpus.count)
            shutil.rmtree(corpus.folder)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print_table(results)
    for name, seconds in floors.items():
        print(
            f"fsync floor, {name}: write + fsync + rename + fsync folder takes "
            f"{seconds * 1000:.2f} ms per file here, so one association that waits for "
            f"each file to be durable tops out at {1 / seconds:.0f} images/s"
        )
    if args.json:
        write_json(args.json, results, floors, args.parallel)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C and SIGTERM unwind through every `finally`, which stops its server; SIGINT
    # is set explicitly because a shell starts background jobs with it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run(args)
    except BenchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
