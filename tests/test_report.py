"""`dicomflow report`: a real catalog's charts on one page, seen in a real browser."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import catalog
from catalog.report_data import TOP, gather
from flows.cli import main
from flows.settings import Settings
from tests.corpus import DAYS, autoloaded_catalog

CHARTS = (
    "per-day",
    "modalities",
    "sop-classes",
    "transfer-syntaxes",
    "quarantine",
    "archive-growth",
)


@pytest.fixture(scope="module")
def archive(prefect_harness, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with autoloaded_catalog(tmp_path_factory.mktemp("report")) as settings:
        yield settings


def report(*args: str) -> subprocess.CompletedProcess[str]:
    """`dicomflow report` as a user runs it, with the environment the fixture set."""
    command = [sys.executable, "-m", "flows.cli", "report", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def screenshot(page: Path, png: Path) -> dict[str, object]:
    """Open `page` in headless Chromium with the network cut off; save a full-page PNG.

    Returns what the browser saw: requests it tried beyond the page itself, and the
    size each chart's ``<svg>`` was laid out at.
    """
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    with sync_playwright() as play:
        browser = play.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1100, "height": 900})

            def refuse(route) -> None:  # type: ignore[no-untyped-def]
                if route.request.url != page.as_uri():
                    outside.append(route.request.url)
                    route.abort()
                else:
                    route.continue_()

            tab.route("**/*", refuse)
            tab.goto(page.as_uri())
            sizes = {
                chart: tab.eval_on_selector(
                    f"#{chart} figure svg",
                    "e => [e.getBoundingClientRect().width, e.getBoundingClientRect().height]",
                )
                for chart in CHARTS
            }
            tab.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()
    return {"outside": outside, "sizes": sizes}


def test_report_of_a_real_catalog_renders_in_chromium(archive: Settings, tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "report.html"
    result = report("--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out} (catalog: ") and "instances" in result.stdout
    page = out.read_text()

    # self-contained: nothing fetched, no script; links only inside the page
    links = re.findall(r'(?:src|href)="([^"]*)"|url\(([^)]*)\)', page)
    outside = {x for pair in links for x in pair if x and not x.startswith("#")}
    assert links and not outside, outside
    assert "<script" not in page and "<link" not in page
    # no patient pseudonym, and no UID of the catalog, anywhere on the page
    con = catalog.connect(archive.catalog_store())
    ids = con.sql("SELECT DISTINCT patient_id FROM patients").fetchall()
    uids = con.sql("SELECT study_instance_uid FROM studies").fetchall()
    assert ids and uids
    assert not [v for (v,) in ids + uids if v and v in page]

    seen = screenshot(out, tmp_path / "report.png")
    assert seen["outside"] == []
    for chart, (width, height) in seen["sizes"].items():  # type: ignore[attr-defined]
        assert width > 300 and height > 100, chart

    image = Image.open(tmp_path / "report.png").convert("RGB")
    assert image.height > 2000  # six charts, one below the other
    counts = {colour: n for n, colour in image.getcolors(image.width * image.height) or []}
    not_white = 1 - counts.get((255, 255, 255), 0) / (image.width * image.height)
    assert len(counts) > 200 and not_white > 0.05, (len(counts), not_white)


def test_report_data_answers_from_the_catalog(archive: Settings) -> None:
    """What the charts show is what SQL on the catalog says, day by day."""
    con = catalog.connect(archive.catalog_store())
    data = gather(con)
    [(instances,)] = con.sql("SELECT count(*) FROM instances").fetchall()
    assert sum(i for _, i, _ in data.per_day) == instances
    today = datetime.now(UTC).date()
    assert [d for d, _, _ in data.per_day] == [today - timedelta(days=n) for n in range(DAYS)][::-1]
    assert dict(data.modalities)["CT"] > dict(data.modalities)["MR"] > 0
    assert data.sop_classes[0] == ("CT Image Storage", dict(data.modalities)["CT"])
    assert "JPEG Baseline (Process 1)" in dict(data.transfer_syntaxes)
    for named in (data.sop_classes, data.transfer_syntaxes):  # the rest added up, none lost
        assert len(named) <= TOP and sum(n for _, n in named) == instances
    assert {r for _, r, _ in data.quarantine} >= {"not-dicom", "dicomdir"}
    sizes = [b for _, b in data.archive_growth]
    assert sizes == sorted(sizes) and sizes[-1] == data.totals.archive_bytes

    since = gather(con, today)  # only today's arrivals; growth keeps the bytes from before
    assert [d for d, _, _ in since.per_day] == [today]
    assert sum(n for _, n in since.modalities) == since.per_day[0][1] < instances
    assert since.archive_growth == [(today, data.totals.archive_bytes)]


def test_report_on_an_empty_catalog_says_so(settings: Settings, tmp_path: Path, capsys) -> None:
    out = tmp_path / "empty.html"
    assert main(["report", "--out", str(out)]) == 0
    assert "catalog: empty" in capsys.readouterr().out
    page = out.read_text()
    assert "The catalog is empty" in page and "<svg" not in page


def test_report_on_a_data_root_that_does_not_exist_warns(
    settings: Settings, tmp_path: Path, capsys
) -> None:
    nowhere, out = settings.data_dir, tmp_path / "x.html"
    assert main(["report", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"dicomflow: warning: data root {nowhere} does not exist "
        "(--data-dir or DICOMFLOW_DATA_DIR?); the page shows an empty catalog\n"
    )
    assert "catalog: empty" in captured.out and "The catalog is empty" in out.read_text()
    assert not nowhere.exists()
    settings.data_dir.mkdir()  # a data root, but nothing archived yet: as `sql` says it
    assert main(["report", "--out", str(out)]) == 0
    assert f"dicomflow: note: no catalog at {settings.catalog_location} yet" in (
        capsys.readouterr().err
    )


def test_an_empty_report_out_is_named_so(settings: Settings, capsys) -> None:
    assert main(["report", "--out", ""]) == 1
    assert capsys.readouterr().err == "dicomflow: --out: empty path\n"


def test_bad_report_arguments_are_one_line(settings: Settings, tmp_path: Path, capsys) -> None:
    for where in (tmp_path / "missing" / "report.html", tmp_path):  # no folder; a folder
        assert main(["report", "--out", str(where)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"dicomflow: --out {where}: ") and len(err.splitlines()) == 1
    assert not list(tmp_path.glob("**/*.html"))
    with pytest.raises(SystemExit) as stopped:
        main(["report", "--out", str(tmp_path / "r.html"), "--since", "last week"])
    assert stopped.value.code == 2
    assert "not a date as YYYY-MM-DD: 'last week'" in capsys.readouterr().err
