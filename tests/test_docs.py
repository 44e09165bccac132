"""The reference docs are the ones docs/make_reference.py writes from the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def load_generator():
    spec = importlib.util.spec_from_file_location("make_reference", DOCS / "make_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_doc_is_current() -> None:
    expected = load_generator().configuration()
    assert (DOCS / "configuration.md").read_text() == expected, "run docs/make_reference.py"


def test_catalog_doc_is_current() -> None:
    expected = load_generator().catalog()
    assert (DOCS / "catalog.md").read_text() == expected, "run docs/make_reference.py"


def test_conformance_statement_is_current() -> None:
    expected = load_generator().conformance_statement()
    assert (DOCS / "conformance.md").read_text() == expected, "run docs/make_reference.py"
    for promised in ("1.2.840.10008.5.1.4.1.2.2.3", "CT Image Storage", "65536 bytes"):
        assert promised in expected


def test_conformance_command_follows_the_settings(tmp_path: Path, monkeypatch, capsys) -> None:
    from flows.cli import main

    monkeypatch.setenv("DICOMFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DICOMFLOW_RECEIVER__MAX_PDU", "16384")
    monkeypatch.setenv("DICOMFLOW_RECEIVER__QUERY_RETRIEVE", "false")
    assert main(["conformance"]) == 0
    text = capsys.readouterr().out
    assert "16384 bytes" in text and "Study Root Query/Retrieve Information Model - GET" not in text


def test_architecture_names_only_modules_that_exist() -> None:
    """docs/architecture.md names modules by path or by package table: each must exist."""
    import re

    text = (DOCS / "architecture.md").read_text()
    root = DOCS.parent
    paths = set(re.findall(r"\b((?:receiver|tasks|flows|catalog)/\w+\.py)", text))
    package = ""
    for named, modules in re.findall(r"^\|\s*(`\w+/`)?\s*\|([^|]+)\|", text, re.MULTILINE):
        package = named.strip("`") or package
        paths |= {package + name for name in re.findall(r"`(\w+\.py)`", modules)}
    assert len(paths) > 40
    assert not [p for p in sorted(paths) if not (root / p).is_file()]
    assert "(docs/architecture.md)" in (root / "README.md").read_text()
