"""The read-only query path in detail: the filesystem over object storage, its file handles, and the statement check."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from scalable.errors import QueryError, ReadOnlyQueryError
from scalable.ledger import bind
from scalable.ledger.log import Ledger
from scalable.ledger.sandbox import LOCAL_PROTOCOL, READ_ONLY_PRAGMAS, REMOTE_PROTOCOL, ReadOnlyFileSystem

RO = f"{REMOTE_PROTOCOL}://"


@pytest.fixture
def store() -> Iterator[MemoryFileSystem]:
    """An in-memory object store holding a ledger under ``/led`` and a secret beside it."""
    mem = MemoryFileSystem(skip_instance_cache=True)
    saved = (dict(mem.store), list(mem.pseudo_dirs))
    mem.store.clear()
    mem.pseudo_dirs[:] = [""]
    mem.pipe("/led/a/x.bin", b"0123456789")
    mem.pipe("/led/b.txt", b"hi")
    mem.pipe("/ledger-not/s.txt", b"secret")
    yield mem
    mem.store.clear()
    mem.store.update(saved[0])
    mem.pseudo_dirs[:] = saved[1]


def test_object_storage_is_read_under_its_roots_only(store: MemoryFileSystem) -> None:
    """Over object storage: files under a root are read; a sibling with the root as prefix, or ``..``, is refused."""
    fs = ReadOnlyFileSystem(store, ["memory://led", "/led/"], REMOTE_PROTOCOL, local=False)
    assert fs.roots == ("/led/",)
    assert fs.allowed() == [f"{RO}/led/"]
    assert fs.url("memory://led/b.txt") == f"{RO}/led/b.txt"
    assert fs.info(f"{RO}/led/b.txt")["size"] == 2
    assert fs.info(f"{RO}/led")["type"] == "directory"
    assert fs.info(f"{RO}/led/")["type"] == "directory"
    assert fs.modified(f"{RO}/led/b.txt") is not None
    for path, why in (
        ("/ledger-not/s.txt", "it is outside the ledger's directories"),
        ("/led/../ledger-not/s.txt", "a path with '..' is not read"),
        ("/", "it is outside the ledger's directories"),
    ):
        with pytest.raises(PermissionError) as refused:
            fs.info(f"{RO}{path}")
        assert str(refused.value) == f"{RO + path!r} refused by the read-only ledger filesystem: {why}"
        with pytest.raises(PermissionError):
            fs.open(f"{RO}{path}", "rb")
    with pytest.raises(PermissionError) as caught:
        fs.open(f"{RO}/led/b.txt", "wb")
    assert str(caught.value) == (
        "'/led/b.txt' refused by the read-only ledger filesystem: opening it with mode 'wb' would write"
    )


def test_listing_and_globbing_show_only_what_lies_under_a_root(store: MemoryFileSystem) -> None:
    """``ls`` and ``glob`` (names or details) drop every entry outside the roots."""
    fs = ReadOnlyFileSystem(store, ["/led"], REMOTE_PROTOCOL, local=False)
    assert fs.ls(f"{RO}/led", detail=False) == ["/led/a", "/led/b.txt"]
    assert [e["name"] for e in fs.ls(f"{RO}/led", detail=True)] == ["/led/a", "/led/b.txt"]
    assert sorted(fs.glob(f"{RO}/*/*")) == ["/led/a", "/led/b.txt"]
    detailed = fs.glob(f"{RO}/*/*", detail=True)
    assert sorted(detailed) == ["/led/a", "/led/b.txt"] and detailed["/led/b.txt"]["size"] == 2


def test_a_handle_without_a_descriptor_seeks_and_reads_like_a_file(store: MemoryFileSystem) -> None:
    """A file of object storage: seeks from the start, the current place and the end; reads to the end."""
    fs = ReadOnlyFileSystem(store, ["/led"], REMOTE_PROTOCOL, local=False)
    with fs.open(f"{RO}/led/a/x.bin", "rb") as fh:
        assert (fh.readable(), fh.seekable(), fh.writable()) == (True, True, False)
        assert fh.tell() == 0
        assert fh.seek(-3, os.SEEK_END) == 7 and fh.read() == b"789" and fh.tell() == 10
        assert fh.seek(2) == 2 and fh.seek(1, os.SEEK_CUR) == 3
        assert fh.read(2) == b"34" and fh.tell() == 5
        assert fh.read(0) == b"" and fh.tell() == 5
        assert fh.read(None) == b"56789"  # type: ignore[arg-type]
        assert fh.read(4) == b""


def test_a_local_handle_reads_by_position_and_closes(tmp_path: Path) -> None:
    """A local file: reads at each position, the whole rest with -1, and reports closed after close."""
    (tmp_path / "d.bin").write_bytes(b"abcdef")
    fs = ReadOnlyFileSystem(LocalFileSystem(), [str(tmp_path)], LOCAL_PROTOCOL, local=True)
    fh = fs.open(f"{LOCAL_PROTOCOL}://{tmp_path}/d.bin", "rb")
    assert fh.seek(-2, os.SEEK_END) == 4 and fh.read(-1) == b"ef"
    fh.seek(1)
    assert fh.read(0) == b"" and fh.tell() == 1
    assert fh.read(2) == b"bc" and fh.tell() == 3
    assert fh.closed is False
    with fh:
        pass
    assert fh.closed is True


def test_a_local_root_reached_through_a_symlink_is_its_real_directory(tmp_path: Path) -> None:
    """Roots and URLs name real paths, so a ledger reached through a symlink is read where it really is."""
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (real / "sub" / "f.txt").write_text("x")
    (tmp_path / "alias").symlink_to(real)
    fs = ReadOnlyFileSystem(LocalFileSystem(), [str(tmp_path / "alias"), str(real)], LOCAL_PROTOCOL, local=True)
    assert fs.roots == (f"{real}/",)
    assert fs.url(str(tmp_path / "alias" / "sub" / "f.txt")) == f"{LOCAL_PROTOCOL}://{real}/sub/f.txt"
    assert fs.info(f"{LOCAL_PROTOCOL}://{tmp_path}/alias/sub")["type"] == "directory"
    assert [Path(e).name for e in fs.ls(f"{LOCAL_PROTOCOL}://{real}/sub", detail=False)] == ["f.txt"]


# --- the statement check ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "error", "message"),
    [
        ("", QueryError, "no SQL statement given; try: SELECT * FROM artifacts"),
        ("  -- only a comment", QueryError, "no SQL statement given"),
        ("SELEC 1", QueryError, "SQL does not parse: "),
        ("EXPLAIN (FORMAT json) SELECT 1", ReadOnlyQueryError, "EXPLAIN with options"),
        ("EXPLAIN ANALYZE SELECT 1", ReadOnlyQueryError, "EXPLAIN ANALYZE"),
        ("PRAGMA version = 1", ReadOnlyQueryError, "PRAGMA is not allowed (SET statement)"),
        ("PRAGMA threads", ReadOnlyQueryError, "PRAGMA threads is not allowed; ledger queries are read-only"),
        ("CREATE TABLE t (x INT)", ReadOnlyQueryError, "CREATE is not allowed (CREATE statement)"),
        ("INSERT INTO events VALUES (1)", ReadOnlyQueryError, "INSERT is not allowed (INSERT statement)"),
        ("SELECT 1; SELECT 2; SELECT 3", ReadOnlyQueryError, "3 statements given, send them one at a time"),
        ("SELECT 1; SELECT 2", ReadOnlyQueryError, "2 statements given, send them one at a time"),
        ("SELEC 1", QueryError, 'SQL does not parse: Parser Error: syntax error at or near "SELEC"'),
        ("SELECT * FROM no_such_table", QueryError, "query failed: Catalog Error"),
        ("PRAGMA table_info = 'events'", ReadOnlyQueryError, "PRAGMA table_info is not allowed; ledger queries"),
        (
            "EXPLAIN COPY (SELECT 1) TO 'x.csv'",
            ReadOnlyQueryError,
            "EXPLAIN of a COPY statement is not allowed; ledger",
        ),
        ("EXPLAIN PIVOT events ON event_type USING count(*)", ReadOnlyQueryError, "EXPLAIN is not allowed (MULTI"),
    ],
)
def test_each_refusal_says_why(ledger: Ledger, sql: str, error: type[Exception], message: str) -> None:
    """Every kind of statement that cannot run is refused with the error and reason of its kind."""
    with pytest.raises(error) as caught:
        ledger.query(sql)
    assert message in str(caught.value)
    if error is QueryError:
        assert not isinstance(caught.value, ReadOnlyQueryError)


def test_a_refusal_lists_what_is_allowed(ledger: Ledger) -> None:
    """A refused statement's message says which statements and pragmas may run."""
    with pytest.raises(ReadOnlyQueryError) as caught:
        ledger.query("CHECKPOINT")
    text = str(caught.value)
    assert "ledger queries are read-only: run one query (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, PIVOT)" in text
    assert f"PRAGMA {', '.join(sorted(READ_ONLY_PRAGMAS))}" in text


