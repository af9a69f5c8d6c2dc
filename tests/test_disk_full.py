"""A full disk (ENOSPC, on a small tmpfs) and the file size limit (EFBIG, RLIMIT_FSIZE) at every write point.

Each write point is run in a child process (the CLI where a command does it) while its target
is full: the child fails with one line naming the path (exit 2), every event acknowledged
before is still there, no partial file or object is left, and once space is back the same
command works.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scalable.ledger.generations import read_generation
from scalable.ledger.location import LocalLocation
from scalable.ledger.log import Ledger
from scalable.ledger.stream import read_stream
from tests.helpers import child_env, python_cmd
from tools.gen_events import generate

SCALABLE = str(Path(sys.executable).with_name("scalable"))
#: Size of the tmpfs the tests fill up.
TMPFS_BYTES = 8 * 1024 * 1024


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs mounted for the test (skipped with the reason where mounting is refused); always unmounted."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); run as root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(mount: Path, leave: int = 0) -> Path:
    """Fill the tmpfs at ``mount`` up, then give back ``leave`` bytes; return the filler file."""
    filler = mount / "filler"
    chunk = b"\0" * 65536
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, chunk)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    with open(filler, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.truncate(max(0, size - leave))
    return filler


def files_under(path: Path) -> list[str]:
    """Every file under ``path``, relative, sorted (what a user would see with find)."""
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


@dataclass
class Point:
    """One write point: how to set it up, the command that writes, and what must hold before and after."""

    name: str
    prepare: Callable[[Path, Path], None]
    command: Callable[[Path, Path], list[str]]
    env: Callable[[Path, Path], dict[str, str]]
    #: RLIMIT_FSIZE that makes the write fail with EFBIG.
    limit: Callable[[Path, Path], int]
    failed: Callable[[Path, Path], None]
    succeeded: Callable[[Path, Path], None]
    names: Callable[[Path, Path], str]


def dirs_env(base: Path, target: Path, **extra: str) -> dict[str, str]:
    return {"SCALABLE_RUNS_DIR": str(base / "runs"), "SCALABLE_LEDGER_DIR": str(base / "ledger"), **extra}


def count(runs: Path, ledger: Path, where: str = "true", remote: str | None = None) -> int:
    from scalable.settings import load_settings

    led = Ledger(load_settings(runs_dir=runs, ledger_dir=ledger, runs_dir_remote=remote))
    try:
        return int(led.query(f"SELECT count(*) AS n FROM events WHERE {where}").to_pylist()[0]["n"])
    finally:
        led.close()


# --- append -------------------------------------------------------------------------------

APPEND = """
import sys
from scalable.errors import ScalableError
from scalable.ledger.log import Ledger
led = Ledger.open(sys.argv[1], sys.argv[2])
try:
    led.append({"event_type": "artifact", "op": "put", "run_id": "run-full", "attrs": {"blob": "x" * 300000}})
except ScalableError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def append_prepare(base: Path, target: Path) -> None:
    led = Ledger.open(target / "runs", base / "ledger")
    led.append_many({"event_type": "artifact", "op": "put", "run_id": "run-full", "size_bytes": i} for i in range(10))
    led.close()


def append_failed(base: Path, target: Path) -> None:
    stream = target / "runs" / "run-full" / "artifacts.jsonl"
    assert stream.read_bytes().endswith(b"\n")  # no partial line
    reader = read_stream(stream)
    assert len(list(reader)) == 10 and reader.problems == [] and not reader.incomplete_tail
    assert count(target / "runs", base / "ledger") == 10


def append_succeeded(base: Path, target: Path) -> None:
    assert count(target / "runs", base / "ledger") == 11


APPEND_POINT = Point(
    "append",
    append_prepare,
    lambda base, target: [*python_cmd(APPEND), str(target / "runs"), str(base / "ledger")],
    lambda base, target: {},
    lambda base, target: (target / "runs" / "run-full" / "artifacts.jsonl").stat().st_size + 4096,
    append_failed,
    append_succeeded,
    lambda base, target: str(target / "runs" / "run-full" / "artifacts.jsonl"),
)


# --- store put ----------------------------------------------------------------------------


def put_prepare(base: Path, target: Path) -> None:
    (base / "src.bin").write_bytes(os.urandom(600_000))


def put_failed(base: Path, target: Path) -> None:
    assert files_under(target / "store") == [] if (target / "store").exists() else True
    assert count(base / "runs", base / "ledger", "event_type = 'artifact'") == 0  # no put was acknowledged


def put_succeeded(base: Path, target: Path) -> None:
    stored = target / "store" / "data" / "src.bin"
    assert stored.read_bytes() == (base / "src.bin").read_bytes()
    assert count(base / "runs", base / "ledger", "event_type = 'artifact'") == 1


PUT_POINT = Point(
    "put",
    put_prepare,
    lambda base, target: [
        SCALABLE,
        "artifacts",
        "put",
        str(base / "src.bin"),
        str(target / "store" / "data" / "src.bin"),
        "--root",
        str(target / "store"),
    ],
    dirs_env,
    lambda base, target: 65536,
    put_failed,
    put_succeeded,
    lambda base, target: str(target / "store" / "data" / "src.bin"),
)


