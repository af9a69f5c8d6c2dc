"""The baseline of the lineage bench: every lineage edge computed from the ``events`` view.

This is how the ledger derived its ``lineage`` view before compaction wrote edge files; the
bench walks it with a plain recursive CTE and compares.
"""

from __future__ import annotations

from scalable.ledger.edges import edges_sql, inputs_sql

__all__ = ["baseline_lineage_sql"]


def baseline_lineage_sql() -> str:
    """``CREATE TEMP VIEW`` statements of ``_baseline_lineage``: every edge computed from ``events``."""
    return (
        f"CREATE TEMP VIEW _baseline_inputs AS {inputs_sql('events', '_artifact_versions')}; "
        f"CREATE TEMP VIEW _baseline_lineage AS {edges_sql('events', '_baseline_inputs')}"
    )