def test_every_read_only_pragma_and_query_form_runs(ledger: Ledger) -> None:
    """Each listed pragma runs, lower or upper case, as do WITH, FROM-first, VALUES and SUMMARIZE."""
    with bind(run_id="run-p"):
        ledger.append({"event_type": "artifact", "op": "put", "artifact_name": "a"})
    for pragma in ("version", "database_size", "show_tables", "show_tables_expanded", "show_databases"):
        assert ledger.query(f"PRAGMA {pragma}").num_rows >= 1, pragma
    assert ledger.query("pragma VERSION").num_rows == 1
    assert ledger.query("PRAGMA /* which one */ version").num_rows == 1
    assert ledger.query("PRAGMA table_info('artifacts')").num_rows > 5
    assert ledger.query("WITH t AS (SELECT 1 AS x) SELECT x FROM t").to_pylist() == [{"x": 1}]
    assert ledger.query("FROM artifacts SELECT artifact_name").to_pylist() == [{"artifact_name": "a"}]
    assert ledger.query("VALUES (1), (2)").num_rows == 2
    assert ledger.query("SUMMARIZE artifacts").num_rows > 5
    assert ledger.query("EXPLAIN WITH t AS (SELECT 1) SELECT * FROM t").num_rows >= 1
    assert ledger.query("EXPLAIN SHOW").num_rows >= 1
    for pivot in ("PIVOT", "pivot", "PIVOT_WIDER"):
        assert ledger.query(f"{pivot} artifacts ON op USING count(*)").column_names[-1] == "put", pivot


