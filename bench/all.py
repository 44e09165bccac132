"""Every benchmark in one run, and a table of the figures against the performance targets.

Run from the repository root::

    .venv/bin/python bench/all.py              # the full run (about 25 minutes on 2 cores)
    .venv/bin/python bench/all.py --quick      # smaller corpora, one look at each figure
    .venv/bin/python bench/all.py --doc docs/performance.md

Each step is one of the benchmark scripts beside this one, run as its own process
(`receive.py` over one association and over four, `autoload.py`, `catalog.py`,
`large.py`); each builds its corpus in a temporary folder, starts its peers (dcmtk,
Orthanc, a Prefect server) on 127.0.0.1 and stops them. Their own tables stream by as
they run; at the end comes one table: each target, the figure measured, whether it
is met. With ``--doc``, that table, the command and the machine replace the part of
the file between ``<!-- bench/all.py -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
MARKER = "<!-- bench/all.py -->"


@dataclass(frozen=True)
class Step:
    """One benchmark script run; `args` for the full run, `quick` for --quick."""

    name: str
    script: str
    args: tuple[str, ...]
    quick: tuple[str, ...]
    json_flag: bool = True
    """The script writes its figures to ``--json PATH``; otherwise it prints them last."""


STEPS = (
    Step(
        "receive-1",
        "receive.py",
        ("--corpus", "both", "--count", "500", "--runs", "3"),
        ("--corpus", "both", "--count", "200", "--runs", "3"),
    ),
    Step(
        "receive-4",
        "receive.py",
        ("--corpus", "ct", "--count", "800", "--runs", "3", "--parallel", "4"),
        ("--corpus", "ct", "--count", "400", "--runs", "3", "--parallel", "4"),
    ),
    Step("autoload", "autoload.py", ("--count", "2000", "--runs", "3"), ("--count", "500")),
    Step(
        "catalog",
        "catalog.py",
        (),
        ("--instances", "200000", "--series", "40000", "--studies", "10000", "--patients", "2000"),
    ),
    Step("memory", "large.py", ("--mib", "500"), ("--mib", "200"), json_flag=False),
)


@dataclass(frozen=True)
class Target:
    """A figure the project promises, read from the steps' figures."""

    what: str
    goal: str
    measure: Callable[[dict[str, Any]], float | None]
    met: Callable[[float], bool]
    unit: str = "x"


def receive_ratio(step: str, corpus: str, base: str) -> Callable[[dict[str, Any]], float | None]:
    """dicomflow's throughput over `base`'s in a receive step, from its JSON."""

    def read(figures: dict[str, Any]) -> float | None:
        for row in figures.get(step, {}).get("results", []):
            if row["receiver"] == "dicomflow" and row["corpus"] == corpus:
                return row.get(f"vs_{base}")
        return None

    return read


def path(*keys: str) -> Callable[[dict[str, Any]], float | None]:
    """A figure nested under `keys` in the steps' figures, if the step gave it."""

    def read(figures: dict[str, Any]) -> float | None:
        value: Any = figures
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return float(value) if isinstance(value, int | float) else None

    return read


def memory_growth(peak: str, idle: str) -> Callable[[dict[str, Any]], float | None]:
    def read(figures: dict[str, Any]) -> float | None:
        memory = figures.get("memory", {})
        if peak not in memory or idle not in memory:
            return None
        return float(memory[peak]) - float(memory[idle])

    return read


def slowest_warm_query(figures: dict[str, Any]) -> float | None:
    queries = figures.get("catalog", {}).get("queries", [])
    typical = [q["warm_ms"] for q in queries if q.get("typical", True)]
    return max(typical) if typical else None