# --- compaction and its lineage files -----------------------------------------------------


def compact_prepare(base: Path, target: Path) -> None:
    generate(base / "runs", 3000, runs=10, days=3)


def compact_failed(base: Path, target: Path) -> None:
    ledger = target / "ledger"
    assert [f for f in files_under(ledger) if not f.endswith(".lock")] == []  # nothing staged, published or committed
    assert count(base / "runs", ledger) == 3000


def compact_succeeded(base: Path, target: Path) -> None:
    generation = read_generation(LocalLocation(base / "runs", target / "ledger"))
    assert generation.rows == 3000 and generation.lineage is not None
    assert count(base / "runs", target / "ledger") == 3000


def lineage_limit(base: Path, target: Path) -> int:
    """A size limit above every data file and below the lineage files (measured on a copy)."""
    scratch = base / "scratch"
    led = Ledger.open(base / "runs", scratch)
    led.compact()
    led.close()
    data = max(p.stat().st_size for p in (scratch / "events").rglob("*.parquet"))
    lineage = max(p.stat().st_size for p in (scratch / "lineage").rglob("*.parquet"))
    assert lineage > 2 * data, (data, lineage)
    return (data + lineage) // 2


COMPACT_POINT = Point(
    "compaction",
    compact_prepare,
    lambda base, target: [SCALABLE, "ledger", "compact"],
    lambda base, target: {"SCALABLE_RUNS_DIR": str(base / "runs"), "SCALABLE_LEDGER_DIR": str(target / "ledger")},
    lambda base, target: 4096,
    compact_failed,
    compact_succeeded,
    lambda base, target: str(target / "ledger"),
)


def lineage_prepare(base: Path, target: Path) -> None:
    generate(base / "runs", 3000, runs=10, days=30)  # many small data files, one set of lineage files


LINEAGE_POINT = Point(
    "lineage",
    lineage_prepare,
    COMPACT_POINT.command,
    COMPACT_POINT.env,
    lineage_limit,
    compact_failed,
    compact_succeeded,
    COMPACT_POINT.names,
)


# --- remote sync --------------------------------------------------------------------------


def sync_prepare(base: Path, target: Path) -> None:
    generate(base / "runs", 3000, runs=4, days=2)


def sync_env(base: Path, target: Path) -> dict[str, str]:
    return dirs_env(base, target, SCALABLE_RUNS_DIR_REMOTE=f"file://{target / 'remote'}")


def sync_failed(base: Path, target: Path) -> None:
    remote = target / "remote"
    assert (files_under(remote) if remote.exists() else []) == []  # no partial segment
    assert not list((base / "runs").glob("*/.synced"))
    assert count(base / "runs", base / "ledger", remote=f"file://{remote}") == 3000


def sync_succeeded(base: Path, target: Path) -> None:
    remote = target / "remote"
    assert len(files_under(remote / "segments")) == 4
    assert count(base / "runs", base / "ledger", remote=f"file://{remote}") == 3000


SYNC_POINT = Point(
    "sync",
    sync_prepare,
    lambda base, target: [SCALABLE, "ledger", "sync"],
    sync_env,
    lambda base, target: 4096,
    sync_failed,
    sync_succeeded,
    lambda base, target: f"file://{target / 'remote' / 'segments'}",
)


# --- cache write --------------------------------------------------------------------------

