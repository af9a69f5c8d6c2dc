"""Exports of the ledger: SQLite (for Datasette), W3C PROV-JSON, OpenLineage RunEvents.

Each export is derived from events alone, so rebuilding it from the streams gives the same
file as any earlier export of the same events.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scalable.errors import ConfigError

if TYPE_CHECKING:
    from scalable.ledger.log import Ledger

__all__ = ["export_openlineage", "export_prov", "export_sqlite"]

_SQLITE_TABLES = {
    "events": "SELECT * FROM events ORDER BY timestamp, event_id",
    "artifacts": "SELECT * FROM artifacts ORDER BY timestamp, event_id",
    "runs": "SELECT * FROM runs ORDER BY started_at, run_id",
    "lineage": "SELECT DISTINCT src, dst, relation, run_id, task_name, timestamp FROM lineage ORDER BY timestamp, src, dst, relation",
}
_INDEXES = {
    "events": [["run_id"], ["event_type", "op"], ["digest"], ["timestamp"]],
    "artifacts": [["run_id"], ["digest"], ["location"]],
    "runs": [["project"], ["status"]],
    "lineage": [["src"], ["dst"], ["run_id"]],
}
_FTS = {"artifacts": ["artifact_name", "location", "key"], "runs": ["run_id", "project"]}


def _sqlite_type(duck_type: Any) -> type:
    name = str(duck_type).upper()
    if name in ("BIGINT", "INTEGER", "BOOLEAN", "HUGEINT", "SMALLINT"):
        return int
    if name in ("DOUBLE", "FLOAT"):
        return float
    return str


def _target(path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"export target {str(out)!r} is a directory; give a file name")
    if not out.parent.exists():
        raise ConfigError(f"directory of export target {str(out)!r} does not exist")
    return out


def export_sqlite(ledger: Ledger, path: str | os.PathLike[str]) -> dict[str, int]:
    """Write events, artifacts, runs and lineage to a SQLite file, with indexes and FTS.

    The file is rebuilt from scratch (written to a temporary name, then renamed), so it opens
    in Datasette as is: ``datasette FILE``.

    Returns:
        Row counts per table.

    Raises:
        ConfigError: ``path`` is a directory or its directory does not exist.
    """
    import sqlite_utils

    from scalable.ledger.views import connect

    out = _target(path)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    con = connect(ledger)
    counts: dict[str, int] = {}
    try:
        db = sqlite_utils.Database(tmp)
        for table, sql in _SQLITE_TABLES.items():
            result = con.sql(sql)
            columns = result.columns
            rows = [
                {c: (json.dumps(v) if isinstance(v, list) else v) for c, v in zip(columns, row, strict=True)}
                for row in result.fetchall()
            ]
            counts[table] = len(rows)
            types = {c: _sqlite_type(t) for c, t in zip(columns, result.types, strict=True)}
            target = db.table(table)
            target.create(types, pk="event_id" if "event_id" in columns else None, if_not_exists=True)
            if rows:
                target.insert_all(rows, batch_size=1000)
            for cols in _INDEXES[table]:
                target.create_index(cols, if_not_exists=True)
            if table in _FTS:
                target.enable_fts(_FTS[table], create_triggers=True)
        db.close()
        os.replace(tmp, out)
    finally:
        con.close()
        tmp.unlink(missing_ok=True)
    return counts


def export_prov(ledger: Ledger, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the whole ledger's lineage as W3C PROV-JSON; returns the document."""
    doc = ledger.lineage(None).to_prov()
    _target(path).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return doc


def export_openlineage(ledger: Ledger, path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Write one START and one COMPLETE/FAIL RunEvent per run as JSON lines; returns them."""
    events = ledger.lineage(None).to_openlineage()
    with _target(path).open("w", encoding="utf-8") as fh:
        for event in events:
            fh.write(json.dumps(event, sort_keys=True) + "\n")
    return events
