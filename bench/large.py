"""A large multi-frame instance through the receiver and autoload: peak memory vs its size.

Run from the repository root::

    .venv/bin/python bench/large.py [--mib 500] [--flow]

Writes one multi-frame 16-bit instance of about MIB mebibytes with a streamed writer
(never a whole bytes object), starts ``dicomflow receive`` in a process of its own,
sends the file with dcmtk's ``storescu``, stops the receiver, then runs the autoload
steps (parse, anonymize, archive, catalog, clear landing) in another process; with
``--flow``, also the ``dicomflow autoload`` command (the Prefect flow). Peak resident
memory is each process's VmHWM (/proc/PID/status), which starts afresh at exec (a
forked child's ``ru_maxrss`` would count the parent's memory too). The archived copy's
pixel data is checked against the source, byte for byte, by hash.

`measure` is what tests/test_large_instance.py runs, at a smaller size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FRAME_SIDE = 1024
FRAME_BYTES = FRAME_SIDE * FRAME_SIDE * 2
"""One 1024 x 1024 frame of 16-bit pixels: 2 MiB."""
BLOCK = 1 << 20
MULTIFRAME_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
"""Multi-frame Grayscale Word Secondary Capture Image Storage."""
START_TIMEOUT = 60.0
DICOMFLOW = [sys.executable, "-m", "flows.cli"]

AUTOLOAD_STEPS = """
import dataclasses, json, shutil, sys, tempfile, time
from pathlib import Path
from pydicom.data import get_testdata_file
from flows.autoload import ingest_context
from flows.settings import load_settings
from receiver.landing import LandingZone
from tasks.ingest import archive_files, clear_landing, record_instances

settings = load_settings(None)
ctx = ingest_context(settings, "bench-large")
paths = LandingZone(settings.landing).completed()
with tempfile.TemporaryDirectory() as warm:  # a small instance first, elsewhere: every
    root = Path(warm)                         # module and table the steps use is loaded
    (root / "landing").mkdir()
    small = Path(shutil.copy(get_testdata_file("CT_small.dcm"), root / "landing"))
    cold = dataclasses.replace(ctx, archive_dir=root / "a", quarantine_dir=root / "q",
                               catalog_dir=root / "c")
    done = archive_files([small], cold)
    record_instances(done.archived, cold.store(), cold.record_unit)
def hwm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

before = hwm_kib()
started = time.perf_counter()
outcome = archive_files(paths, ctx)
record_instances(outcome.archived, ctx.store(), ctx.record_unit)
clear_landing(outcome.archived)
print(json.dumps({
    "archived": outcome.new,
    "quarantined": dict(outcome.quarantined),
    "seconds": round(time.perf_counter() - started, 2),
    "hwm_before_kib": before,
    "hwm_kib": hwm_kib(),
}))
"""


def write_instance(path: Path, mib: int, seed: int = 7) -> tuple[str, str, int]:
    """A multi-frame instance of about `mib` MiB, its pixel data written 1 MiB at a time.

    Returns its SOP Instance UID, the sha256 of its pixel data and the file size.
    """
    import random

    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    frames = max(1, -(-mib * 2**20 // FRAME_BYTES))
    ds = dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        ds.pop(keyword, None)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MULTIFRAME_WORD_SC
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Rows = ds.Columns = FRAME_SIDE
    ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    length = frames * FRAME_BYTES
    block = random.Random(seed).randbytes(BLOCK)
    digest = hashlib.sha256()
    with path.open("wb") as fh:
        ds.save_as(fh, enforce_file_format=True)
        fh.write(struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\0\0" + struct.pack("<L", length))
        left = length
        while left:
            chunk = block[: min(BLOCK, left)]
            fh.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return str(ds.SOPInstanceUID), digest.hexdigest(), path.stat().st_size


def pixel_sha256(path: Path) -> str:
    """The sha256 of a file's pixel data value, read 1 MiB at a time."""
    from pydicom import dcmread

    from receiver.dicomfile import copy_range, locate_bulk

    size = path.stat().st_size
    with path.open("rb") as fh:
        ds = dcmread(fh, stop_before_pixels=True)
        syntax = ds.file_meta.TransferSyntaxUID
        bulk = locate_bulk(fh, fh.tell(), size, syntax.is_implicit_VR, syntax.is_little_endian)
        assert bulk is not None and bulk.length is not None
        digest = hashlib.sha256()
        for chunk in copy_range(fh, bulk.end - bulk.length, bulk.end):
            digest.update(chunk)
    return digest.hexdigest()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the receiver exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def _status_kib(pid: int, field: str) -> int:
    """A memory figure of process `pid` from /proc, in KiB (0 once it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


def _run_sampling_hwm(command: list[str], env: dict[str, str]) -> tuple[int, int]:
    """Run `command`; its exit status and its last VmHWM seen (sampled every 20 ms)."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    hwm = 0
    while proc.poll() is None:
        hwm = max(hwm, _status_kib(proc.pid, "VmHWM"))
        time.sleep(0.02)
    return proc.returncode, hwm


