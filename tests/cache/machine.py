"""A "machine" for the cross-process cache tests: one process that calls a cached function.

Run as ``python -m tests.cache.machine INPUT_FILE SIDE_EFFECT_FILE [N]`` with
``SCALABLE_CACHE_DIR``, ``SCALABLE_RUNS_DIR`` and ``SCALABLE_CACHE_REMOTE`` set; it prints one
JSON object: the value, and the run id its events went to.
"""

from __future__ import annotations

import json
import sys

from scalable import FileType, ValueType, cacheable
from scalable.ledger import context


@cacheable(data=FileType, side_effect=ValueType)
def expensive(data: str, side_effect: str, factor: int = 3) -> dict[str, int]:
    """Count the bytes of ``data`` times ``factor``, and leave a trace that it ran."""
    with open(side_effect, "a", encoding="utf-8") as fh:
        fh.write("computed\n")
    with open(data, "rb") as fh:
        return {"size": len(fh.read()) * factor}


def main() -> None:
    """Call the function and print what happened as JSON."""
    value = expensive(sys.argv[1], sys.argv[2])
    print(json.dumps({"value": value, "run_id": context.current_run_id.get() or context.implicit_run_id()}))


if __name__ == "__main__":
    # Run the functions of the importable module, so their names match other processes'.
    from tests.cache.machine import main as _main

    _main()
