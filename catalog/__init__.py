"""The metadata catalog: Parquet tables written per batch, read through DuckDB views.

>>> import catalog
>>> con = catalog.connect("dicomflow-data/catalog")
>>> con.sql("SELECT modality, count(*) FROM instances GROUP BY ALL").show()
"""

from catalog.query import connect

__all__ = ["connect"]
