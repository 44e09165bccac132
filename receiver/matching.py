"""C-FIND matching over the catalog: an identifier becomes one DuckDB query (PS3.4 C.2.2).

Each query key maps to a catalog column. Matching follows the standard's rules:
single value, universal (empty), wildcard (``*`` and ``?``, not for UIDs, dates or
numbers), range (``A-B``, ``-B``, ``A-`` for DA, TM and DT), list of UIDs
(backslash-separated), and person names case-insensitively. Keys we keep no column
for match everything and come back empty, as return keys must (C.2.2.1.1). Every
value here is already anonymized: the catalog holds nothing else.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from receiver.query import UNIQUE_KEYS, Level


class MatchError(ValueError):
    """The identifier cannot be matched (invalid level or value); answered 0xA900 or 0xC000."""


@dataclass(frozen=True)
class Key:
    """How one query key maps to the catalog: a SQL expression over the level's view."""

    sql: str
    vr: str


_PATIENT = {
    "PatientID": Key("p.patient_id", "LO"),
    "PatientName": Key("p.patient_id", "PN"),  # the pseudonym is the name too
    "PatientSex": Key("p.patient_sex", "CS"),
    "NumberOfPatientRelatedStudies": Key("p.num_studies", "IS"),
    "NumberOfPatientRelatedSeries": Key("p.num_series", "IS"),
    "NumberOfPatientRelatedInstances": Key("p.num_instances", "IS"),
}
_STUDY = {
    "StudyInstanceUID": Key("st.study_instance_uid", "UI"),
    "StudyDate": Key("st.study_date", "DA"),
    "StudyTime": Key("st.study_time", "TM"),
    "StudyDescription": Key("st.study_description", "LO"),
    "ModalitiesInStudy": Key("st.modalities", "CS"),
    "NumberOfStudyRelatedSeries": Key("st.num_series", "IS"),
    "NumberOfStudyRelatedInstances": Key("st.num_instances", "IS"),
    "PatientAge": Key("p.patient_age", "AS"),
}
_SERIES = {
    "SeriesInstanceUID": Key("se.series_instance_uid", "UI"),
    "Modality": Key("se.modality", "CS"),
    "SeriesNumber": Key("se.series_number", "IS"),
    "SeriesDate": Key("se.series_date", "DA"),
    "SeriesDescription": Key("se.series_description", "LO"),
    "BodyPartExamined": Key("se.body_part_examined", "CS"),
    "ProtocolName": Key("se.protocol_name", "LO"),
    "Manufacturer": Key("se.manufacturer", "LO"),
    "ManufacturerModelName": Key("se.manufacturer_model_name", "LO"),
    "NumberOfSeriesRelatedInstances": Key("se.num_instances", "IS"),
}
_IMAGE = {
    "SOPInstanceUID": Key("i.sop_instance_uid", "UI"),
    "SOPClassUID": Key("i.sop_class_uid", "UI"),
    "InstanceNumber": Key("i.instance_number", "IS"),
    "ContentDate": Key("i.content_date", "DA"),
    "Rows": Key("i.rows", "US"),
    "Columns": Key("i.columns", "US"),
    "NumberOfFrames": Key("i.number_of_frames", "IS"),
}

KEYS: dict[Level, dict[str, Key]] = {
    "PATIENT": _PATIENT,
    "STUDY": {**_PATIENT, **_STUDY},
    "SERIES": {**_PATIENT, **_STUDY, **_SERIES},
    "IMAGE": {**_PATIENT, **_STUDY, **_SERIES, **_IMAGE},
}
"""Keys per query level: a level's own and those of the levels above it (relational)."""

FROM: dict[Level, str] = {
    "PATIENT": "patients p",
    "STUDY": "studies st JOIN patients p USING (patient_id)",
    "SERIES": "series se JOIN studies st USING (study_instance_uid)"
    " JOIN patients p ON p.patient_id = st.patient_id",
    "IMAGE": "instances i JOIN series se USING (series_instance_uid)"
    " JOIN studies st ON st.study_instance_uid = se.study_instance_uid"
    " JOIN patients p ON p.patient_id = st.patient_id",
}

ARCHIVE_PATH = "i.archive_path"

BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


@dataclass(frozen=True)
class Query:
    """A level's SQL, its parameters, and the keywords to return (with their VRs)."""

    level: Level
    sql: str
    params: list[object]
    returned: list[str]


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _one_of_list(value: str) -> str:
    """A regular expression for one comma-separated item matching `value` (* and ?)."""
    item = "".join("[^,]*" if c == "*" else "[^,]" if c == "?" else re.escape(c) for c in value)
    return f",{item},"


def _date(value: str, vr: str) -> object:
    text = value.strip()
    if vr == "DA":
        try:
            return dt.datetime.strptime(text.replace(".", ""), "%Y%m%d").date()
        except ValueError:
            raise MatchError(f"not a date: {value!r}") from None
    return text