TARGETS = (
    Target(
        "receive CT, 1 association, vs dcmtk storescp",
        ">= 0.75",
        receive_ratio("receive-1", "ct", "storescp"),
        lambda v: v >= 0.75,
    ),
    Target(
        "receive small, 1 association, vs dcmtk storescp",
        ">= 0.60",
        receive_ratio("receive-1", "small", "storescp"),
        lambda v: v >= 0.6,
    ),
    Target(
        "receive CT, 1 association, vs Orthanc",
        "> 1 (passes)",
        receive_ratio("receive-1", "ct", "orthanc"),
        lambda v: v > 1,
    ),
    Target(
        "receive CT, 4 associations, vs Orthanc",
        ">= 1.5",
        receive_ratio("receive-4", "ct", "orthanc"),
        lambda v: v >= 1.5,
    ),
    Target(
        "receive CT, 4 associations, vs storescp --fork",
        ">= 0.7",
        receive_ratio("receive-4", "ct", "storescp"),
        lambda v: v >= 0.7,
    ),
    Target(
        "autoload per core vs naive pydicom loop",
        ">= 3",
        path("autoload", "ratios", "one_worker_vs_naive"),
        lambda v: v >= 3,
    ),
    Target(
        "autoload 2 workers vs 1",
        ">= 1.7",
        path("autoload", "ratios", "two_workers_vs_one"),
        lambda v: v >= 1.7,
    ),
    Target(
        "Prefect overhead, autoload with a server",
        "<= 10 %",
        path("autoload", "ratios", "prefect_overhead_percent"),
        lambda v: v <= 10,
        "%",
    ),
    Target(
        "empty autoload with a server",
        "<= 3 s",
        path("autoload", "empty_autoload_s"),
        lambda v: v <= 3,
        "s",
    ),
    Target(
        "receive a large instance: peak above idle",
        "< 150 MB",
        memory_growth("receiver_peak_rss_mib", "receiver_idle_rss_mib"),
        lambda v: v < 150,
        "MiB",
    ),
    Target(
        "autoload a large instance: peak above idle",
        "< 150 MB",
        memory_growth("autoload_peak_rss_mib", "autoload_rss_before_mib"),
        lambda v: v < 150,
        "MiB",
    ),
    Target(
        "catalog: slowest typical query, warm",
        "<= 50 ms",
        slowest_warm_query,
        lambda v: v <= 50,
        "ms",
    ),
)


def run_step(step: Step, quick: bool, scratch: Path) -> dict[str, Any]:
    """Run one script, its output streaming through; its figures, or {} if it failed."""
    out = scratch / f"{step.name}.json"
    cmd = [sys.executable, str(HERE / step.script), *(step.quick if quick else step.args)]
    if step.json_flag:
        cmd += ["--json", str(out)]
    print(f"\n=== {step.name}: {' '.join(cmd[1:])}", flush=True)
    started = time.perf_counter()
    if step.json_flag:
        code = subprocess.run(cmd, check=False).returncode
        text = out.read_text() if out.exists() else ""
    else:  # the figures are the last thing it prints: a JSON object
        done = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True)
        code, text = done.returncode, done.stdout
        print(text, end="")
        text = text[text.rfind("\n{") + 1 :] if "\n{" in text else text
    print(f"=== {step.name}: exit {code} after {time.perf_counter() - started:.0f} s", flush=True)
    if code != 0:
        return {}
    try:
        figures = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return figures if isinstance(figures, dict) else {}


def table(figures: dict[str, Any]) -> list[str]:
    """The targets as Markdown rows: what, goal, measured, met."""
    rows = ["| target | goal | measured | met |", "|---|---|---|---|"]
    for target in TARGETS:
        value = target.measure(figures)
        if value is None:
            shown, met = "not measured", "-"
        else:
            shown = f"{value:.2f}{'' if target.unit == 'x' else ' ' + target.unit}"
            met = "yes" if target.met(value) else "**no**"
        rows.append(f"| {target.what} | {target.goal} | {shown} | {met} |")
    return rows


def machine() -> str:
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{len(os.sched_getaffinity(0))} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}, pynetdicom {version('pynetdicom')}, "
        f"pydicom {version('pydicom')}, prefect {version('prefect')}; "
        f"load average at the end {load}"
    )


def write_doc(doc: Path, rows: list[str], command: str) -> None:
    """Replace the part of `doc` between the markers (or append it) with the table."""
    block = "\n".join([MARKER, f"`{command}` — {machine()}.", "", *rows, MARKER])
    text = doc.read_text() if doc.exists() else ""
    if text.count(MARKER) >= 2:
        head, _, rest = text.partition(MARKER)
        _, _, tail = rest.partition(MARKER)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    doc.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller corpora, fewer runs")
    parser.add_argument("--only", nargs="+", choices=[s.name for s in STEPS], help="these steps")
    parser.add_argument("--doc", type=Path, help="write the table into this Markdown file")
    args = parser.parse_args(argv)
    steps = [s for s in STEPS if not args.only or s.name in args.only]
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dicomflow-bench-all-") as scratch:
        for step in steps:
            figures[step.name] = run_step(step, args.quick, Path(scratch))
    rows = table(figures)
    print("\n" + "\n".join(rows))
    print(f"\n{machine()}")
    if args.doc:
        command = " ".join(["bench/all.py", *(argv if argv is not None else sys.argv[1:])])
        write_doc(args.doc, rows, command)
        print(f"table written to {args.doc}")
    failed = [s.name for s in steps if not figures.get(s.name)]
    if failed:
        print(f"steps that gave no figures: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