CACHE = """
import sys
from scalable.cache.tiers import LocalTier
from scalable.errors import ScalableError
try:
    tier = LocalTier(sys.argv[1])  # opening writes too (diskcache keeps its settings in SQLite)
    try:
        tier.set("k-big", b"v" * 2_000_000, function="f")
    finally:
        tier.close()
except ScalableError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def cache_prepare(base: Path, target: Path) -> None:
    from scalable.cache.tiers import LocalTier

    tier = LocalTier(target / "cache")
    tier.set("k-small", b"small", function="f")
    tier.close()


def cache_entries(target: Path) -> tuple[bytes | None, bytes | None, list[str]]:
    from scalable.cache.tiers import LocalTier

    tier = LocalTier(target / "cache")
    try:
        return tier.get("k-small"), tier.get("k-big"), [f for f in files_under(target / "cache") if f.endswith(".val")]
    finally:
        tier.close()


def cache_failed(base: Path, target: Path) -> None:
    assert cache_entries(target) == (b"small", None, [])  # no value file left behind


def cache_succeeded(base: Path, target: Path) -> None:
    small, big, values = cache_entries(target)
    assert (small, big, len(values)) == (b"small", b"v" * 2_000_000, 1)


CACHE_POINT = Point(
    "cache",
    cache_prepare,
    lambda base, target: [*python_cmd(CACHE), str(target / "cache")],
    lambda base, target: {},
    lambda base, target: max(p.stat().st_size for p in (target / "cache").rglob("*") if p.is_file()) + 65536,
    cache_failed,
    cache_succeeded,
    lambda base, target: str(target / "cache"),
)


# --- replay -------------------------------------------------------------------------------


def replay_prepare(base: Path, target: Path) -> None:
    from scalable.settings import load_settings
    from scalable.stores import build_artifact_store

    (base / "out.bin").write_bytes(os.urandom(600_000))
    from scalable.ledger import bus

    led = Ledger(load_settings(runs_dir=base / "runs", ledger_dir=base / "ledger"))
    led.default_run_id = "run-replay"
    with bus.activate(led):
        build_artifact_store(base / "store").put(base / "out.bin", "results/out.bin")
    led.finish_run("run-replay")
    led.close()


def replay_failed(base: Path, target: Path) -> None:
    restore = target / "restore"
    assert (files_under(restore) if restore.exists() else []) == []  # no partial copy
    assert count(base / "runs", base / "ledger", "run_id = 'run-replay'") == 2  # the put and the seal


def replay_succeeded(base: Path, target: Path) -> None:
    restored = target / "restore" / "results" / "out.bin"
    assert hashlib.sha256(restored.read_bytes()).digest() == hashlib.sha256((base / "out.bin").read_bytes()).digest()


REPLAY_POINT = Point(
    "replay",
    replay_prepare,
    lambda base, target: [SCALABLE, "ledger", "replay", "run-replay", "--into", str(target / "restore")],
    dirs_env,
    lambda base, target: 65536,
    replay_failed,
    replay_succeeded,
    lambda base, target: str(target / "restore" / "results" / "out.bin"),
)

POINTS = [APPEND_POINT, PUT_POINT, COMPACT_POINT, LINEAGE_POINT, SYNC_POINT, CACHE_POINT, REPLAY_POINT]


def run(point: Point, base: Path, target: Path, limit: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run the point's command in a child (under an RLIMIT_FSIZE of ``limit`` when given)."""

    def limited() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return subprocess.run(
        point.command(base, target),
        env=child_env(**point.env(base, target)),
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        preexec_fn=limited,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], names: str, reason: str) -> None:
    """Exit 2 and one line on stderr naming the path and the reason; no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert names in lines[0] and reason in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS, ids=[p.name for p in POINTS])
def test_a_full_disk_at_each_write_point(point: Point, tmpfs: Path, tmp_path: Path) -> None:
    """ENOSPC: one line naming the path (exit 2), acknowledged events intact, nothing partial; works once space is back."""
    base = tmp_path / "base"
    base.mkdir()
    if point is LINEAGE_POINT:
        # Room for the data files, not for the lineage files as well.
        point.prepare(base, tmpfs)
        lineage_limit(base, tmpfs)
        pages = [-(-p.stat().st_size // 4096) * 4096 for p in (base / "scratch" / "events").rglob("*.parquet")]
        smallest = min(p.stat().st_size for p in (base / "scratch" / "lineage").rglob("*.parquet"))
        filler = fill(tmpfs, leave=sum(pages) + 4 * 4096 + smallest // 2)
    else:
        point.prepare(base, tmpfs)
        # The cache is opened (SQLite writes a little), then its value file finds no room.
        filler = fill(tmpfs, leave=256 * 1024 if point is CACHE_POINT else 0)
    done = run(point, base, tmpfs)
    assert_one_line_error(done, point.names(base, tmpfs), "no space left on the device")
    filler.unlink()
    point.failed(base, tmpfs)
    again = run(point, base, tmpfs)
    assert again.returncode == 0, again.stderr
    point.succeeded(base, tmpfs)


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS, ids=[p.name for p in POINTS])
def test_the_file_size_limit_at_each_write_point(point: Point, tmpfs: Path, tmp_path: Path) -> None:
    """EFBIG (RLIMIT_FSIZE in the child): one line naming the path (exit 2), nothing lost or partial; works unlimited."""
    base = tmp_path / "base"
    base.mkdir()
    point.prepare(base, tmpfs)
    done = run(point, base, tmpfs, limit=point.limit(base, tmpfs))
    assert_one_line_error(done, point.names(base, tmpfs), "file size limit")
    point.failed(base, tmpfs)
    again = run(point, base, tmpfs)
    assert again.returncode == 0, again.stderr
    point.succeeded(base, tmpfs)


def test_one_mapping_of_os_errors() -> None:
    """ENOSPC, EDQUOT and EFBIG are DiskFullError (an OSError) saying what to do; other errnos the caller's class."""
    from scalable.errors import DiskFullError, LedgerError, StoreError, os_error

    full = os_error(OSError(errno.ENOSPC, "No space left on device"), "cannot write '/x'", LedgerError)
    assert isinstance(full, DiskFullError) and isinstance(full, OSError) and full.errno == errno.ENOSPC
    assert str(full) == "cannot write '/x': no space left on the device; free some space and run it again"
    assert "ulimit -f" in str(os_error(OSError(errno.EFBIG, "File too large"), "cannot write '/x'", LedgerError))
    other = os_error(OSError(errno.EIO, "Input/output error"), "cannot write '/x'", StoreError)
    assert type(other) is StoreError and str(other) == "cannot write '/x': Input/output error"
    assert json.dumps(full.exit_code) == "2"
