"""The baseline of the lineage bench: every data-flow edge computed from the ``events`` view.

This is how the ledger derives its ``lineage`` view without compacted edge files; the bench
walks it with a plain recursive CTE and compares.
"""

from __future__ import annotations

from scalable.ledger.edges import EDGE_COLUMNS, edges_sql

__all__ = ["baseline_lineage_sql"]


def baseline_lineage_sql() -> str:
    """``CREATE TEMP VIEW`` statement of ``_baseline_lineage``: every data-flow edge computed from ``events``."""
    return (
        f"CREATE TEMP VIEW _baseline_lineage AS SELECT {EDGE_COLUMNS} "
        f"FROM ({edges_sql('events', '_artifact_versions')}) e WHERE flow"
    )
