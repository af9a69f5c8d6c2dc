"""A test hook: kill the process at a named step of compaction, as a crash would.

When ``SCALABLE_TEST_CRASH_AT`` names one of :data:`CRASH_POINTS`, :func:`crash_point` SIGKILLs
the process there, so tests can prove that compaction is safe to kill at any instant.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Final

__all__ = ["CRASH_POINTS", "crash_point"]

CRASH_POINTS: Final = (
    "during_parquet_write",
    "after_parquet_write",
    "before_manifest_commit",
    "after_manifest_commit",
    "during_retirement",
    "after_tombstones",
)
_CRASH_ENV: Final = "SCALABLE_TEST_CRASH_AT"


def crash_point(name: str, staging: Path | None = None) -> None:
    """SIGKILL this process at ``name`` when the test hook asks for it.

    Args:
        name: one of :data:`CRASH_POINTS`.
        staging: a staging directory to leave a half-written file in, as a real crash would.
    """
    if os.environ.get(_CRASH_ENV) != name:
        return
    if staging is not None:
        staging.mkdir(parents=True, exist_ok=True)
        (staging / "part-torn.parquet").write_bytes(b"PAR1\x00\x00")
    os.kill(os.getpid(), signal.SIGKILL)
