"""Autoload throughput: a naive pydicom loop against our path, 1 and 2 workers, Prefect.

Run from the repository root::

    .venv/bin/python bench/autoload.py [--count N] [--runs R] [--dask]

On one CT corpus (bench/receive.py's: CT_small.dcm upscaled to 512x512, ~531 KB),
built in a temporary folder, interleaved run by run:

- ``naive``: ``dcmread`` each file whole, blank the usual identifying elements, remove
  private ones, ``save_as`` into a folder; one process, no fsync, no catalog.
- ``pure-1`` and ``pure-2``: our autoload steps called as plain functions
  (`tasks.ingest`: archive, record in the catalog, clear landing), batches archived in
  one process or in a pool of two.
- ``flow-1`` (and ``flow-2``, ``flow-dask`` with ``--dask``): the Prefect ``autoload``
  flow against a ``prefect server`` this script starts on loopback.
- ``cli-empty``: ``dicomflow autoload`` on an empty landing zone, the whole command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path

from receive import BenchError, Corpus, build_corpus, free_port, load_average

REPO = Path(__file__).resolve().parent.parent
BATCH_SIZE = 200
SALT = "bench-salt"
SERVER_TIMEOUT = 120.0
NAIVE_BLANKED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "OtherPatientIDs",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "StationName",
    "AccessionNumber",
    "StudyID",
)
"""What a quick script blanks; far less than PS3.15 Annex E asks (our path does that)."""


@dataclass
class Result:
    """The runs of one way of processing the corpus."""

    name: str
    count: int
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def per_second(self) -> float:
        return self.count / self.median


# --- the ways ---------------------------------------------------------------------------------


def naive(corpus: Corpus, run_dir: Path) -> int:
    """The loop a script would write: whole read, a few elements blanked, save_as."""
    from pydicom import dcmread

    out = run_dir / "naive"
    out.mkdir(parents=True)
    done = 0
    for path in sorted(corpus.folder.iterdir()):
        ds = dcmread(path)
        for keyword in NAIVE_BLANKED:
            if keyword in ds:
                ds.data_element(keyword).value = ""  # type: ignore[union-attr]
        ds.remove_private_tags()
        ds.save_as(out / path.name)
        done += 1
    return done


def land(corpus: Corpus, landing: Path) -> None:
    """Hard-link the corpus into a landing zone under receiver-style names (not timed)."""
    landing.mkdir(parents=True)
    for index, path in enumerate(sorted(corpus.folder.iterdir())):
        os.link(path, landing / f"20260101T{index:012d}Z-{index:032x}.dcm")


def context(run_dir: Path):  # type: ignore[no-untyped-def]
    from tasks.ingest import IngestContext

    return IngestContext(
        archive_dir=run_dir / "archive",
        quarantine_dir=run_dir / "quarantine",
        catalog_dir=run_dir / "catalog",
        salt=SALT.encode(),
        run_id="bench",
    )


def pure(workers: int) -> Callable[[Corpus, Path], int]:
    """Our steps without Prefect: batches archived by `workers` processes, recorded in order."""

    def run(corpus: Corpus, run_dir: Path) -> int:
        from receiver.landing import LandingZone
        from tasks import ingest

        ctx = context(run_dir)
        paths = LandingZone(run_dir / "landing").completed()
        chunks = [paths[i : i + BATCH_SIZE] for i in range(0, len(paths), BATCH_SIZE)]
        done = 0
        with ProcessPoolExecutor(workers) if workers > 1 else _inline() as pool:
            for outcome in pool.map(ingest.archive_files, chunks, repeat(ctx)):
                ingest.record_instances(outcome.archived, ctx.store(), ctx.record_unit)
                ingest.clear_landing(outcome.archived)
                done += len(outcome.archived)
        return done

    return run


class _Inline:
    """`map` in this process, for one worker."""

    map = staticmethod(map)


@contextmanager
def _inline() -> Iterator[_Inline]:
    yield _Inline()


def flow(workers: int = 1, dask_address: str | None = None) -> Callable[[Corpus, Path], int]:
    """The Prefect flow, in this process, against the server in PREFECT_API_URL."""

    def run(corpus: Corpus, run_dir: Path) -> int:
        from flows.autoload import autoload

        env = flow_env(run_dir, workers, dask_address)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            summary = autoload()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return summary.archived

    return run


def flow_env(run_dir: Path, workers: int = 1, dask_address: str | None = None) -> dict[str, str]:
    env = {
        "DICOMFLOW_DATA_DIR": str(run_dir),
        "DICOMFLOW_ANONYMIZE__SALT": SALT,
        "DICOMFLOW_AUTOLOAD__BATCH_SIZE": str(BATCH_SIZE),
        "DICOMFLOW_AUTOLOAD__WORKERS": str(workers),
    }
    if dask_address:
        env["DICOMFLOW_AUTOLOAD__DASK_ADDRESS"] = dask_address
    return env


def cli_empty(run_dir: Path, server: bool = True) -> float:
    """Wall time of the whole `dicomflow autoload` command with nothing landed; without
    `server`, no PREFECT_API_URL, so Prefect starts a temporary server of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
    env |= flow_env(run_dir)
    if not server:
        env.pop("PREFECT_API_URL", None)
        env["PREFECT_HOME"] = str(run_dir / "prefect-home")
    command = [str(Path(sys.executable).parent / "dicomflow"), "autoload"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"dicomflow autoload failed: {done.stderr.strip()[-500:]}")
    return seconds