def _condition(key: Key, value: str) -> tuple[str, list[object]]:
    """The SQL condition for one non-empty matching key (C.2.2.2)."""
    if key.vr == "UI":
        uids = [u.strip() for u in value.split("\\") if u.strip()]
        return f"{key.sql} IN ({', '.join('?' * len(uids))})", list(uids)
    if key.vr in ("DA", "TM", "DT"):
        if "-" in value:
            low, _, high = value.partition("-")
            parts, params = [], []
            if low.strip():
                parts.append(f"{key.sql} >= ?")
                params.append(_date(low, key.vr))
            if high.strip():
                parts.append(f"{key.sql} <= ?")
                params.append(_date(high, key.vr))
            if not parts:
                raise MatchError(f"empty range {value!r}")
            return " AND ".join(parts), params
        return f"{key.sql} = ?", [_date(value, key.vr)]
    if key.vr in ("IS", "US", "DS"):
        try:
            return f"{key.sql} = ?", [int(value.strip())]
        except ValueError:
            raise MatchError(f"not a number: {value!r}") from None
    if key.sql.endswith("modalities"):  # ModalitiesInStudy: any listed one, wildcards too
        wanted = [m.strip() for m in value.split("\\") if m.strip()]
        checks = " OR ".join(f"regexp_matches(',' || {key.sql} || ',', ?)" for _ in wanted)
        return f"({checks})", [_one_of_list(m) for m in wanted]
    operator = "ILIKE" if key.vr == "PN" else "LIKE"
    if "*" in value or "?" in value:
        return f"{key.sql} {operator} ? ESCAPE '\\'", [_like(value.strip())]
    if key.vr == "PN":
        return f"lower({key.sql}) = lower(?)", [value.strip()]
    return f"{key.sql} = ?", [value.strip()]


def _text(value: object) -> str:
    """A value as its DICOM string: multiple values joined with backslashes."""
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


def build_query(
    identifier: Dataset, *, with_paths: bool = False, study_root: bool = False
) -> Query:
    """The SQL for a C-FIND (or the instances of a C-MOVE/C-GET with `with_paths`).

    A retrieve must name what it wants: the unique key of its level, with no wildcard
    (PS3.4 C.4.2.2.1), so an empty identifier never moves the whole archive.
    """
    text = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if text not in KEYS or (study_root and text == "PATIENT"):
        model = "Study Root" if study_root else "Patient Root"
        raise MatchError(f"invalid Query/Retrieve Level {text!r} for {model}")
    level = cast(Level, text)
    if with_paths:
        unique = _text(identifier.get(UNIQUE_KEYS[level])).strip()
        if not unique or "*" in unique or "?" in unique:
            raise MatchError(f"a {level} retrieve needs {UNIQUE_KEYS[level]}, without wildcards")
    keys = KEYS[level]
    conditions: list[str] = []
    params: list[object] = []
    returned: list[str] = []
    for elem in identifier:
        keyword = elem.keyword
        if not keyword or keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        returned.append(keyword)
        key = keys.get(keyword)
        value = _text(elem.value) if elem.VR != "SQ" else ""
        if key is None or not value.strip() or value.strip() == "*":
            continue
        condition, values = _condition(key, value)
        conditions.append(condition)
        params += values
    columns = [keys[k].sql + f' AS "{k}"' for k in dict.fromkeys(returned) if k in keys]
    unique = UNIQUE_KEYS[level]
    columns.insert(0, f'{keys[unique].sql} AS "{unique}"')
    if with_paths:
        level_paths = "i.archive_path, i.sop_class_uid, i.transfer_syntax_uid"
        sql = f"SELECT DISTINCT {level_paths} FROM {FROM['IMAGE']}"
    else:
        sql = f"SELECT DISTINCT {', '.join(dict.fromkeys(columns))} FROM {FROM[level]}"
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    return Query(level, sql, params, returned)


def _dicom_value(value: object, vr: str) -> object:
    if value is None:
        return None
    if isinstance(value, dt.date):
        return value.strftime("%Y%m%d")
    if vr == "CS" and isinstance(value, str) and "," in value:
        return value.split(",")  # ModalitiesInStudy is multi-valued
    return value


def response(query: Query, columns: Sequence[str], row: Sequence[object]) -> Dataset:
    """One pending C-FIND response: the level, and every key asked for (empty if unknown)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = query.level
    values = dict(zip(columns, row, strict=True))
    keys = KEYS[query.level]
    for keyword in dict.fromkeys([*columns, *query.returned]):
        tag = tag_for_keyword(keyword)
        if tag is None:
            continue
        vr = str(dictionary_VR(tag))
        if vr in BULK_VRS or " or " in vr:
            continue  # pixel data and other bulk values are not query keys
        value = _dicom_value(values.get(keyword), keys[keyword].vr if keyword in keys else vr)
        if vr == "SQ":
            setattr(ds, keyword, [])
        elif vr in ("IS", "US", "UL", "DS") and value is not None:
            setattr(ds, keyword, int(value) if vr != "DS" else value)  # type: ignore[call-overload]
        else:
            setattr(ds, keyword, value)
    return ds
