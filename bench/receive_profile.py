"""Where a received C-STORE's time goes: CPU per image, and each handler step's wall time.

Run from the repository root::

    .venv/bin/python bench/receive_profile.py [--count 300] [--corpus ct|small] [--yappi]

Starts the receiver in this process (the same code `dicomflow receive` runs), sends
the corpus from dcmtk's ``storescu`` over one association, and reports the process's
CPU time per image (user and system) and the median wall time of each step of our
C-STORE handler: the dataset check, the fsync, the rename and folder fsync. With
``--yappi`` (``pip install yappi``; not a dependency), it also profiles every thread
and sums the CPU time by where the code lives: pynetdicom, pydicom, dicomflow, and
the standard library. docs/performance.md quotes this to show where the receiver's
ceiling is.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).parent))

from receive import NODELAY_ENV, build_corpus, free_port

from receiver import landing, scp
from receiver.settings import ReceiverSettings

STEPS: dict[str, list[float]] = collections.defaultdict(list)


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, noting each call's wall time under `name`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            STEPS[name].append((time.perf_counter() - started) * 1000)

    return wrapper


def instrument() -> None:
    """Time the handler and its steps (the module attributes the handler calls)."""
    scp.check_received = timed("dataset check", scp.check_received)
    landing.fsync_dir = timed("folder fsync", landing.fsync_dir)
    scp.handle_store = timed("whole handler", scp.handle_store)
    sync = landing.PartialFile.sync

    def sync_once(self: landing.PartialFile) -> None:
        if self._fh is None:  # the second call, from adopt(): nothing left to do
            return sync(self)
        return timed("file fsync", sync)(self)

    landing.PartialFile.sync = sync_once  # type: ignore[method-assign]


def where(path: str) -> str:
    for name in ("pynetdicom", "pydicom"):
        if f"/{name}/" in path:
            return name
    if "/receiver/" in path or "/tasks/" in path:
        return "dicomflow"
    return "python stdlib and other"


def send(folder: Path, port: int) -> float:
    cmd = ["storescu", "-aet", "PROFILE", "-aec", "DICOMFLOW", "127.0.0.1", str(port)]
    started = time.perf_counter()
    subprocess.run([*cmd, "+sd", str(folder)], env=os.environ | NODELAY_ENV, check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--corpus", choices=("ct", "small"), default="ct")
    parser.add_argument("--yappi", action="store_true", help="profile every thread (slower)")
    args = parser.parse_args(argv)
    instrument()
    with tempfile.TemporaryDirectory(prefix="dicomflow-profile-") as scratch:
        root = Path(scratch)
        corpus = build_corpus(args.corpus, root, args.count)
        port = free_port()
        receiver = scp.start_receiver(
            ReceiverSettings(host="127.0.0.1", port=port), root / "landing"
        )
        yappi: Any = None
        if args.yappi:
            import yappi

            yappi.set_clock_type("cpu")
            yappi.start()
        before = resource.getrusage(resource.RUSAGE_SELF)
        seconds = send(corpus.folder, port)
        after = resource.getrusage(resource.RUSAGE_SELF)
        if yappi is not None:
            yappi.stop()
        receiver.stop()
        shutil.rmtree(corpus.folder)
    n = corpus.count
    user = (after.ru_utime - before.ru_utime) / n * 1000
    system = (after.ru_stime - before.ru_stime) / n * 1000
    print(f"{n} {args.corpus} images over one association: {seconds:.2f} s, {n / seconds:.0f}/s")
    print(f"CPU per image: {user + system:.2f} ms (user {user:.2f}, system {system:.2f})")
    print(f"wall time per image: {seconds / n * 1000:.2f} ms; handler steps (median, ms):")
    for name, values in STEPS.items():
        print(f"  {name:14} {statistics.median(values):6.2f}   ({len(values)} calls)")
    if yappi is not None:
        own: collections.Counter[str] = collections.Counter()
        for stat in yappi.get_func_stats():
            own[where(stat.full_name)] += stat.tsub
        total = sum(own.values())
        print("CPU by where the code lives (yappi, self time; yappi slows everything):")
        for name, value in own.most_common():
            print(f"  {name:24} {value / total:6.1%}")
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
