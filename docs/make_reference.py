"""Write docs/configuration.md, catalog.md and conformance.md from the code that defines them.

Run after changing a setting or a catalog column:
``.venv/bin/python docs/make_reference.py``; tests/test_docs.py fails until you do.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from catalog.schema import KEYS, TABLES
from flows.settings import AnonymizeSettings, AutoloadSettings, RetrieveSettings, Settings
from receiver.settings import NodeTls, ReceiverSettings, RemoteNode, ScuSettings, TlsSettings

DOCS = Path(__file__).resolve().parent

CONFIG_INTRO = """# Configuration

Settings come from, highest priority first: `DICOMFLOW_*` environment variables, the TOML
file given by `--config` or `DICOMFLOW_CONFIG`, then these defaults. The command line's
`--data-dir` sets `DICOMFLOW_DATA_DIR`; `receive` and `serve` also take `--host`, `--port`
and `--ae-title`. An unknown key or a bad value stops with one line naming it.

```toml
data_dir = "/var/lib/dicomflow"

[receiver]
ae_title = "DICOMFLOW"
host = "127.0.0.1"    # "0.0.0.0" listens on every interface: only behind a firewall
port = 11112
max_associations = 10
allowed_callers = ["CT1", "MR1@10.1.2.0/24"]   # needed once host is not loopback

[receiver.tls]        # optional: DICOM TLS
cert_file = "/etc/dicomflow/server.pem"
key_file = "/etc/dicomflow/server.key"

[autoload]
interval_seconds = 60
batch_size = 200

[anonymize]
salt = "a long random secret"

[nodes.pacs]          # a remote node: `dicomflow echo pacs`, `find pacs`, `retrieve --node pacs`
ae_title = "PACS"
host = "pacs.hospital.example"
port = 104

[retrieve]
window = "20:00-06:00"
```

| setting | environment variable | default | meaning |
|---|---|---|---|
"""

CONFIG_OUTRO = """
Folders left unset live under `data_dir`: `landing/`, `archive/`, `quarantine/`, `catalog/`;
receipts go to `<data_dir>/logs/receipts.jsonl`, security events (associations accepted and
rejected, TLS failures) to `<data_dir>/logs/audit.jsonl`, and the generated anonymization key to
`<data_dir>/secrets/anonymization.salt`. docs/operations.md says how access control and TLS work.
"""

CATALOG_INTRO = """# Catalog tables

Each table is a folder of Parquet parts under `<data_dir>/catalog/`, one part per
autoload batch. `catalog.connect()` (and `dicomflow sql`) gives DuckDB views:

- `<table>_history`: every row ever written.
- `<table>`: the current row per key (the latest `recorded_at`), and for `series`, `studies`
  and `patients` the counts and sizes derived from the current instances
  (`num_instances`, `total_bytes`, `num_series`, `num_studies`, `modalities`) and
  `created_at`, when the record was first written.

All identifiers are the anonymized ones. Dates are DATE values; times are DICOM strings.
"""

CATALOG_EXAMPLES = """## Examples

```sql
-- instances per modality
SELECT modality, count(*) FROM instances GROUP BY ALL ORDER BY 2 DESC;
-- thin-slice CT series
SELECT series_instance_uid, min(slice_thickness) FROM instances
WHERE modality = 'CT' AND slice_thickness < 1 GROUP BY ALL;
-- studies with more than one modality, newest first
SELECT study_instance_uid, study_date, modalities, num_instances FROM studies
WHERE modalities LIKE '%,%' ORDER BY study_date DESC;
-- what one autoload run recorded
SELECT run_id, count(*) FROM instances_history GROUP BY ALL;
```
"""


def is_section(annotation: Any) -> bool:
    """A settings model, or an optional one: its fields are listed as a section of their own."""
    if get_origin(annotation) in (Union, types.UnionType):
        return any(is_section(arg) for arg in get_args(annotation) if arg is not type(None))
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def setting_rows(model: type[BaseModel], section: str) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        if is_section(field.annotation):
            continue  # a section, listed on its own
        key = f"{section}.{name}" if section else name
        prefix = section.replace(".", "__") + "__" if section else ""
        env = "DICOMFLOW_" + prefix.upper() + name.upper()
        value = field.get_default(call_default_factory=True)
        default = "(required)" if field.is_required() else "" if value is None else value
        rows.append(f"| `{key}` | `{env}` | {default} | {field.description} |")
    return rows


def configuration() -> str:
    sections: list[tuple[type[BaseModel], str]] = [
        (Settings, ""),
        (ReceiverSettings, "receiver"),
        (TlsSettings, "receiver.tls"),
        (AutoloadSettings, "autoload"),
        (AnonymizeSettings, "anonymize"),
        (ScuSettings, "scu"),
        (RetrieveSettings, "retrieve"),
        (RemoteNode, "nodes.NAME"),
        (NodeTls, "nodes.NAME.tls"),
    ]
    rows = [row for model, section in sections for row in setting_rows(model, section)]
    return CONFIG_INTRO + "\n".join(rows) + "\n" + CONFIG_OUTRO


def catalog() -> str:
    parts = [CATALOG_INTRO]
    for table, columns in TABLES.items():
        parts.append(f"## {table}\n\nKey: `{KEYS[table]}`.\n")
        parts.append("| column | type | from | meaning |\n|---|---|---|---|")
        parts.extend(
            f"| `{c.name}` | {c.type} | {c.keyword or ''} | {c.description} |" for c in columns
        )
        parts.append("")
    parts.append(CATALOG_EXAMPLES)
    return "\n".join(parts)


def conformance_statement() -> str:
    """docs/conformance.md: `dicomflow conformance` under the default settings."""
    from receiver.conformance import conformance

    return conformance(ReceiverSettings(), ScuSettings())


def main() -> None:
    (DOCS / "configuration.md").write_text(configuration())
    (DOCS / "catalog.md").write_text(catalog())
    (DOCS / "conformance.md").write_text(conformance_statement())


if __name__ == "__main__":
    main()