def test_a_query_reading_outside_is_refused_as_read_only(ledger: Ledger, tmp_path: Path) -> None:
    """A query naming a file outside the ledger is a ReadOnlyQueryError saying it was refused."""
    (tmp_path / "secret.csv").write_text("a\n1\n")
    with pytest.raises(ReadOnlyQueryError, match=r"^query refused: "):
        ledger.query(f"SELECT * FROM read_csv('{LOCAL_PROTOCOL}://{tmp_path}/secret.csv')")


def test_batches_come_in_the_size_asked_and_errors_while_reading_are_query_errors(ledger: Ledger) -> None:
    """``query_batches`` yields batches of at most ``batch_rows``; a failure met while reading is a QueryError."""
    with bind(run_id="run-q"):
        for i in range(5):
            ledger.append({"event_type": "artifact", "op": "put", "artifact_name": f"f{i}"})
    reader = ledger.query_batches("SELECT * FROM range(5000) t(i)", batch_rows=2048)
    assert [b.num_rows for b in reader] == [2048, 2048, 904]
    with pytest.raises(QueryError, match=r"^query failed: Conversion Error"):
        sql = "SELECT CAST('x' || i AS INTEGER) FROM range(100000) t(i)"
        ledger.query_batches(sql, batch_rows=1024).read_all()


