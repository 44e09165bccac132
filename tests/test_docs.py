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
