"""What the fault tests need: generated instances, a tmpfs to fill, a receiver process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from flows.settings import Settings
from receiver.landing import LandingZone
from tests.conftest import wait_for_port


def make_instances(folder: Path, count: int, *, side: int = 128) -> list[Path]:
    """`count` CT instances of one series, `side`x`side` 16-bit pixels, distinct UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    template = dcmread(get_testdata_file("CT_small.dcm"))
    template.Rows = template.Columns = side
    pixels = (np.arange(side * side, dtype=np.uint16) % 4096).reshape(side, side)
    template.PixelData = pixels.tobytes()
    template.SeriesInstanceUID = generate_uid()
    paths = []
    for number in range(count):
        template.SOPInstanceUID = generate_uid()
        template.file_meta.MediaStorageSOPInstanceUID = template.SOPInstanceUID
        template.InstanceNumber = number + 1
        path = folder / f"{number:04d}.dcm"
        template.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def land_and_autoload(settings: Settings, paths: list[Path]) -> int:
    """Put `paths` in the landing zone as the receiver would, autoload; how many archived."""
    from flows.autoload import autoload

    zone = LandingZone(settings.landing)
    for path in paths:
        zone.store(path.read_bytes())
    return autoload().archived


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` for the test, unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0750", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def grow(path: Path, size: str) -> None:
    """Give the tmpfs at `path` more room, as an operator freeing space would."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


@contextmanager
def receiver_process(port: int, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """`dicomflow receive` in its own process on 127.0.0.1:`port`, killed by pid after."""
    environment = {**os.environ, "DICOMFLOW_RECEIVER__PORT": str(port), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "receive"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
