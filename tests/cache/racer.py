"""A process of the concurrency test: computes a cached value while a twin does the same.

Run as ``python -m tests.cache.racer RENDEZVOUS_DIR``: the function waits inside its body
until both racers have entered it, so both miss and both write the same key at once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from scalable import ValueType, cacheable


@cacheable(rendezvous=ValueType)
def heavy(rendezvous: str, n: int = 200_000) -> list[int]:
    """Return a large list, after meeting the other racer inside this body."""
    where = Path(rendezvous)
    (where / f"entered-{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while len(list(where.glob("entered-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    return [i * i for i in range(n)]


def main() -> None:
    """Call the function and print a summary of the value."""
    value = heavy(sys.argv[1])
    print(json.dumps({"len": len(value), "sum": sum(value), "met": len(list(Path(sys.argv[1]).glob("entered-*")))}))


if __name__ == "__main__":
    # Run the functions of the importable module, so their names match other processes'.
    from tests.cache.racer import main as _main

    _main()
