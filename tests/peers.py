"""Real PACS peers for the tests: Orthanc and dcmtk's dcmqrscp on 127.0.0.1, and their data.

Neither can be told which address to listen on (both bind every interface), so each
is started with a small LD_PRELOAD library, compiled here from ``bind_loopback.c``,
that turns a bind to the wildcard address into a bind to loopback; `listening_ports`
then checks that the process listens on loopback alone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from receiver.scu import Peer
from receiver.settings import RemoteNode, ScuSettings
from tests.conftest import dcmtk_env, free_port, require_dcmtk

SHIM_SOURCE = Path(__file__).with_name("bind_loopback.c")
STOP_GRACE = 10.0


class PeerUnavailable(RuntimeError):
    """A peer could not be built or started; the message says why."""


def build_shim(folder: Path) -> Path:
    """Compile the loopback-bind library into `folder` (needs gcc, which .ci/install adds)."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise PeerUnavailable("no C compiler for tests/bind_loopback.c: run .ci/install")
    library = folder / "bind_loopback.so"
    command = [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(SHIM_SOURCE), "-ldl"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise PeerUnavailable(f"compiling {SHIM_SOURCE.name} failed: {result.stderr.strip()}")
    return library


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def listening_ports(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on, from /proc/net."""
    inodes = _socket_inodes(pid)
    found = []
    for table, loopback in (("tcp", "0100007F"), ("tcp6", "00000000000000000000000001000000")):
        lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.split(":")
                found.append(("loopback" if address == loopback else address, int(port, 16)))
    return found


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop what we started, by its process group (the peer and any child it forked):
    SIGTERM, then SIGKILL after a grace period."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@contextmanager
def _running(
    command: list[str], port: int, log: Path, shim: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `command` with the loopback shim until the block ends; yields once it listens."""
    env = {**dcmtk_env(), "LD_PRELOAD": str(shim)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while not any(p == port for _, p in listening_ports(proc.pid)):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise PeerUnavailable(f"{command[0]} did not listen on {port}:\n{tail}")
            time.sleep(0.1)
        outside = [a for a in listening_ports(proc.pid) if a[0] != "loopback"]
        if outside:
            raise PeerUnavailable(f"{command[0]} listens beyond loopback: {outside}")
        yield proc
    finally:
        _stop(proc)


@dataclass(frozen=True)
class Pacs:
    """A running PACS peer: where it listens, and its process."""

    ae_title: str
    port: int
    pid: int
    log: Path
    http_port: int | None = None

    def node(self) -> dict[str, object]:
        """Its `[nodes.NAME]` table for our settings."""
        return {"ae_title": self.ae_title, "host": "127.0.0.1", "port": self.port}


def orthanc_binary() -> str:
    return shutil.which("Orthanc") or "/usr/sbin/Orthanc"


@contextmanager
def run_orthanc(
    folder: Path, shim: Path, modalities: dict[str, tuple[str, int]], http: bool = False
) -> Iterator[Pacs]:
    """Orthanc with DICOM on a free port, `modalities` (name -> AE, port) known; its REST
    API on loopback with `http` (the port is `Pacs.http_port`), else off."""
    if not Path(orthanc_binary()).exists():
        raise PeerUnavailable("Orthanc is not installed: run .ci/install")
    folder.mkdir(parents=True, exist_ok=True)
    port, http_port = free_port(), free_port()
    config = {
        "Name": "dicomflow-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "DicomServerEnabled": True,
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomModalities": {name: [ae, "127.0.0.1", p] for name, (ae, p) in modalities.items()},
        "DicomScuTimeout": 10,
        "HttpServerEnabled": http,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [],
        "SaveJobs": False,
        "SynchronousCMove": True,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    log = folder / "orthanc.log"
    with _running([orthanc_binary(), str(path)], port, log, shim) as proc:
        yield Pacs("ORTHANC", port, proc.pid, log, http_port if http else None)


@contextmanager
def run_dcmqrscp(
    folder: Path, shim: Path, destinations: dict[str, tuple[str, int]]
) -> Iterator[Pacs]:
    """dcmtk's dcmqrscp (a child per association), storage and Q/R as DCMQRSCP,
    `destinations` known as move destinations."""
    require_dcmtk()
    if shutil.which("dcmqrscp") is None:
        raise PeerUnavailable("dcmqrscp is not installed: run .ci/install")
    database = folder / "db"
    database.mkdir(parents=True, exist_ok=True)
    port = free_port()
    hosts = "\n".join(f"{name} = ({ae}, 127.0.0.1, {p})" for name, (ae, p) in destinations.items())
    config = folder / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n\n"
        f"HostTable BEGIN\n{hosts}\nHostTable END\n\n"
        "VendorTable BEGIN\nVendorTable END\n\n"
        f"AETable BEGIN\nDCMQRSCP {database} RW (200, 1024mb) ANY\nAETable END\n"
    )
    log = folder / "dcmqrscp.log"
    command = ["dcmqrscp", "-c", str(config), str(port)]
    with _running(command, port, log, shim) as proc:
        yield Pacs("DCMQRSCP", port, proc.pid, log)


@contextmanager
def run_storescp(folder: Path, shim: Path, ae_title: str, *options: str) -> Iterator[Pacs]:
    """dcmtk's storescp as `ae_title`, writing what it receives into `folder`/in."""
    require_dcmtk()
    incoming = folder / "in"
    incoming.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "storescp.log"
    command = ["storescp", "-aet", ae_title, *options, "-od", str(incoming), str(port)]
    with _running(command, port, log, shim) as proc:
        yield Pacs(ae_title, port, proc.pid, log)


def store_into(pacs: Pacs, files: list[Path]) -> None:
    """Load `files` into a PACS over C-STORE with dcmtk's storescu."""
    command = ["storescu", "-aet", "LOADER", "-aec", pacs.ae_title, "127.0.0.1", str(pacs.port)]
    result = subprocess.run(
        [*command, *map(str, files)], env=dcmtk_env(), capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise PeerUnavailable(f"loading {pacs.ae_title} failed: {result.stderr.strip()}")


@dataclass(frozen=True)
class StudySpec:
    """One study of the test corpus, made from a real sample file with new identifiers."""

    source: str
    patient_id: str
    patient_name: str
    accession: str
    study_date: str
    series: tuple[int, ...]
    """Instances per series."""


CORPUS = (
    StudySpec("CT_small.dcm", "QR001", "Alpha^Ann", "ACC001", "20240105", (3, 2)),
    StudySpec("MR_small.dcm", "QR001", "Alpha^Ann", "ACC002", "20240120", (2,)),
    StudySpec("CT_small.dcm", "QR002", "Beta^Bob", "ACC003", "20240210", (2,)),
)
"""Two patients, three studies, four series, nine instances."""


@dataclass(frozen=True)
class Study:
    """A study written by `make_corpus`: its original identifiers and files by series."""

    spec: StudySpec
    study_uid: str
    series: dict[str, list[Path]]

    @property
    def files(self) -> list[Path]:
        return [f for files in self.series.values() for f in files]


def make_corpus(folder: Path, specs: tuple[StudySpec, ...] = CORPUS) -> list[Study]:
    """Write the studies of `specs` under `folder`: real pixel data, fresh UIDs."""
    studies = []
    for spec in specs:
        study_uid = generate_uid()
        series: dict[str, list[Path]] = {}
        for number, count in enumerate(spec.series, 1):
            series_uid = generate_uid()
            for index in range(count):
                ds = dcmread(get_testdata_file(spec.source))
                ds.PatientID, ds.PatientName = spec.patient_id, spec.patient_name
                ds.AccessionNumber, ds.StudyDate = spec.accession, spec.study_date
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
                ds.SeriesNumber, ds.InstanceNumber = number, index + 1
                ds.SOPInstanceUID = generate_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                path = folder / f"{spec.accession}-{number}-{index + 1}.dcm"
                path.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(path)
                series.setdefault(series_uid, []).append(path)
        studies.append(Study(spec, study_uid, series))
    return studies


@dataclass(frozen=True)
class Site:
    """The running PACS peers, the studies they hold, and the port our receiver must use."""

    peers: dict[str, Pacs]
    studies: list[Study]
    receiver_port: int

    def peer(self, name: str, **scu: object) -> Peer:
        node = RemoteNode.model_validate(self.peers[name].node())
        return Peer(name, node, "DICOMFLOW", ScuSettings.model_validate(scu))

    def nodes(self) -> dict[str, dict[str, object]]:
        """The peers as `[nodes.NAME]` tables."""
        return {name: pacs.node() for name, pacs in self.peers.items()}


@contextmanager
def pacs_site(folder: Path, shim: Path) -> Iterator[Site]:
    """Orthanc and dcmqrscp, both loaded with `make_corpus`, both knowing our receiver
    as DICOMFLOW on a port chosen here."""
    studies = make_corpus(folder / "corpus")
    files = [f for s in studies for f in s.files]
    port = free_port()
    destinations = {"dicomflow": ("DICOMFLOW", port)}
    with (
        run_orthanc(folder / "orthanc", shim, destinations) as orthanc,
        run_dcmqrscp(folder / "dcmqrscp", shim, destinations) as dcmqrscp,
    ):
        for pacs in (orthanc, dcmqrscp):
            store_into(pacs, files)
        yield Site({"orthanc": orthanc, "dcmqrscp": dcmqrscp}, studies, port)