def measure(mib: int, workdir: Path, flow: bool = False) -> dict[str, Any]:
    """Receive and autoload one instance of `mib` MiB under `workdir`; the figures."""
    data_dir = workdir / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
    env |= {
        "DICOMFLOW_DATA_DIR": str(data_dir),
        "DICOMFLOW_ANONYMIZE__SALT": "bench-salt",
        "TCP_NODELAY": "1",
    }
    source = workdir / "large.dcm"
    started = time.perf_counter()
    sop_instance, pixels, size = write_instance(source, mib)
    figures: dict[str, Any] = {
        "instance_mib": round(size / 2**20, 1),
        "write_seconds": round(time.perf_counter() - started, 1),
    }

    port = _free_port()
    receiver = subprocess.Popen(
        [*DICOMFLOW, "receive", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_port(port, receiver)
        figures["receiver_idle_rss_mib"] = _mib(_status_kib(receiver.pid, "VmRSS"))
        started = time.perf_counter()
        sent = subprocess.run(
            ["storescu", "-aec", "DICOMFLOW", "127.0.0.1", str(port), str(source)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        figures["send_seconds"] = round(time.perf_counter() - started, 1)
        if sent.returncode != 0:
            raise RuntimeError(f"storescu failed: {sent.stderr[-2000:]}")
        figures["receiver_peak_rss_mib"] = _mib(_status_kib(receiver.pid, "VmHWM"))
    finally:
        receiver.send_signal(signal.SIGTERM)
        receiver.communicate(timeout=60)
    landed = sorted((data_dir / "landing").glob("*.dcm"))
    figures["receiver_stopped"] = receiver.returncode
    figures["landed"] = len(landed)
    figures["landed_intact"] = bool(landed) and pixel_sha256(landed[0]) == pixels

    steps = subprocess.run(
        [sys.executable, "-c", AUTOLOAD_STEPS],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result = json.loads(steps.stdout)
    figures["autoload_rss_before_mib"] = _mib(result.pop("hwm_before_kib"))
    figures["autoload_peak_rss_mib"] = _mib(result.pop("hwm_kib"))
    figures |= {f"autoload_{k}": v for k, v in result.items()}
    archived = sorted((data_dir / "archive").rglob("*.dcm"))
    figures["archived_intact"] = len(archived) == 1 and pixel_sha256(archived[0]) == pixels
    figures["landing_left"] = len(list((data_dir / "landing").glob("*.dcm")))
    figures["sop_instance_uid"] = sop_instance

    if flow:  # the whole Prefect flow, on a second copy landed by hand
        shutil.copy(source, data_dir / "landing" / "again.dcm")
        started = time.perf_counter()
        figures["flow_exit"], hwm = _run_sampling_hwm([*DICOMFLOW, "autoload"], env)
        figures["flow_peak_rss_mib"] = _mib(hwm)
        figures["flow_seconds"] = round(time.perf_counter() - started, 1)
    source.unlink()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=500, help="instance size (default 500)")
    parser.add_argument("--flow", action="store_true", help="also run `dicomflow autoload`")
    parser.add_argument("--dir", type=Path, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    if shutil.which("storescu") is None:
        print("dcmtk's storescu is needed: run .ci/install", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        figures = measure(args.mib, Path(folder), flow=args.flow)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
