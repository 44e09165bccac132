"""docs/examples/catalog_examples.ipynb runs, cell by cell, on a catalog autoload built."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import catalog
from flows.settings import Settings, unknown_variables
from tests.corpus import autoloaded_catalog

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "examples" / "catalog_examples.ipynb"
KERNEL = "dicomflow-examples"


@pytest.fixture(scope="module")
def archive(prefect_harness, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with autoloaded_catalog(tmp_path_factory.mktemp("examples")) as settings:
        yield settings


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """This venv's Python as a kernel of its own, found through JUPYTER_PATH, not the home."""
    prefix = tmp_path / "jupyter"
    subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", KERNEL],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    return KERNEL


def test_the_notebook_is_stored_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_the_notebook_answers_on_a_real_catalog(
    archive: Settings, kernel: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file_list = tmp_path / "training.csv"
    monkeypatch.setenv("DICOMFLOW_CATALOG_DIR", str(archive.catalog_location))
    monkeypatch.setenv("TRAINING_FILE_LIST", str(file_list))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name=kernel,
        timeout=60,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on the first cell that fails

    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot"
    printed = "".join(o.text for o in outputs if o.output_type == "stream")
    summary = next(line for line in printed.splitlines() if line.startswith("summary: "))
    numbers = dict(part.rsplit(" ", 1) for part in summary.removeprefix("summary: ").split("; "))
    assert int(numbers["thin CT series"]) >= 1 and int(numbers["months"]) >= 2
    assert int(numbers["CT+MR patients"]) >= 1  # CT_small's patient, MR twelve days later

    with file_list.open() as fh:
        listed = [row["archive_path"] for row in csv.DictReader(fh)]
    assert listed and all(Path(p).is_file() for p in listed)
    assert int(numbers["files"]) == len(listed)
    con = catalog.connect(archive.catalog_store())
    thin = con.sql(
        "SELECT archive_path FROM instances WHERE modality = 'CT' AND slice_thickness < 1.5"
    ).fetchall()
    assert sorted(listed) == sorted(p for (p,) in thin)


def test_the_notebook_names_only_variables_dicomflow_reads() -> None:
    """An unknown DICOMFLOW_ variable stops every dicomflow command; the notebook sets none."""
    names = set(re.findall(r"DICOMFLOW_[A-Z_]+", NOTEBOOK.read_text()))
    assert names and unknown_variables(dict.fromkeys(names, "x")) == []


def test_the_notebook_run_where_it_is_stored_finds_the_demo_catalog(
    archive: Settings, kernel: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `jupyter execute docs/examples/...` runs it: the kernel starts in docs/examples, the
    defaults are the repository root's dicomflow-demo, and the file list goes in that data root."""
    repo = tmp_path / "repo"
    examples = repo / "docs" / "examples"
    examples.mkdir(parents=True)
    shutil.copy(NOTEBOOK, examples / NOTEBOOK.name)
    (repo / "dicomflow-demo").symlink_to(archive.data_dir, target_is_directory=True)
    for name in ("DICOMFLOW_DATA_DIR", "DICOMFLOW_CATALOG_DIR", "TRAINING_FILE_LIST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("EXAMPLES_ROOT", raising=False)
    notebook = nbformat.read(examples / NOTEBOOK.name, as_version=4)
    client = NotebookClient(
        notebook, kernel_name=kernel, timeout=60, resources={"metadata": {"path": str(examples)}}
    )
    client.execute()

    written = archive.data_dir / "thin_ct_files.csv"
    with written.open() as fh:
        assert [row["archive_path"] for row in csv.DictReader(fh)]
    assert sorted(p.name for p in examples.iterdir()) == [NOTEBOOK.name]
    written.unlink()
