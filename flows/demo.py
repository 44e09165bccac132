"""`dicomflow demo`: real sample files over the network, through autoload, into SQL."""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread

from flows.settings import Settings
from receiver.scp import start_receiver
from receiver.storescu import SendResult, send_files

SKIPPED_SUFFIXES = {".py", ".pyc", ".json", ".txt", ".md", ".gz", ".bz2", ".zip"}


def sample_files() -> list[Path]:
    """pydicom's own test files plus the pydicom-data package's, where installed."""
    import pydicom.data

    roots = [Path(pydicom.data.__file__).parent / "test_files"]
    try:
        import data_store  # the pydicom-data package

        roots.append(Path(data_store.__file__).parent / "data")
    except ImportError:
        pass
    files: list[Path] = []
    for root in roots:
        files.extend(
            p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix not in SKIPPED_SUFFIXES
        )
    return files


def group_by_study(paths: list[Path]) -> dict[str, list[Path]]:
    """Files per Study Instance UID, so each study goes over its own association.

    Files pydicom cannot read share one group; the sender reports them as unsendable.
    """
    studies: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        try:
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
            study = str(ds.get("StudyInstanceUID", "")) or "no-study"
        except Exception:
            study = "unreadable"
        studies[study].append(path)
    return dict(studies)


def send_samples(
    settings: Settings, progress: Callable[[int, int], None] | None = None
) -> tuple[list[SendResult], int]:
    """Start a receiver on a free loopback port and C-STORE the sample files to it.

    Returns every file's result and the number the receiver stored.
    """
    receiver_settings = settings.receiver.model_copy(update={"host": "127.0.0.1", "port": 0})
    receiver = start_receiver(receiver_settings, settings.landing)
    results: list[SendResult] = []
    scu_log = logging.getLogger("pynetdicom")
    level = scu_log.level
    try:
        # Some sample files are broken on purpose; each outcome is in `results`.
        scu_log.setLevel(logging.CRITICAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            studies = group_by_study(sample_files())
            total = sum(len(v) for v in studies.values())
            done = 0
            for paths in studies.values():
                results.extend(
                    send_files(paths, "127.0.0.1", receiver.port, receiver_settings.ae_title)
                )
                done += len(paths)
                if progress:
                    progress(done, total)
    finally:
        scu_log.setLevel(level)
        receiver.stop()
    return results, receiver.counter.stored