def test_a_refused_write_names_the_path_and_says_why(store: MemoryFileSystem) -> None:
    """Every write call is refused naming the path it was given, and saying the query path writes nothing."""
    fs = ReadOnlyFileSystem(store, ["/led"], REMOTE_PROTOCOL, local=False)
    target = f"{RO}/led/b.txt"
    for call in (fs.rm, fs.touch, fs.mkdir, fs.rm_file):
        with pytest.raises(PermissionError) as caught:
            call(target)
        assert str(caught.value) == (
            f"{target!r} refused by the read-only ledger filesystem: the ledger's query path writes nothing"
        )
    assert store.cat("/led/b.txt") == b"hi"


def test_ls_gives_details_unless_asked_for_names(store: MemoryFileSystem) -> None:
    """Like every fsspec filesystem, ``ls`` lists entries with their details by default."""
    fs = ReadOnlyFileSystem(store, ["/led"], REMOTE_PROTOCOL, local=False)
    entries = fs.ls(f"{RO}/led")
    assert [(e["name"], e["type"]) for e in entries] == [("/led/a", "directory"), ("/led/b.txt", "file")]


def test_the_locked_connection_keeps_its_settings_and_reads_no_plain_file(ledger: Ledger, tmp_path: Path) -> None:
    """On the views' connection, settings cannot change and a plain local path cannot be read, even unchecked."""
    import duckdb

    from scalable.ledger.views import connect

    (tmp_path / "plain.csv").write_text("a\n1\n")
    with bind(run_id="run-lock"):
        ledger.append({"event_type": "artifact", "op": "put", "artifact_name": "a"})
    con = connect(ledger)
    try:
        for sql in (
            "SET enable_external_access=true",
            "SET disabled_filesystems=''",
            "SET allowed_directories=['/']",
            "SET lock_configuration=false",
            f"SELECT * FROM read_csv('{tmp_path}/plain.csv')",
        ):
            with pytest.raises(duckdb.Error):
                con.execute(sql).fetchall()
        settings = dict(
            con.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN "
                "('enable_external_access', 'lock_configuration')"
            ).fetchall()
        )
        assert settings == {"enable_external_access": "false", "lock_configuration": "true"}
        allowed = con.execute("SELECT value FROM duckdb_settings() WHERE name = 'allowed_directories'").fetchone()
        assert allowed is not None and f"{LOCAL_PROTOCOL}://" in str(allowed[0])
        assert con.execute("SELECT count(*) FROM artifacts").fetchone() == (1,)
    finally:
        con.close()


def test_glob_keeps_to_the_depth_asked(store: MemoryFileSystem) -> None:
    """``glob(..., maxdepth=1)`` stops at the first level below the pattern's root."""
    fs = ReadOnlyFileSystem(store, ["/led"], REMOTE_PROTOCOL, local=False)
    assert "/led/a/x.bin" in fs.glob(f"{RO}/led/**")
    shallow = fs.glob(f"{RO}/led/**", maxdepth=1)
    assert "/led/a/x.bin" not in shallow and "/led/b.txt" in shallow


def test_a_local_root_itself_can_be_listed(tmp_path: Path) -> None:
    """The root directory is inside its own root: it lists and describes."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "f.txt").write_text("x")
    fs = ReadOnlyFileSystem(LocalFileSystem(), [str(root)], LOCAL_PROTOCOL, local=True)
    assert [Path(n).name for n in fs.ls(f"{LOCAL_PROTOCOL}://{root}", detail=False)] == ["f.txt"]
    assert fs.info(f"{LOCAL_PROTOCOL}://{root}")["type"] == "directory"
