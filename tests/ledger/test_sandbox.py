"""The query path writes nothing and reads only the ledger: a corpus of write and escape attempts.

Every attempt goes through ``Ledger.query`` and through ``scalable ledger query``; each must be
refused (a ReadOnlyQueryError or QueryError, exit 2 with one line) or harmless: no file under
the runs, ledger, cache and working directories changes, none appears, and nothing outside
the ledger's directories is read.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from scalable.errors import QueryError, ReadOnlyQueryError
from scalable.ledger import bind
from scalable.ledger.log import Ledger
from scalable.ledger.sandbox import LOCAL_PROTOCOL, ReadOnlyFileSystem
from tests.conftest import CliInvoker

SECRET = "TOP-SECRET-7f3a"


@dataclass(frozen=True)
class Place:
    """The ledger the attempts are made on, and the files they must not touch or read."""

    root: Path
    work: Path
    runs: Path
    ledger: Path
    cache: Path
    outside: Path
    stream: Path


@pytest.fixture
def place(isolated: Path) -> Place:
    """A ledger with a compacted run, a live stream, a cache file, and a secret outside linked from inside."""
    led = Ledger.open()
    with bind(run_id="run-done"):
        for i in range(3):
            led.append({"event_type": "artifact", "op": "put", "artifact_name": f"f{i}.csv", "size_bytes": i})
    led.finish_run("run-done")
    led.compact()
    with bind(run_id="run-live"):
        led.append({"event_type": "artifact", "op": "put", "artifact_name": "live.csv"})
    led.close()
    runs, ledger_dir = isolated / ".scalable" / "runs", isolated / ".scalable" / "ledger"
    cache = isolated / ".scalable" / "cache"
    cache.mkdir(parents=True)
    (cache / "entry.bin").write_bytes(b"cached value")
    outside = isolated.parent / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text(f"a\n{SECRET}\n")
    (outside / "secret.jsonl").write_text(f'{{"a": "{SECRET}"}}\n')
    (runs / "link.csv").symlink_to(outside / "secret.csv")
    (runs / "link.jsonl").symlink_to(outside / "secret.jsonl")
    (ledger_dir / "outside-dir").symlink_to(outside, target_is_directory=True)
    (isolated / "notes.txt").write_text("a file in the working directory\n")
    return Place(isolated.parent, isolated, runs, ledger_dir, cache, outside, runs / "run-done" / "artifacts.jsonl")


def snapshot(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (symlinks by their target path), by relative path."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*filenames, *dirnames]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def attempts(p: Place) -> list[str]:
    """Write and escape attempts, every nesting; ``{runs}`` etc. are the real directories."""
    runs, led, stream, out = p.runs, p.ledger, p.stream, p.outside
    ro = f"{LOCAL_PROTOCOL}://"
    copy_to = f"COPY (SELECT 'x') TO '{stream}' (FORMAT csv)"
    return [
        # COPY in every form and nesting
        copy_to,
        f"COPY (SELECT * FROM events) TO '{runs}/new.parquet' (FORMAT parquet)",
        f"COPY events TO '{led}/events/extra.csv'",
        f"COPY (SELECT 1) TO '{ro}{stream}' (FORMAT csv)",
        f"COPY (SELECT 1) TO '{ro}{runs}/x.csv'",
        "COPY (SELECT 1) TO 'in-working-dir.csv'",
        f"COPY (SELECT 1) TO '{out}/written.csv'",
        f"COPY events FROM '{out}/secret.csv'",
        "COPY FROM DATABASE memory TO other",
        f"EXPLAIN ANALYZE {copy_to}",
        f"EXPLAIN {copy_to}",
        f"EXPLAIN (ANALYZE) {copy_to}",
        f"EXPLAIN (ANALYZE, FORMAT json) {copy_to}",
        f"/* a comment */ EXPLAIN /* another */ ANALYZE {copy_to}",
        f"-- a comment\nEXPLAIN ANALYZE {copy_to}",
        "EXPLAIN ANALYZE SELECT count(*) FROM events",
        f"SELECT 1; {copy_to}",
        f"{copy_to}; SELECT 1",
        f"SELECT 1 /* ; {copy_to} */",
        f"SELECT 1 -- ; {copy_to}",
        "SELECT 1; SELECT 2",
        "SELECT 1; DROP VIEW events",
        # EXPORT, IMPORT, ATTACH, DETACH, USE
        f"EXPORT DATABASE '{runs}/export'",
        "EXPORT DATABASE 'exported'",
        f"IMPORT DATABASE '{out}'",
        f"ATTACH '{runs}/evil.db' AS evil",
        "ATTACH 'here.db'",
        "ATTACH ':memory:' AS scratch",
        f"ATTACH '{led}/events' AS e (TYPE parquet)",
        "DETACH memory",
        "USE system",
        # INSTALL, LOAD
        "INSTALL httpfs",
        "FORCE INSTALL json",
        "LOAD httpfs",
        f"LOAD '{out}/evil.duckdb_extension'",
        # SET, RESET, PRAGMA, CALL, CHECKPOINT
        "SET enable_external_access=true",
        "SET lock_configuration=false",
        "SET allowed_directories=['/']",
        "SET disabled_filesystems=''",
        "SET temp_directory='spill-here'",
        "SET GLOBAL threads=1",
        "RESET allowed_directories",
        "RESET ALL",
        "PRAGMA enable_profiling",
        "PRAGMA profiling_output='profile.json'",
        "PRAGMA threads=1",
        "PRAGMA table_info='events'",
        "PRAGMA enable_checkpoint_on_shutdown",
        "CALL pragma_version()",
        "CALL enable_logging()",
        "CHECKPOINT",
        "FORCE CHECKPOINT",
        "VACUUM",
        "ANALYZE",
        # CREATE (secrets, tables, views, macros, types), DML, DDL
        "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 's')",
        "CREATE PERSISTENT SECRET p (TYPE s3, KEY_ID 'k', SECRET 's')",
        "CREATE TABLE t AS SELECT * FROM events",
        "CREATE OR REPLACE VIEW events AS SELECT 1",
        "CREATE MACRO leak(p) AS TABLE SELECT * FROM read_text(p)",
        "CREATE TEMP MACRO one() AS 1",
        "CREATE TYPE mood AS ENUM ('a')",
        "CREATE SEQUENCE s",
        "DROP VIEW events",
        "INSERT INTO events SELECT * FROM events",
        "UPDATE events SET op = 'x'",
        "DELETE FROM events",
        "ALTER VIEW events RENAME TO gone",
        "BEGIN TRANSACTION",
        "PREPARE p AS SELECT 1",
        # table functions outside the ledger (refused) and inside it (harmless reads)
        "SELECT * FROM read_csv('/etc/passwd')",
        f"SELECT * FROM read_csv('{out}/secret.csv')",
        f"SELECT * FROM read_csv_auto('{out}/secret.csv')",
        f"SELECT * FROM read_json('{out}/secret.jsonl')",
        f"SELECT * FROM read_json_auto('{out}/secret.jsonl')",
        f"SELECT * FROM read_ndjson('{out}/secret.jsonl')",
        f"SELECT * FROM read_json_objects('{out}/secret.jsonl')",
        f"SELECT * FROM read_text('{out}/secret.csv')",
        f"SELECT * FROM read_blob('{out}/secret.csv')",
        f"SELECT * FROM read_parquet('{out}/secret.csv')",
        f"SELECT * FROM parquet_metadata('{out}/secret.csv')",
        f"SELECT * FROM sniff_csv('{out}/secret.csv')",
        f"SELECT * FROM glob('{out}/*')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_text('file:///etc/hostname')",
        f"SELECT * FROM read_text('{ro}/etc/hostname')",
        f"SELECT * FROM read_text('{ro}{out}/secret.csv')",
        f"SELECT * FROM read_text('{ro}{runs}/../../outside/secret.csv')",
        f"SELECT * FROM read_text('{runs}/../../outside/secret.csv')",
        f"SELECT * FROM read_csv('{ro}{runs}/link.csv')",
        f"SELECT * FROM read_json('{ro}{runs}/link.jsonl')",
        f"SELECT * FROM read_text('{ro}{runs}/link.csv')",
        f"SELECT * FROM read_text('{ro}{led}/outside-dir/secret.csv')",
        f"SELECT * FROM glob('{ro}{led}/outside-dir/*')",
        f"SELECT * FROM read_text('{ro}{runs}/*.csv')",
        f"SELECT * FROM read_text('{ro}{p.cache}/entry.bin')",
        f"SELECT * FROM read_blob('{p.work}/notes.txt')",
        "SELECT getenv('HOME')",
        "SELECT * FROM duckdb_secrets()",
        f"SELECT * FROM query('SELECT * FROM read_text(''{out}/secret.csv'')')",
        f"SELECT * FROM query('{copy_to.replace(chr(39), chr(39) * 2)}')",
        "SELECT * FROM query_table('events')",
        f"SELECT count(*) FROM read_text('{ro}{stream}')",
        f"SELECT count(*) FROM glob('{ro}{runs}/*/*')",
        f"SELECT count(*) FROM read_parquet('{ro}{led}/events/*/*.parquet')",
        # CTEs, subqueries, PIVOT, macros wrapping reads
        f"WITH s AS (SELECT * FROM read_text('{out}/secret.csv')) SELECT * FROM s",
        f"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
        f"SELECT * FROM r, read_text('{out}/secret.csv')",
        f"SELECT * FROM (SELECT * FROM (SELECT * FROM read_csv('{out}/secret.csv')))",
        f"SELECT (SELECT content FROM read_text('{ro}{runs}/link.csv'))",
        "PIVOT events ON event_type USING count(*)",
        f"PIVOT (SELECT * FROM read_csv('{out}/secret.csv')) ON a",
        f"UNPIVOT (SELECT * FROM read_csv('{out}/secret.csv')) ON a INTO NAME k VALUE v",
        "SELECT * FROM ancestors('x')",
        # read-only statements that are allowed
        "SELECT count(*) FROM events",
        "EXPLAIN SELECT * FROM events",
        "DESCRIBE events",
        "SHOW TABLES",
        "SUMMARIZE artifacts",
        "PRAGMA table_info('events')",
        "PRAGMA version",
        "FROM runs",
    ]


def test_the_corpus_is_large_enough(place: Place) -> None:
    """At least sixty attempts, each of them different."""
    corpus = attempts(place)
    assert len(corpus) >= 60 and len(set(corpus)) == len(corpus)


def _check(place: Place, before: dict[str, str], shown: str) -> None:
    assert snapshot(place.root) == before
    assert SECRET not in shown


def test_no_attempt_through_the_api_writes_or_reads_outside(place: Place) -> None:
    """Ledger.query refuses or harmlessly answers every attempt; no file changes, none appears, no secret leaks."""
    before = snapshot(place.root)
    refused = answered = 0
    led = Ledger.open()
    for sql in attempts(place):
        try:
            table = led.query(sql)
        except (ReadOnlyQueryError, QueryError) as exc:
            refused += 1
            shown = str(exc)
        else:
            answered += 1
            shown = str(table.to_pylist())
        try:
            _check(place, before, shown)
        except AssertionError:
            pytest.fail(f"the attempt {sql!r} wrote or leaked")
    led.close()
    assert refused >= 60 and answered >= 10


def test_no_attempt_through_the_cli_writes_or_reads_outside(place: Place, cli: CliInvoker) -> None:
    """`scalable ledger query` exits 0 or 2 (one line, no traceback) for every attempt; nothing changes."""
    before = snapshot(place.root)
    for sql in attempts(place):
        result = cli("ledger", "query", "--format", "jsonl", "--", sql)
        assert result.exit_code in (0, 2), (sql, result.output)
        if result.exit_code == 2:
            assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, (sql, result.stderr)
        assert "Traceback" not in result.output
        try:
            _check(place, before, result.output)
        except AssertionError:
            pytest.fail(f"the attempt {sql!r} wrote or leaked")


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("COPY (SELECT 1) TO 'x.csv'", "COPY"),
        ("EXPORT DATABASE 'x'", "EXPORT"),
        ("IMPORT DATABASE 'x'", "IMPORT"),
        ("ATTACH 'x.db'", "ATTACH"),
        ("DETACH x", "DETACH"),
        ("INSTALL httpfs", "INSTALL"),
        ("LOAD httpfs", "LOAD"),
        ("SET threads=1", "SET"),
        ("RESET threads", "RESET"),
        ("CALL pragma_version()", "CALL"),
        ("CHECKPOINT", "CHECKPOINT"),
        ("CREATE SECRET s (TYPE s3)", "CREATE"),
        ("PRAGMA enable_profiling", "PRAGMA enable_profiling"),
        ("EXPLAIN ANALYZE SELECT 1", "EXPLAIN ANALYZE"),
        ("EXPLAIN COPY (SELECT 1) TO 'x'", "COPY"),
        ("SELECT 1; SELECT 2", "2 statements"),
    ],
)
def test_refusals_name_the_statement(ledger: Ledger, sql: str, named: str) -> None:
    """A refused statement raises ReadOnlyQueryError (a PermissionError) whose message names what was refused."""
    with pytest.raises(ReadOnlyQueryError, match="read-only") as caught:
        ledger.query(sql)
    assert named in str(caught.value)
    assert isinstance(caught.value, PermissionError)


def test_allowed_statements_answer(ledger: Ledger) -> None:
    """Queries, plain EXPLAIN, DESCRIBE, SHOW, SUMMARIZE, PIVOT and the read-only pragmas run."""
    with bind(run_id="run-a"):
        ledger.append({"event_type": "run", "op": "started"})
        ledger.append({"event_type": "artifact", "op": "put", "artifact_name": "a"})
    assert ledger.query("SELECT count(*) AS n FROM events").to_pylist() == [{"n": 2}]
    assert ledger.query("EXPLAIN SELECT * FROM events").num_rows >= 1
    assert "event_id" in ledger.query("DESCRIBE events").column("column_name").to_pylist()
    assert "events" in ledger.query("SHOW TABLES").column("name").to_pylist()
    assert ledger.query("PIVOT events ON event_type USING count(*)").column_names[-2:] == ["artifact", "run"]
    assert ledger.query("PRAGMA table_info('events')").num_rows > 20
    assert ledger.query("/* why */ SELECT 1 AS one -- trailing").to_pylist() == [{"one": 1}]


def test_the_read_only_filesystem_refuses_every_write_and_every_path_outside(isolated: Path) -> None:
    """Even called directly, the filesystem opens for reading only, under its roots, and changes nothing."""
    from fsspec.implementations.local import LocalFileSystem

    root = isolated / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f.txt").write_text("inside")
    (isolated / "out.txt").write_text("outside")
    (root / "link.txt").symlink_to(isolated / "out.txt")
    fs = ReadOnlyFileSystem(LocalFileSystem(), [str(root)], LOCAL_PROTOCOL, local=True)
    inside = f"{LOCAL_PROTOCOL}://{root}/sub/f.txt"
    with fs.open(inside, "rb") as fh:
        assert fh.read() == b"inside"
    assert fs.info(inside)["size"] == 6
    assert [Path(n).name for n in fs.glob(f"{LOCAL_PROTOCOL}://{root}/*/*.txt")] == ["f.txt"]
    assert "link.txt" not in [Path(n).name for n in fs.glob(f"{LOCAL_PROTOCOL}://{root}/*")]
    before = snapshot(isolated)
    for mode in ("wb", "ab", "rb+", "xb", "w"):
        with pytest.raises(PermissionError, match="read-only"):
            fs.open(inside, mode)
    for call in (
        lambda: fs.rm(inside),
        lambda: fs.rm_file(inside),
        lambda: fs.mv(inside, inside + ".2"),
        lambda: fs.copy(inside, inside + ".2"),
        lambda: fs.cp_file(inside, inside + ".2"),
        lambda: fs.mkdir(f"{LOCAL_PROTOCOL}://{root}/new"),
        lambda: fs.makedirs(f"{LOCAL_PROTOCOL}://{root}/new"),
        lambda: fs.touch(f"{LOCAL_PROTOCOL}://{root}/new.txt"),
        lambda: fs.pipe_file(f"{LOCAL_PROTOCOL}://{root}/new.txt", b"x"),
        lambda: fs.put_file(str(isolated / "out.txt"), f"{LOCAL_PROTOCOL}://{root}/new.txt"),
        lambda: fs.get_file(inside, str(isolated / "copied.txt")),
        lambda: fs.rmdir(f"{LOCAL_PROTOCOL}://{root}/sub"),
        lambda: fs.open(f"{LOCAL_PROTOCOL}://{isolated}/out.txt", "rb"),
        lambda: fs.open(f"{LOCAL_PROTOCOL}://{root}/link.txt", "rb"),
        lambda: fs.open(f"{LOCAL_PROTOCOL}://{root}/../out.txt", "rb"),
        lambda: fs.info(f"{LOCAL_PROTOCOL}://{isolated}/out.txt"),
        lambda: fs.ls(f"{LOCAL_PROTOCOL}://{isolated}"),
    ):
        with pytest.raises(PermissionError, match="read-only"):
            call()
    assert snapshot(isolated) == before


def test_the_connection_writes_and_escapes_nothing_even_past_the_statement_check(place: Place) -> None:
    """Statements run on the views' connection directly (no check) fail to write a file or read outside."""
    import duckdb

    from scalable.ledger.views import connect

    runs, ro, out = place.runs, f"{LOCAL_PROTOCOL}://", place.outside
    before = snapshot(place.root)
    con = connect(Ledger.open())
    try:
        for sql in (
            f"COPY (SELECT 'x') TO '{place.stream}' (FORMAT csv)",
            f"COPY (SELECT 'x') TO '{ro}{place.stream}' (FORMAT csv)",
            f"COPY (SELECT 'x') TO '{ro}{runs}/new.csv'",
            "COPY (SELECT 'x') TO 'here.csv'",
            f"EXPLAIN ANALYZE COPY (SELECT 'x') TO '{ro}{runs}/new.csv'",
            f"EXPORT DATABASE '{ro}{runs}/exported'",
            "EXPORT DATABASE 'exported'",
            f"ATTACH '{runs}/new.db' AS n",
            f"ATTACH '{ro}{runs}/new.db' AS n",
            "INSTALL httpfs",
            "SET enable_external_access=true",
            "SET disabled_filesystems=''",
            "SET allowed_directories=['/']",
            f"SELECT * FROM read_text('{out}/secret.csv')",
            f"SELECT * FROM read_text('{ro}{runs}/link.csv')",
            f"SELECT * FROM read_text('{ro}{out}/secret.csv')",
        ):
            try:
                rows = con.execute(sql).fetchall()
            except duckdb.Error:
                continue
            assert not sql.startswith(("COPY", "EXPLAIN", "EXPORT", "ATTACH", "INSTALL", "SET")), sql
            assert SECRET not in str(rows), sql
        assert con.execute("SELECT count(*) FROM events").fetchone() == (5,)
    finally:
        con.close()
    assert snapshot(place.root) == before


def test_a_file_read_from_many_threads_gives_each_its_own_bytes(isolated: Path) -> None:
    """Threads seeking and reading one handle of the read-only filesystem each get the bytes at their position."""
    import threading

    from fsspec.implementations.local import LocalFileSystem

    data = bytes(range(256)) * 4096
    (isolated / "data.bin").write_bytes(data)
    fs = ReadOnlyFileSystem(LocalFileSystem(), [str(isolated)], LOCAL_PROTOCOL, local=True)
    handle = fs.open(f"{LOCAL_PROTOCOL}://{isolated}/data.bin", "rb")
    wrong: list[int] = []

    def reader(seed: int) -> None:
        import random

        rnd = random.Random(seed)
        for _ in range(3000):
            at = rnd.randrange(0, len(data) - 64)
            handle.seek(at)
            if handle.read(64) != data[at : at + 64] or handle.tell() != at + 64:
                wrong.append(at)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handle.close()
    assert wrong == []
