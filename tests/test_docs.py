"""The reference docs name every setting and every catalog column the code has."""

from __future__ import annotations

from pathlib import Path

from catalog.schema import TABLES
from flows.settings import AnonymizeSettings, AutoloadSettings, Settings
from receiver.settings import ReceiverSettings

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_configuration_doc_lists_every_setting() -> None:
    text = (DOCS / "configuration.md").read_text()
    sections = [("", Settings), ("receiver.", ReceiverSettings)]
    sections += [("autoload.", AutoloadSettings), ("anonymize.", AnonymizeSettings)]
    for prefix, model in sections:
        for name, field in model.model_fields.items():
            if prefix == "" and hasattr(field.annotation, "model_fields"):
                continue
            assert f"`{prefix}{name}`" in text, f"{prefix}{name} is not documented"


def test_catalog_doc_lists_every_column() -> None:
    text = (DOCS / "catalog.md").read_text()
    for table, columns in TABLES.items():
        assert f"## {table}" in text
        for column in columns:
            assert f"`{column.name}`" in text, f"{table}.{column.name} is not documented"
