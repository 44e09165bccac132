"""The `dicomflow` command as a user runs it: subprocesses, real ports, one-line errors."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pydicom.data import get_testdata_file

from tests.conftest import dcmtk_env, free_port, require_dcmtk, send_with_storescu, wait_for_port

DICOMFLOW = [sys.executable, "-m", "flows.cli"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [*DICOMFLOW, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def clean_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
    env["DICOMFLOW_DATA_DIR"] = str(data_dir)
    return env


@pytest.mark.parametrize(
    "command", ["receive", "autoload", "serve", "sql", "catalog", "quarantine", "demo", "report"]
)
def test_every_command_has_help(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    assert "usage: dicomflow" in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["receive", "--port", "99999"], "--port"),
        (["receive", "--ae-title", "WAY_TOO_LONG_AE_TITLE"], "--ae-title"),
        (["--config", "/nonexistent/site.toml", "autoload"], "config file not found"),
        (
            ["sql", "SELECT * FROM range(5)", "--max-rows", "99999999999999999999"],
            "dicomflow: argument --max-rows: must be 1 to 10_000_000",
        ),
        (["sql"], "dicomflow: the following arguments are required: query (see dicomflow sql"),
        (["catalog"], "required: ACTION (see dicomflow catalog --help)"),
        (["import", "--no-such-option", "x"], "dicomflow: unrecognized arguments: --no-such"),
    ],
)
def test_bad_arguments_give_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    result = run(*args, env=clean_env(tmp_path))
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", "dicomflow: sql: no statement given"),
        ("  -- only a comment", "dicomflow: sql: no statement given"),
        ("SELECT 1; SELECT 2", "dicomflow: sql: one statement at a time (2 given"),
    ],
)
def test_sql_runs_one_statement_or_says_why_not(tmp_path: Path, query: str, expected: str) -> None:
    result = run("sql", query, env=clean_env(tmp_path))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith(expected)
    assert "Traceback" not in result.stderr
    one = run("sql", "SELECT 41 + 1 AS answer;", "--format", "csv", env=clean_env(tmp_path))
    assert one.returncode == 0 and one.stdout.split() == ["answer", "42"]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DICOMFLOW_ANONYMIZE__SITE_RULES", "/nonexistent/rules.toml", "rules file /nonexistent"),
        ("DICOMFLOW_ANONYMIZE__SALT", "", "anonymize.salt"),
        ("DICOMFLOW_ANONYMIZE__OPTIONS", '["retain-everything"]', "anonymize.options"),
        ("DICOMFLOW_CATALOG_DIR", "/etc/hostname", "catalog folder"),
    ],
)
def test_autoload_checks_settings_before_starting(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    result = run("autoload", env=clean_env(tmp_path) | {variable: value})
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_environment_value_gives_one_line(tmp_path: Path) -> None:
    env = clean_env(tmp_path) | {"DICOMFLOW_AUTOLOAD__BATCH_SIZE": "many"}
    result = run("sql", "SELECT 1", env=env)
    assert result.returncode == 2
    assert "autoload.batch_size" in result.stderr and "Traceback" not in result.stderr


def test_sql_on_empty_catalog_and_formats(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    table = run("sql", "SELECT count(*) AS n FROM instances", env=env)
    assert table.returncode == 0 and "0" in table.stdout
    csv = run("sql", "SELECT 1 AS a, 'x' AS b", "--format", "csv", env=env)
    assert csv.stdout.splitlines() == ["a,b", "1,x"]
    as_json = run("sql", "SELECT 1 AS a", "--format", "json", env=env)
    assert json.loads(as_json.stdout.strip()) == {"a": 1}
    out = tmp_path / "rows.parquet"
    parquet = run("sql", "SELECT 42 AS answer", "--out", str(out), env=env)  # format from suffix
    assert parquet.returncode == 0
    assert out.read_bytes()[:4] == b"PAR1"
    dates = "SELECT DATE '2024-01-31' AS d, 9802::HUGEINT AS n"
    assert run("sql", dates, "--format", "csv", env=env).stdout.splitlines()[1] == "2024-01-31,9802"
    assert json.loads(run("sql", dates, "--format", "json", env=env).stdout) == {
        "d": "2024-01-31",
        "n": 9802,
    }
    appended = tmp_path / "appended.csv"
    appended.write_text("kept\n")
    with appended.open("a") as fh:  # what `dicomflow sql ... --format csv >> file` does
        subprocess.run([*DICOMFLOW, "sql", "SELECT 1 AS a", "--format", "csv"], env=env, stdout=fh)
    assert appended.read_text().splitlines() == ["kept", "a", "1"]
    missing = run("sql", "SELECT 1", "--out", str(tmp_path / "no" / "x.csv"), env=env)
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_sql_error_is_one_line(tmp_path: Path) -> None:
    result = run("sql", "SELEC nonsense", env=clean_env(tmp_path))
    assert result.returncode == 1
    assert "no catalog at" in result.stderr  # nothing was archived there yet
    assert result.stderr.splitlines()[-1].startswith("dicomflow: SQL error")
    assert "Traceback" not in result.stderr


def test_receive_answers_echoscu_and_stops_on_sigint(tmp_path: Path) -> None:
    require_dcmtk()
    port = free_port()
    process = subprocess.Popen(
        [*DICOMFLOW, "receive", "--port", str(port), "--ae-title", "CLI_TEST"],
        env=clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port)
        echo = subprocess.run(
            ["echoscu", "-aec", "CLI_TEST", "127.0.0.1", str(port)], env=dcmtk_env(), timeout=30
        )
        assert echo.returncode == 0
        assert send_with_storescu("CLI_TEST", port, get_testdata_file("CT_small.dcm")) == 0
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "1 stored" in stdout
    receipts = (tmp_path / "logs" / "receipts.jsonl").read_text().splitlines()
    assert len(receipts) == 1 and json.loads(receipts[0])["calling_ae"] == "STORESCU"
    assert len(list((tmp_path / "landing").glob("*.dcm"))) == 1


def test_serve_receives_autoloads_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """Receiver plus scheduled autoload in one command; Ctrl-C (SIGINT to the group) stops all."""
    require_dcmtk()
    port, prefect_port = free_port(), free_port()
    env = clean_env(tmp_path / "data") | {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "DICOMFLOW_AUTOLOAD__PREFECT_PORT": str(prefect_port),
        "DICOMFLOW_AUTOLOAD__INTERVAL_SECONDS": "2",
    }
    env.pop("PREFECT_API_URL", None)
    process = subprocess.Popen(
        [*DICOMFLOW, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_port(port, timeout=60)
        assert send_with_storescu("DICOMFLOW", port, get_testdata_file("CT_small.dcm")) == 0
        archive = tmp_path / "data" / "archive"
        deadline = time.monotonic() + 120
        while not list(archive.rglob("*.dcm")) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(list(archive.rglob("*.dcm"))) == 1, "the scheduled autoload never ran"
        ui = httpx.get(f"http://127.0.0.1:{prefect_port}/ui-settings", timeout=10).json()
        assert ui["api_url"] == f"http://127.0.0.1:{prefect_port}/api", "the UI finds its API"
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, stderr[-2000:]
    assert "stopped" in stdout
    with socket.socket() as probe:  # the Prefect server it started is gone too
        assert probe.connect_ex(("127.0.0.1", prefect_port)) != 0


def test_demo_sends_real_files_end_to_end(tmp_path: Path) -> None:
    """README's first command: at least 100 instances of at least 5 modalities reach SQL."""
    env = clean_env(tmp_path / "demo") | {"PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    result = run("demo", env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "instances per modality" in result.stdout
    # counts by reason in words, `quarantined: 4 missing-uid, 5 phi-gate`, not a dict's repr
    quarantined = re.search(r"^ +quarantined: (.+)$", result.stdout, re.MULTILINE)
    assert quarantined, result.stdout[:2000]
    assert re.fullmatch(r"\d+ [a-z-]+(, \d+ [a-z-]+)*", quarantined.group(1)), quarantined.group(0)
    out = run(
        "sql",
        "SELECT count(*), count(DISTINCT modality) FROM instances",
        "--format",
        "csv",
        env=env,
    )
    instances, modalities = map(int, out.stdout.splitlines()[1].split(","))
    assert instances >= 100 and modalities >= 5


def test_policy_shows_each_attributes_rule_under_the_settings(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('name = "ours"\n[attributes]\nStudyDescription = "keep"\n')
    env = clean_env(tmp_path) | {
        "DICOMFLOW_ANONYMIZE__SITE_RULES": str(site),
        "DICOMFLOW_ANONYMIZE__OPTIONS": '["retain-uids"]',
    }
    result = run("policy", "StudyDescription", "SOPInstanceUID", "(0008,0080)", "Rows", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "  Retain UIDs Option" in lines and "  site rules: ours" in lines
    rules = {line.split()[1]: line.split()[2] for line in lines if line.startswith("(")}
    assert rules == {
        "StudyDescription": "keep",
        "SOPInstanceUID": "keep",
        "InstitutionName": "dummy",
        "Rows": "keep",
    }
    bad = run("policy", "NoSuchThing", env=clean_env(tmp_path))
    assert bad.returncode == 1 and "NoSuchThing: not a DICOM keyword" in bad.stderr


def test_catalog_and_quarantine_commands(tmp_path: Path) -> None:
    import duckdb

    import catalog
    from flows.autoload import ingest_context
    from flows.settings import Settings
    from receiver.landing import LandingZone
    from tasks.ingest import archive_files, clear_landing, record_instances
    from tasks.operations import mirror_quarantine

    data = tmp_path / "data"
    env = clean_env(data)
    settings = Settings(data_dir=data)
    zone = LandingZone(settings.landing)
    landed = [
        zone.store(Path(get_testdata_file(n)).read_bytes())
        for n in ("CT_small.dcm", "MR_small.dcm")
    ]
    garbage = settings.landing / "20260101T000000000000Z-garbage.dcm"
    garbage.write_bytes(b"\0garbage" * 8)
    ctx = ingest_context(settings, "run-1")
    outcome = archive_files([*landed, garbage], ctx)
    record_instances(outcome.archived, ctx.store())
    clear_landing(outcome.archived)
    mirror_quarantine(ctx)

    listed = run("quarantine", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "not-dicom" in listed.stdout and "1 quarantined files: not-dicom 1" in listed.stdout

    first = sorted(settings.archive.rglob("*.dcm"))[0]
    first.unlink()
    broken = run("catalog", "check", "--no-hash", env=env)
    assert broken.returncode == 1
    assert broken.stdout.splitlines()[0].startswith("missing-file: ")

    out = tmp_path / "catalog.duckdb"
    exported = run("catalog", "export", "--out", str(out), env=env)
    assert exported.returncode == 0, exported.stderr
    assert "instances_history 2" in exported.stdout  # every version; the views show current rows
    with duckdb.connect(str(out), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM instances").fetchall() == [(2,)]
        assert con.sql("SELECT count(*) FROM records").fetchall() == [(2,)]
        assert con.sql("SELECT count(*) FROM quarantine").fetchall() == [(1,)]
        mr = "SELECT count(*) FROM instances WHERE dicom_value(dicom_json, 'Modality') = 'MR'"
        assert con.sql(mr).fetchall() == [(1,)]

    compacted = run("catalog", "compact", env=env)
    assert compacted.returncode == 0 and "merged" in compacted.stdout, compacted.stderr

    retried = run("quarantine", "retry", "--reason", "not-dicom", env=env)
    assert retried.returncode == 0 and "moved 1 files back" in retried.stdout, retried.stderr
    assert garbage.exists() and not list(settings.quarantine.glob("*.dcm"))
    con = catalog.connect(settings.catalog_store())
    assert con.sql("SELECT count(*) FROM quarantine").fetchall() == [(0,)]
    assert con.sql("SELECT count(*) FROM quarantine_history").fetchall() == [(2,)]


BAD_JOB_IDS = ["../../../tmp/escape", "..", ".", "a/b", "a\nb", "*", "a\\b", "x" * 300, ""]


@pytest.mark.parametrize("job_id", BAD_JOB_IDS)
def test_retrieve_refuses_a_job_id_that_is_a_path(tmp_path: Path, job_id: str) -> None:
    """A job id names a folder under retrieve/jobs: anything else is refused before any work."""
    job = tmp_path / "job.csv"
    job.write_text("StudyInstanceUID\n1.2.3\n")
    data = tmp_path / "data"
    result = run(
        "retrieve",
        str(job),
        "--node",
        "PACS@127.0.0.1:1",
        f"--job-id={job_id}",
        "--no-progress",
        env=clean_env(data),
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("dicomflow: --job-id: bad job id ")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert "letters, digits, '.', '_' or '-'" in result.stderr
    assert not any(tmp_path.parent.rglob("progress.json")), "nothing written anywhere"


def test_job_ids_are_checked_by_the_flow_and_its_schema() -> None:
    from prefect.exceptions import ParameterTypeError
    from prefect.utilities.callables import parameter_schema

    from flows.retrieve import retrieve
    from tasks.retrieval import JOB_ID_PATTERN, JobError, check_job_id, job_dir

    assert check_job_id("nightly-2026.12_04") == "nightly-2026.12_04"
    for job_id in BAD_JOB_IDS:
        with pytest.raises(JobError, match="bad job id"):
            job_dir(Path("/data/retrieve"), job_id)
    schema = parameter_schema(retrieve.fn).model_dump()["properties"]["job_id"]
    assert {"type": "string", "pattern": JOB_ID_PATTERN} in schema["anyOf"]
    with pytest.raises(ParameterTypeError):
        retrieve.validate_parameters({"node": "pacs", "job_id": "../escape"})


def test_retrieve_from_a_node_that_refuses_fails_at_once(tmp_path: Path) -> None:
    """One C-ECHO before the job: no retries against a node nobody listens on."""
    job = tmp_path / "job.csv"
    job.write_text("StudyInstanceUID\n1.2.3\n")
    node = f"PACS@127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run("retrieve", str(job), "--node", node, "--no-progress", env=clean_env(tmp_path))
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == f"dicomflow: cannot reach {node}: connection refused"
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_sigterm_stops_retrieve_at_once(tmp_path: Path) -> None:
    """SIGTERM mid-job: one line, exit 143 in seconds; no crash report, no API errors."""
    port = free_port()
    pacs = subprocess.Popen(
        [*DICOMFLOW, "receive", "--port", str(port)],
        env=clean_env(tmp_path / "pacs"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        job = tmp_path / "job.csv"
        job.write_text("StudyInstanceUID\n" + "".join(f"1.2.3.{i}\n" for i in range(400)))
        data = tmp_path / "data"
        env = {**clean_env(data), "DICOMFLOW_RECEIVER__PORT": str(free_port())}
        command = ["retrieve", str(job), "--node", f"DICOMFLOW@127.0.0.1:{port}", "--job-id=t"]
        proc = subprocess.Popen(
            [*DICOMFLOW, *command, "--no-progress"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        progress_file = data / "retrieve" / "jobs" / "t" / "progress.json"
        deadline = time.monotonic() + 90
        while not progress_file.exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - sent < 10
        assert proc.returncode == 143, err[-500:]
        assert err.splitlines()[-1] == (
            "dicomflow: interrupted (the job can be re-run: it does what is left)"
        )
        assert "Crash detected" not in err and "Error logging to API" not in err
        assert "Traceback" not in err and "ConnectError" not in err
    finally:
        pacs.send_signal(signal.SIGTERM)
        pacs.wait(timeout=30)