# --- servers ----------------------------------------------------------------------------------


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def prefect_server(workdir: Path) -> Iterator[str]:
    """`prefect server start` on loopback with its own database; its API URL."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = os.environ | {
        "PREFECT_HOME": str(workdir / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    log = (workdir / "prefect-server.log").open("wb")
    server = subprocess.Popen(
        [*command, "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + SERVER_TIMEOUT
        while not healthy(api_url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"prefect server did not start; see {log.name}")
            time.sleep(0.5)
        yield api_url
    finally:
        server.terminate()
        server.wait(30)
        log.close()


@contextmanager
def dask_cluster() -> Iterator[str]:
    """Two Dask worker processes of one thread each, on loopback; the scheduler address."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        yield str(cluster.scheduler_address)


# --- measuring ------------------------------------------------------------------------------


def timed(way: Callable[[Corpus, Path], int], corpus: Corpus, run_dir: Path, landed: bool) -> float:
    """One run on a fresh folder; fails unless every file was processed."""
    if landed:
        land(corpus, run_dir / "landing")
    os.sync()
    started = time.perf_counter()
    done = way(corpus, run_dir)
    seconds = time.perf_counter() - started
    shutil.rmtree(run_dir, ignore_errors=True)
    if done != corpus.count:
        raise BenchError(f"{run_dir.name}: {done} of {corpus.count} files processed")
    return seconds


def print_table(results: dict[str, Result], empty: list[float], temporary: list[float]) -> None:
    naive_rate = results["naive"].per_second
    header = f"{'way':10} {'files':>6} {'median s':>9} {'files/s':>8} {'vs naive':>9}  runs (s)"
    print(header)
    print("-" * len(header))
    for result in results.values():
        runs = " ".join(f"{s:.2f}" for s in result.seconds)
        print(
            f"{result.name:10} {result.count:6d} {result.median:9.2f} {result.per_second:8.1f} "
            f"{result.per_second / naive_rate:9.2f}  {runs}"
        )
    one = results["pure-1"].median
    print(f"two workers vs one (pure): {one / results['pure-2'].median:.2f}x")
    if "flow-2" in results:
        flow_two = results["flow-1"].median / results["flow-2"].median
        print(f"two workers vs one (flow): {flow_two:.2f}x")
    if "flow-dask" in results:
        dask = results["flow-1"].median / results["flow-dask"].median
        print(f"Dask, 2 worker processes, vs flow-1: {dask:.2f}x")
    overhead = (results["flow-1"].median - one) / results["flow-1"].median
    print(f"Prefect overhead (flow-1 vs pure-1, share of flow wall time): {overhead:.1%}")
    runs = " ".join(f"{s:.2f}" for s in empty)
    print(
        f"`dicomflow autoload`, empty landing, server running: {statistics.median(empty):.2f} s"
        f" (median; runs {runs})"
    )
    runs = " ".join(f"{s:.2f}" for s in temporary)
    print(
        f"`dicomflow autoload`, empty landing, no server (temporary one): "
        f"{statistics.median(temporary):.2f} s (median; runs {runs})"
    )
    print(f"at the end: {load_average()}")


