"""The SQL cookbook: example queries over the ledger's views, offered by the explorer's SQL console.

The same queries, in the same order, are the cookbook of the ledger page (``docs/ledger.rst``);
the suite checks that the two agree.
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = ["COOKBOOK", "Recipe"]


class Recipe(NamedTuple):
    """One example: what it answers, the SQL, and the time the ledger is seen as of (if any)."""

    title: str
    sql: str
    as_of: str | None = None


COOKBOOK: Final = (
    Recipe(
        "What did each run produce, and how much?",
        "SELECT run_id, count(*) AS artifacts, sum(size_bytes) AS bytes FROM artifacts "
        "WHERE op IN ('put', 'recorded') GROUP BY run_id",
    ),
    Recipe(
        "Which runs failed, and in which task?",
        "SELECT run_id, task_name, error_type, error FROM tasks WHERE status = 'failed'",
    ),
    Recipe(
        "Every version of one file over time",
        "SELECT timestamp, run_id, digest FROM artifacts WHERE artifact_name = 'output.csv' ORDER BY timestamp",
    ),
    Recipe(
        "Which runs produced byte-identical outputs?",
        "SELECT digest, list(DISTINCT run_id) AS runs FROM artifacts WHERE digest IS NOT NULL "
        "GROUP BY digest HAVING count(DISTINCT run_id) > 1",
    ),
    Recipe(
        "Cache hit ratio per function",
        "SELECT function_name, count(*) FILTER (WHERE op = 'hit') / count(*) FILTER (WHERE op IN ('hit', 'miss')) "
        "AS hit_ratio FROM cache GROUP BY function_name",
    ),
    Recipe(
        "Slowest tasks",
        "SELECT run_id, task_name, duration_s FROM tasks ORDER BY duration_s DESC NULLS LAST LIMIT 10",
    ),
    Recipe(
        "Everything a given artifact was derived from (recursively)",
        "SELECT * FROM ancestors('file:///tmp/output.csv')",
    ),
    Recipe(
        "Runs still open (no run/finished event)",
        "SELECT run_id, started_at FROM runs WHERE status = 'running'",
    ),
    Recipe(
        "Which inputs does each run use most?",
        "SELECT src AS input, count(DISTINCT run_id) AS runs FROM lineage_context WHERE relation = 'used' "
        "GROUP BY src ORDER BY runs DESC",
    ),
    Recipe(
        "Bytes written per day",
        "SELECT left(timestamp, 10) AS day, sum(size_bytes) AS bytes FROM artifacts WHERE op = 'put' "
        "GROUP BY day ORDER BY day",
    ),
    Recipe(
        "Who wrote into a run (writers and their event counts)",
        "SELECT run_id, writer, count(*) AS events, max(seq) AS last_seq FROM events GROUP BY run_id, writer",
    ),
    Recipe("The ledger as it was at noon", "SELECT count(*) FROM events", as_of="2026-01-01T12:00:00Z"),
)
