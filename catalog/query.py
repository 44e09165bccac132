"""Reading the catalog: a DuckDB connection with one view per table.

``<table>_history`` holds every row ever written; ``<table>`` shows the current row
per record with counts and sizes derived from the current instances.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from catalog.schema import KEYS, TABLES, arrow_schema
from catalog.store import part_files

_CURRENT = """
CREATE OR REPLACE TEMP VIEW {table}_current AS
SELECT * FROM {table}_history
QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY recorded_at DESC) = 1
"""

_AGGREGATE_VIEWS = {
    "instances": """
CREATE OR REPLACE TEMP VIEW instances AS SELECT * FROM instances_current
""",
    "series": """
CREATE OR REPLACE TEMP VIEW series AS
SELECT s.*,
       coalesce(i.num_instances, 0) AS num_instances,
       coalesce(i.total_bytes, 0) AS total_bytes,
       h.created_at
FROM series_current s
LEFT JOIN (SELECT series_instance_uid, count(*) AS num_instances, sum(file_size) AS total_bytes
           FROM instances GROUP BY ALL) i USING (series_instance_uid)
LEFT JOIN (SELECT series_instance_uid, min(recorded_at) AS created_at
           FROM series_history GROUP BY ALL) h USING (series_instance_uid)
""",
    "studies": """
CREATE OR REPLACE TEMP VIEW studies AS
SELECT s.*,
       coalesce(i.num_series, 0) AS num_series,
       coalesce(i.num_instances, 0) AS num_instances,
       coalesce(i.total_bytes, 0) AS total_bytes,
       i.modalities,
       h.created_at
FROM studies_current s
LEFT JOIN (SELECT study_instance_uid, count(DISTINCT series_instance_uid) AS num_series,
                  count(*) AS num_instances, sum(file_size) AS total_bytes,
                  string_agg(DISTINCT modality, ',' ORDER BY modality) AS modalities
           FROM instances GROUP BY ALL) i USING (study_instance_uid)
LEFT JOIN (SELECT study_instance_uid, min(recorded_at) AS created_at
           FROM studies_history GROUP BY ALL) h USING (study_instance_uid)
""",
    "patients": """
CREATE OR REPLACE TEMP VIEW patients AS
SELECT p.*,
       coalesce(i.num_studies, 0) AS num_studies,
       coalesce(i.num_series, 0) AS num_series,
       coalesce(i.num_instances, 0) AS num_instances,
       coalesce(i.total_bytes, 0) AS total_bytes,
       h.created_at
FROM patients_current p
LEFT JOIN (SELECT patient_id, count(DISTINCT study_instance_uid) AS num_studies,
                  count(DISTINCT series_instance_uid) AS num_series,
                  count(*) AS num_instances, sum(file_size) AS total_bytes
           FROM instances GROUP BY ALL) i USING (patient_id)
LEFT JOIN (SELECT patient_id, min(recorded_at) AS created_at
           FROM patients_history GROUP BY ALL) h USING (patient_id)
""",
}


def connect(catalog_dir: Path | str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the catalog's views over its Parquet parts.

    The parts present at connect time are what the views see: a consistent snapshot
    while the autoloader keeps adding parts.
    """
    root = Path(catalog_dir)
    con = duckdb.connect()
    for table in TABLES:
        parts = part_files(root, table)
        if parts:
            relation = con.read_parquet([str(p) for p in parts], union_by_name=True)
        else:
            empty: pa.Table = arrow_schema(table).empty_table()
            relation = con.from_arrow(empty)
        relation.create_view(f"{table}_history", replace=True)
        con.execute(_CURRENT.format(table=table, key=KEYS[table]))
    for table in ("instances", "series", "studies", "patients"):
        con.execute(_AGGREGATE_VIEWS[table])
    return con
