"""Write docs/configuration.md, catalog.md and conformance.md from the code that defines them.

Run after changing a setting or a catalog column:
``.venv/bin/python docs/make_reference.py``; tests/test_docs.py fails until you do.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from catalog.schema import ALL_TABLES, Table
from flows.settings import (
    AnonymizeSettings,
    AutoloadSettings,
    CatalogSettings,
    RetrieveSettings,
    Settings,
)
from receiver.settings import NodeTls, ReceiverSettings, RemoteNode, ScuSettings, TlsSettings

DOCS = Path(__file__).resolve().parent

CONFIG_INTRO = """# Configuration

Settings come from, highest priority first: `DICOMFLOW_*` environment variables, the TOML
file given by `--config` or `DICOMFLOW_CONFIG`, then these defaults. The command line's
`--data-dir` sets `DICOMFLOW_DATA_DIR`; `receive` and `serve` also take `--host`, `--port`
and `--ae-title`. An unknown key, a `DICOMFLOW_` variable that names no setting, or a bad value
stops with one line naming it.

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

[catalog]
record_unit = "study"  # one row of `records` per patient, study or series

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
Folders left unset live under `data_dir`: `landing/`, `archive/`, `quarantine/`, `catalog/`
(`catalog_dir` may also be an fsspec URL: see [catalog.md](catalog.md#on-object-storage));
receipts go to `<data_dir>/logs/receipts.jsonl`, security events (associations accepted and
rejected, TLS failures) to `<data_dir>/logs/audit.jsonl`, and the generated anonymization key to
`<data_dir>/secrets/anonymization.salt`. docs/operations.md says how access control and TLS work.
"""

CATALOG_INTRO = """# The catalog

The catalog describes every archived instance, and the patients, studies, series
and records they make up, in Parquet tables that DuckDB reads in place. Everyone
queries the same views: `dicomflow sql "..."` (`--format table|csv|json|parquet`,
`--out FILE`), `catalog.connect()` from Python, or the DuckDB CLI on a file
`dicomflow catalog export --out catalog.duckdb` writes. All identifiers are the
anonymized ones; dates are DATE values, times DICOM strings, timestamps UTC.

Two ready uses of it: `dicomflow report --out report.html [--since DATE]` draws the
catalog as one self-contained HTML page (arrivals per day, modalities, SOP classes and
transfer syntaxes, quarantine reasons over time, archive growth; counts only, no patient
data), and the notebook [examples/catalog_examples.ipynb](examples/catalog_examples.ipynb)
opens it with `catalog.connect()` to answer research questions in SQL, plot one, and
turn a result into a file list for a training set.

## Views

| view | rows |
|---|---|
| `patients`, `studies`, `series`, `instances` | the current version of each (key below) |
| `records` | the current version of each record of the configured unit |
| `<table>_history` | every version ever written of the tables above, and of `quarantine` |
| `quarantine` | the files in quarantine now; `quarantine_current` also shows released ones |
| `receipts` | every C-STORE the receiver answered |
| `superseded` | which versions are no longer current |
| `dicom_keywords` | DICOM keyword -> tag as DICOM JSON spells it (`SliceThickness` -> `00180050`) |

Nothing is updated in place. When something changes, a new row is appended with the
next `version`. It keeps the first version's `created_at`, and its `recorded_at`
and `run_id` say when and by which autoload run it was written. The version it
replaces is listed in `superseded` in the same write. A current view is its
history without the superseded versions.

- An **instance** gets a new version when it is re-sent with other content (its
  anonymized bytes differ); the archive keeps the latest file. The same content
  again adds nothing.
- A **series**, **study** or **patient** gets a new version whenever its current
  instances change: it is seen for the first time, a new series or more instances
  arrive, or an instance is re-sent with other content. Its counts, bytes and
  modalities are computed over all of its current instances, not just the batch.
- A **record** is one row per unit of `catalog.record_unit` (`patient`, `study` by
  default, or `series`). It is created the first time the unit is seen, and it gets
  a new version, with `updated_at`, each time its unit changes. Its columns do not
  depend on the unit, so queries need not change when the setting does. Changing the
  setting rewrites nothing: the old unit's records stay (filter on `record_unit`),
  and a record of the new unit appears when its unit next changes.

The header attributes researchers filter on most are typed columns of `instances`
(besides `rows`, `columns`, `number_of_frames` and `slice_thickness`): `manufacturer`,
`manufacturer_model_name`, `software_versions`, `body_part_examined`,
`patient_position`, `image_type`, `photometric_interpretation`, `bits_stored`,
`pixel_spacing` (a list of two doubles), `spacing_between_slices`,
`image_laterality`, `view_position`, `kvp`, `x_ray_tube_current`, `exposure_time`,
`convolution_kernel`, `magnetic_field_strength`, `sequence_name`,
`scanning_sequence`, `mr_acquisition_type`, `repetition_time`, `echo_time`,
`inversion_time` and `flip_angle`. They hold what `dicom_json` holds, converted: a
number's first value, all values of a text joined by `\\` as DICOM writes them. Their
keywords are listed once, in `catalog/promoted.py`; name, type and meaning come from
pydicom's data dictionary, so promoting another attribute is adding its keyword
there. Reading a typed column costs milliseconds per million instances; parsing the
JSON header costs about a second (see Performance below).

Two functions work on the `dicom_json` column, for every other attribute:

- `dicom_tag('SliceThickness')` gives `'00180050'`.
- `dicom_value(dicom_json, 'SliceThickness')` gives the first value as text, or NULL.
  Cast it as needed (`::DOUBLE`, `::INT`).

Everything else is DuckDB's
[JSON functions](https://duckdb.org/docs/data/json/json_functions), with paths such
as `'$."00180050".Value[0]'`.
"""

CATALOG_LAYOUT = """## Layout on disk

```
<catalog>/_manifest.json                       the parts that make up the catalog now
<catalog>/<table>/ingest_date=YYYY-MM-DD/part-<UTC time>-<id>.parquet
```

- **Partitions**: each table is split into Hive partitions by `ingest_date`, the UTC
  date its rows were written. It is a column of every view, so
  `WHERE ingest_date >= DATE '2026-01-01'` opens only those folders.
- **Parts**: each autoload batch adds one part per table it changes. Rows in a part
  are sorted by the table's sort columns (listed below), so that row-group min/max
  statistics let DuckDB skip what a filter cannot match. The files are zstd-compressed,
  with row groups of 122,880 rows (DuckDB's own size: one row group per thread).
  Each column's description is stored in the Parquet field metadata.
- **Atomic writes**: a part is written under a temporary name, fsynced and renamed.
  It is invisible until `_manifest.json` lists it, and the manifest is replaced in
  one step: a rename on a local disk, a single PUT on object storage. A reader
  therefore sees a whole batch or none of it, in every table at once. Readers take
  no lock and never wait. Writers on one machine take a lock file only to swap the
  manifest.
- **Snapshots**: a connection sees the parts listed at connect time, as one
  consistent snapshot. Reconnect to see later writes.
- **Compaction**: `dicomflow catalog compact`, the `catalog-compact` deployment
  (hourly) and `dicomflow serve` (every `catalog.compact_interval_seconds`) merge the
  parts of each table and day into one sorted part. For a versioned table that is two
  parts: one of the rows current at that moment and one of the superseded rows (the
  manifest marks them `current_as_of` its generation, and `replaced`). A current view
  reads the first kind as it is and skips the second; only parts written since, and
  compacted parts a later `superseded` row names, are joined against `superseded`
  (which means reading every key of those parts). The manifest swap is atomic, as
  above, and the rows and their history are copied unchanged. A merged-away part
  leaves the manifest at once but stays on disk for
  `catalog.keep_replaced_seconds` (a day), so connections opened before the merge
  keep working. A later compaction deletes it, along with any part older than that
  which no manifest lists (left by a writer that died before publishing it).
- **Older parts**: the manifest records each part's column layout. Parts of an older
  layout are read by column name (which costs a footer read per part whenever a query
  binds), so a part written before a column existed reads as NULL in it. Compaction
  rewrites such parts, filling a column that comes from a DICOM keyword (the promoted
  columns) from the part's own `dicom_json`, as ingest would have filled it. A catalog
  written before the promoted columns is migrated by its next `dicomflow catalog
  compact` (every part of it is rewritten once).
- **Receipts**: the manifest also records how far each receipts log has been read.
  That position is published in the same swap as the rows read, so a line is never
  lost and never counted twice.

### On object storage

`catalog_dir` may be an fsspec URL instead of a folder: `s3://bucket/dicomflow/catalog`,
`gs://...`, `az://...`, or any protocol fsspec knows. Install the matching package in
the venv (`s3fs`, `gcsfs`, `adlfs`). Give its options, such as credentials, a profile
or an endpoint, in `catalog.storage_options`; DuckDB reads the parts through the same
fsspec filesystem:

```toml
catalog_dir = "s3://research-bucket/dicomflow/catalog"

[catalog]
storage_options = { profile = "research", client_kwargs = { region_name = "eu-central-1" } }
```

Only one machine may write the catalog; its writers lock
`<data_dir>/catalog.lock` locally. Any number of readers may open it from anywhere
with `catalog.connect(url, storage_options)`. The archive itself stays on a local
filesystem: `dicomflow catalog check` reads it from there.

## Checking against the archive

`dicomflow catalog check` compares the current `instances` rows with the archive
folder. It prints one line per problem and exits 1 if there is any:

- `missing-file`: a row whose archive file is gone.
- `size-differs` or `hash-differs`: a file that is not what was recorded (the SHA-256
  is read in full; `--no-hash` compares sizes only).
- `no-row`: an archive file that no current row names.
- `missing-part`: a part the manifest lists but the disk lacks.
"""


def table_doc(table: Table) -> list[str]:
    """One table's section: what a row is, its key and sort order, every column."""
    if table.key is not None:
        key = f"Key: `{table.key}`; views `{table.name}` and `{table.name}_history`."
    else:
        key = f"Append-only: view `{table.name}`."
    lines = [
        f"## {table.name}",
        "",
        table.description,
        "",
        f"{key} Parts sorted by {', '.join(f'`{c}`' for c in table.sort)}.",
        "",
        "| column | type | from | meaning |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| `{c.name}` | {c.type} | {c.keyword or ''} | {c.description} |" for c in table.columns
    ]
    lines.append("| `ingest_date` | date |  | Partition: UTC date the row was written. |")
    return [*lines, ""]


CATALOG_EXAMPLES = """## Example queries

```sql
-- instances per modality
SELECT modality, count(*) AS instances FROM instances GROUP BY ALL ORDER BY 2 DESC;

-- every series of one patient
SELECT series_instance_uid, modality, series_description, num_instances
FROM series WHERE patient_id = 'ANON-...' ORDER BY series_date;

-- MR studies of January 2026
SELECT study_instance_uid, study_date, num_series FROM studies
WHERE study_date BETWEEN DATE '2026-01-01' AND DATE '2026-01-31'
  AND list_contains(string_split(modalities, ','), 'MR');

-- thin-slice CT: the typed column, and the same from the JSON header (a hundred times slower)
SELECT series_instance_uid, min(slice_thickness) AS thinnest FROM instances
WHERE modality = 'CT' AND slice_thickness < 1 GROUP BY ALL;
SELECT DISTINCT series_instance_uid FROM instances
WHERE modality = 'CT' AND TRY_CAST(dicom_value(dicom_json, 'SliceThickness') AS DOUBLE) < 1;

-- MR with a given Sequence Name
SELECT DISTINCT study_instance_uid, series_instance_uid FROM instances
WHERE modality = 'MR' AND sequence_name = '*tfl3d1_16ns';

-- count by Manufacturer and Manufacturer's Model Name
SELECT manufacturer, manufacturer_model_name, count(*) AS instances
FROM instances GROUP BY ALL ORDER BY instances DESC;

-- an attribute that is not a column: from the JSON header
SELECT dicom_value(dicom_json, 'StationName') AS station, count(*) FROM instances GROUP BY ALL;

-- a value inside a sequence: the first item's code meaning
SELECT json_extract_string(dicom_json, '$."00081032".Value[0]."00080104".Value[0]')
FROM instances LIMIT 10;

-- how a study grew: one row per version
SELECT version, num_series, num_instances, recorded_at, run_id FROM studies_history
WHERE study_instance_uid = '2.25....' ORDER BY version;

-- the records (one per configured unit), created and last updated
SELECT record_unit, record_key, num_instances, modalities, created_at, updated_at
FROM records ORDER BY updated_at DESC LIMIT 20;

-- what scanner X sent yesterday, and what failed
SELECT status, count(*), sum(bytes) FROM receipts
WHERE calling_ae_title = 'CT_SCANNER_1' AND receipt_time::DATE = current_date - 1
GROUP BY ALL;
SELECT receipt_time, calling_ae_title, status, sop_class_uid FROM receipts
WHERE NOT success ORDER BY receipt_time DESC;

-- what each instance's sender and receipt were
SELECT i.sop_instance_uid, i.calling_ae_title, r.receipt_time, r.peer
FROM instances i JOIN receipts r USING (landed_name);

-- quarantine by reason
SELECT reason, count(*), sum(file_size) FROM quarantine GROUP BY ALL;
```
"""


CATALOG_PERFORMANCE = """## Performance

`.venv/bin/python bench/catalog.py` builds a synthetic catalog of 1,000,000 instances
(10,000 patients, 50,000 studies, 200,000 series, 10,000 re-sent instances, several
versions of many units, a 1.5 KB DICOM JSON header per instance: 102 parts, 114 MB)
and times the typical queries through `catalog.connect()`: cold (a new connection,
connect included, after dropping the files from the page cache) and warm (median of
7 runs on that connection), against a target of 50 ms warm. `--reuse --keep DIR`
times them again on a catalog it kept.

Measured on 2026-12-04 (`bench/catalog.py --keep /tmp/catperf-1m --small-files 200`)
on a VM with 2 cores shared with other work (1-minute load average 3.7 to 4.7 during
the run), DuckDB 2.0.1; warm median in ms (cold in brackets):

| query | as built, never compacted | after compaction | 5 batches later | and a re-sent instance |
|---|---|---|---|---|
| count by modality | 129 (414) | 17 (154) | 32 (254) | 35 (240) |
| all series of one patient | 35 (199) | 18 (125) | 21 (224) | 23 (177) |
| MR studies in one quarter | 30 (189) | 14 (162) | 17 (262) | 34 (215) |
| CT series with SliceThickness < 1 | 109 (326) | 78 (208) | 44 (209) | 72 (235) |
| MR series with a SequenceName | 99 (319) | 46 (213) | 53 (263) | 47 (227) |
| count by Manufacturer, Model | 98 (257) | 31 (130) | 48 (235) | 35 (197) |
| the CT query in its JSON form | 1145 (1241) | 1277 (2078) | 1297 (1801) | 1390 (1865) |

At a quieter moment (load average 2.8), `--reuse` on the same catalog compacted again
gave, warm (cold): count by modality 10 (87), all series of one patient 5 (61), MR
studies in one quarter 7 (74), CT series with SliceThickness < 1: 33 (99), MR series
with a SequenceName 30 (93), count by Manufacturer, Model 25 (93), the CT query in its
JSON form 1067 (1205).

- **As built** every part is joined against `superseded`: the join reads every key
  (about 80 ms for a million SOP Instance UIDs), more than the queries themselves.
  That was the catalog's only way before. The same benchmark on the code before
  this scheme and the typed columns (the last three queries in their JSON forms) gave
  64, 21, 16, 487, 348 and 2100 ms warm (load average 1.7 to 2.1).
- **After compaction** the current views read the compacted parts as they are.
  Later batches add small parts that are joined; a re-sent instance makes the view
  join the compacted part of its own partition (one ingest day) until the next
  compaction.
- **The two `count(DISTINCT series_instance_uid)` queries** are at the target, not
  under it: filtering a million rows takes about 14 ms, decoding and hashing the
  UIDs of the 50,000 to 160,000 matching rows the rest. Across runs this morning
  they took 25 to 85 ms warm, depending on the other work on the machine; the other
  queries stayed under 40 ms.
- **The JSON form** parses every header: about a second per million instances
  whatever the view, so the attributes researchers filter on are typed columns.
- Cold times are mostly the connect: it reads the footer of every part it lists
  (about 200 after compaction: a part of current and one of superseded rows per
  table and day).
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
        (CatalogSettings, "catalog"),
        (ScuSettings, "scu"),
        (RetrieveSettings, "retrieve"),
        (RemoteNode, "nodes.NAME"),
        (NodeTls, "nodes.NAME.tls"),
    ]
    rows = [row for model, section in sections for row in setting_rows(model, section)]
    return CONFIG_INTRO + "\n".join(rows) + "\n" + CONFIG_OUTRO


def catalog() -> str:
    parts = [CATALOG_INTRO, CATALOG_LAYOUT]
    for table in ALL_TABLES:
        parts.append("\n".join(table_doc(table)))
    parts.append(CATALOG_EXAMPLES)
    parts.append(CATALOG_PERFORMANCE)
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