def figures(results: dict[str, Result], empty: list[float], temporary: list[float]) -> dict:
    """The table's figures for bench/all.py (`--json`)."""
    one = results["pure-1"].median
    ratios = {
        "one_worker_vs_naive": results["pure-1"].per_second / results["naive"].per_second,
        "flow_vs_naive": results["flow-1"].per_second / results["naive"].per_second,
        "two_workers_vs_one": one / results["pure-2"].median,
        "prefect_overhead_percent": 100
        * (results["flow-1"].median - one)
        / results["flow-1"].median,
    }
    if "flow-2" in results:
        ratios["flow_two_workers_vs_one"] = results["flow-1"].median / results["flow-2"].median
    if "flow-dask" in results:
        ratios["dask_vs_flow"] = results["flow-1"].median / results["flow-dask"].median
    return {
        "load_average": os.getloadavg(),
        "ways": {
            r.name: {"files": r.count, "runs_s": r.seconds, "median_s": r.median}
            for r in results.values()
        },
        "ratios": ratios,
        "empty_autoload_s": statistics.median(empty),
        "empty_autoload_temporary_server_s": statistics.median(temporary),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="CT images (default 2000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each way (default 3)")
    parser.add_argument("--dask", action="store_true", help="also the flow on a local Dask cluster")
    parser.add_argument(
        "--flow-workers", action="store_true", help="also the flow with autoload.workers = 2"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    print(f"date (UTC): {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}")
    print(f"nproc: {len(os.sched_getaffinity(0))}    {load_average()}")
    with tempfile.TemporaryDirectory(prefix="dicomflow-bench-autoload-") as tmp:
        workdir = Path(tmp)
        corpus = build_corpus("ct", workdir, args.count)
        print(f"corpus: {corpus.count} CT images, {corpus.nbytes / 1e6:.0f} MB")
        with prefect_server(workdir) as api_url:
            os.environ["PREFECT_API_URL"] = api_url
            os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
            import flows.autoload  # noqa: F401  imported before any run is timed

            ways: dict[str, tuple[Callable[[Corpus, Path], int], bool]] = {
                "naive": (naive, False),
                "pure-1": (pure(1), True),
                "pure-2": (pure(2), True),
                "flow-1": (flow(1), True),
            }
            if args.flow_workers:
                ways["flow-2"] = (flow(2), True)
            with dask_cluster() if args.dask else _no_cluster() as address:
                if address:
                    ways["flow-dask"] = (flow(dask_address=address), True)
                results = {name: Result(name, corpus.count) for name in ways}
                empty: list[float] = []
                temporary: list[float] = []
                for number in range(args.runs):
                    for name, (way, landed) in ways.items():
                        seconds = timed(way, corpus, workdir / f"{name}-{number}", landed)
                        results[name].seconds.append(seconds)
                        print(
                            f"  run {number + 1}/{args.runs} {name:9} {seconds:7.2f} s"
                            f"  {load_average()}",
                            flush=True,
                        )
                    empty.append(cli_empty(workdir / f"empty-{number}"))
                    temporary.append(cli_empty(workdir / f"temporary-{number}", server=False))
                    print(
                        f"  run {number + 1}/{args.runs} cli-empty {empty[-1]:7.2f} s, "
                        f"with a temporary server {temporary[-1]:.2f} s",
                        flush=True,
                    )
        print_table(results, empty, temporary)
        if args.json:
            args.json.write_text(json.dumps(figures(results, empty, temporary), indent=2))
    return 0


@contextmanager
def _no_cluster() -> Iterator[str | None]:
    yield None


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
