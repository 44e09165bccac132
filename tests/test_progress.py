"""Progress bars: drawn in a terminal or on --progress, never in the output scripts read."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from pydicom.data import get_testdata_file

from flows.cli import main
from flows.settings import Settings
from receiver.landing import LandingZone
from tests.faults import make_instances

DICOMFLOW = [sys.executable, "-m", "flows.cli"]


def in_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run `dicomflow args` with stdin, stdout and stderr on a pseudo-terminal; all it wrote."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its standard streams are the terminal
        os.execvpe(DICOMFLOW[0], [*DICOMFLOW, *args], env)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, b"".join(chunks)[-2000:]
    return b"".join(chunks).decode(errors="replace")


def test_import_draws_a_bar_only_for_a_terminal(settings: Settings, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    make_instances(tree, 3, side=16)
    (tree / "notes.txt").write_text("not dicom")
    env = dict(os.environ)
    line = f"imported 3 files into {settings.landing}; skipped 1 that are not DICOM; 0 failed"

    piped = subprocess.run([*DICOMFLOW, "import", str(tree)], capture_output=True, text=True)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == line + "\n"  # exactly what scripts read, as before
    assert "\x1b[" not in piped.stderr and "3 imported" not in piped.stderr

    forced = subprocess.run(
        [*DICOMFLOW, "import", str(tree), "--progress"], capture_output=True, text=True
    )
    assert forced.returncode == 0 and forced.stdout == line + "\n"
    assert "3 imported, 1 skipped, 0 failed" in forced.stderr  # the bar, on stderr only

    shown = in_terminal(["import", str(tree)], env)
    assert "\x1b[" in shown and "3 imported, 1 skipped, 0 failed" in shown
    assert line in shown.replace("\r\n", "\n").replace("\n", "")
    hidden = in_terminal(["import", str(tree), "--no-progress"], env)
    assert "\x1b[" not in hidden and "3 imported," not in hidden and "imported 3 files" in hidden


def test_compact_counts_the_partitions_it_merges(settings: Settings, capsys) -> None:
    from flows.autoload import ingest_context
    from tasks.ingest import archive_files, record_instances

    zone = LandingZone(settings.landing)
    for name in ("CT_small.dcm", "MR_small.dcm"):  # two batches: two parts per table
        ctx = ingest_context(settings, f"run-{name}")
        outcome = archive_files([zone.store(Path(get_testdata_file(name)).read_bytes())], ctx)
        record_instances(outcome.archived, ctx.store())

    assert main(["catalog", "compact", "--progress"]) == 0
    shown = capsys.readouterr()
    merged = [line for line in shown.out.splitlines() if line.endswith("parts -> 1")]
    assert merged and shown.out.splitlines()[-1].startswith("merged ")
    assert "compacting" in shown.err and f"{len(merged)}/{len(merged)}" in shown.err

    assert main(["catalog", "compact"]) == 0  # not a terminal: no bar
    quiet = capsys.readouterr()
    assert quiet.err == "" and quiet.out.startswith("merged 0 parts")


def test_retrieve_follows_the_job_with_a_bar(
    prefect_harness, settings: Settings, capsys, monkeypatch
) -> None:
    """A node that answers nothing: the job's one row ends failed, and the bar saw it done."""
    from tests.conftest import free_port

    monkeypatch.setenv("DICOMFLOW_RETRIEVE__RETRIES", "0")
    monkeypatch.setattr("flows.remote.echo", lambda peer: 1.0)  # past the C-ECHO up front

    job = settings.data_dir.parent / "job.csv"
    job.write_text("StudyInstanceUID\n1.2.3.4\n")
    node = f"NOBODY@127.0.0.1:{free_port()}"
    args = ["retrieve", str(job), "--node", node, "--dest", "ELSEWHERE", "--job-id", "bar"]
    assert main([*args, "--progress"]) == 1
    shown = capsys.readouterr()
    assert "retrieve bar" in shown.err and "━" in shown.err and "1/1" in shown.err
    assert "not everything is archived (1 failed)" in shown.err, shown.err[-300:]
    assert f"  1 failed: gave up: cannot connect to {node}: connection refused\n" in shown.err
    assert main(args) == 1  # the same job again, not in a terminal: no bar
    quiet = capsys.readouterr()
    assert "━" not in quiet.err and "1/1" not in quiet.err  # the bar's own marks
    timeless = [
        [x for x in out.splitlines() if "seconds" not in x] for out in (shown.out, quiet.out)
    ]
    assert timeless[0] == timeless[1] and "      states: 1 failed" in timeless[0]


def test_log_lines_are_printed_above_the_bar(settings: Settings) -> None:
    """In a terminal, log lines (ours and Prefect's) never land on the bar's line."""
    import re

    shown = in_terminal(["demo", "--progress"], dict(os.environ))
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)  # the terminal's control sequences
    stamp = re.compile(r"\d\d:\d\d:\d\d\.\d{3} \| ")
    lines = re.split(r"[\r\n]", text)
    logged = [line for line in lines if stamp.search(line)]
    assert any("dicomflow.receiver" in line for line in logged)  # logged while a bar was drawn
    assert any("━" in line for line in lines)
    glued = [line for line in logged if not stamp.match(line.strip())]
    assert not glued, glued[:3]
