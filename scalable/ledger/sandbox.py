"""The read-only query path: one statement, checked by DuckDB's parser, on a connection that cannot write.

Two independent locks, so that neither alone has to be perfect:

1. **The statement** (:func:`check_read_only`). DuckDB's own parser splits the SQL and types
   each statement: exactly one statement runs, and it must be a query (``SELECT``, ``WITH``,
   ``FROM``, ``VALUES``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``, ``PIVOT``, ``UNPIVOT``), a plain
   ``EXPLAIN`` of a query (``EXPLAIN ANALYZE`` runs its statement, so it is refused), or one of a
   few read-only pragmas (:data:`READ_ONLY_PRAGMAS`, never with ``=``). Everything else
   (``COPY``, ``EXPORT``, ``IMPORT``, ``ATTACH``, ``DETACH``, ``INSTALL``, ``LOAD``, ``SET``,
   ``RESET``, ``CALL``, ``CHECKPOINT``, ``CREATE``, ``INSERT``, ...), and several statements at
   once, are refused with a :class:`~scalable.errors.ReadOnlyQueryError` naming the statement.
2. **The connection** (:func:`lock`). The views read every file through a
   :class:`ReadOnlyFileSystem` registered under its own protocol (:data:`LOCAL_PROTOCOL`, and
   :data:`REMOTE_PROTOCOL` for object storage): it opens files for reading only, refuses
   every call that would create, change or delete one, and serves only files whose real path
   lies under the ledger's directories (a symlink that leaves them is refused). DuckDB's own
   local filesystem is then disabled, external access turned off, the allowed directories set
   to those of the views, and the configuration locked, so even a statement that got past the
   check could neither read other files nor write any.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final, NoReturn

from fsspec import AbstractFileSystem

from scalable.errors import QueryError, ReadOnlyQueryError
from scalable.ledger.sql import escape_glob, quote

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

__all__ = [
    "LOCAL_PROTOCOL",
    "READ_ONLY_PRAGMAS",
    "REMOTE_PROTOCOL",
    "ReadOnlyFileSystem",
    "check_read_only",
    "lock",
    "read_only_batches",
    "run_read_only",
]

#: The protocol of the read-only view of local files.
LOCAL_PROTOCOL: Final = "scalable-ro"
#: The protocol of the read-only view of object storage.
REMOTE_PROTOCOL: Final = "scalable-ro-remote"
#: Pragmas that only read (called without ``=``).
READ_ONLY_PRAGMAS: Final = frozenset(
    {"table_info", "show", "show_tables", "show_tables_expanded", "show_databases", "database_size", "version"}
)
_ALLOWED = (
    "ledger queries are read-only: run one query (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, PIVOT), a plain "
    f"EXPLAIN of one, or PRAGMA {', '.join(sorted(READ_ONLY_PRAGMAS))}"
)
_PROTOCOL_PREFIX: Final = re.compile(r"^scalable-ro(?:-remote)?://")
#: The marker of every refusal by the filesystem, so that it is told apart from other errors.
_REFUSED: Final = "refused by the read-only ledger filesystem"


class ReadOnlyFileSystem(AbstractFileSystem):  # type: ignore[misc]  # fsspec is untyped
    """An fsspec filesystem that reads files under its roots through another one, and writes nothing.

    Args:
        target: the filesystem that holds the files (local, S3, GCS, ...).
        roots: directories (paths as ``target`` names them) under which files may be read.
        protocol: the protocol DuckDB reaches this filesystem by.
        local: whether ``target`` is the local disk (real paths, symlinks resolved).
    """

    cachable = False  # one instance per connection, never shared through fsspec's cache

    def __init__(self, target: AbstractFileSystem, roots: Iterable[str], protocol: str, *, local: bool) -> None:
        super().__init__()
        self.target = target
        self.protocol = protocol
        self.local = local
        self.roots = tuple(dict.fromkeys(self._root(r) for r in roots))

    def _root(self, root: str) -> str:
        return self._target_path(root).rstrip("/") + "/"

    def _target_path(self, path: str) -> str:
        """``path`` (a local path or a URL of ``target``) as ``target`` names it; real when local."""
        inner = str(self.target._strip_protocol(path))
        return os.path.realpath(inner) if self.local else inner

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return _PROTOCOL_PREFIX.sub("", str(path))

    def unstrip_protocol(self, name: str) -> str:
        """``name`` as DuckDB reaches it through this filesystem."""
        return f"{self.protocol}://{name}"

    def url(self, path: str) -> str:
        """The URL under which DuckDB reads ``path`` (a local path or a URL of ``target``) through here."""
        return self.unstrip_protocol(self._target_path(path))

    def allowed(self) -> list[str]:
        """The roots as DuckDB's ``allowed_directories`` names them."""
        return [self.unstrip_protocol(root) for root in self.roots]

    def _inside(self, path: str) -> str:
        """The path in ``target``'s terms, if it lies under a root; otherwise refuse it."""
        inner = self._strip_protocol(path)
        if self.local:
            real = os.path.realpath(inner)
            name = real + ("/" if os.path.isdir(real) else "")
        else:
            if ".." in inner.split("/"):
                self._refuse(path, "a path with '..' is not read")
            real = name = posixpath.normpath(inner) if inner else inner
            name += "/" if inner.endswith("/") else ""
        if not any(name.startswith(root) or name + "/" == root for root in self.roots):
            self._refuse(path, "it is outside the ledger's directories")
        return real

    def _refuse(self, path: str, why: str) -> NoReturn:
        raise PermissionError(f"{path!r} {_REFUSED}: {why}")

    # --- reading ---------------------------------------------------------------------------

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if mode != "rb":
            self._refuse(path, f"opening it with mode {mode!r} would write")
        return _ReadHandle(self.target.open(self._inside(path), "rb", **kwargs))

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return dict(self.target.info(self._inside(path), **kwargs))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        found = self.target.ls(self._inside(path), detail=detail, **kwargs)
        return [entry for entry in found if self._keeps(entry["name"] if detail else entry)]

    def glob(self, path: str, maxdepth: int | None = None, **kwargs: Any) -> Any:
        inner = self._strip_protocol(path)
        found = self.target.glob(inner, maxdepth=maxdepth, **kwargs)
        if isinstance(found, dict):
            return {name: info for name, info in found.items() if self._keeps(name)}
        return [name for name in found if self._keeps(name)]

    def modified(self, path: str) -> Any:
        return self.target.modified(self._inside(path))

    def _keeps(self, name: str) -> bool:
        try:
            self._inside(name)
        except PermissionError:
            return False
        return True

    # --- everything that would write is refused ----------------------------------------------

    def _write(self, path: Any = "", *args: Any, **kwargs: Any) -> NoReturn:
        self._refuse(str(path), "the ledger's query path writes nothing")

    mkdir = makedirs = mkdirs = _write
    rm = rm_file = _rm = rmdir = _write
    mv = move = rename = copy = cp_file = _write
    put = put_file = upload = get = get_file = download = _write
    pipe = pipe_file = touch = write_text = write_bytes = _write
    setxattr = chmod = _write


class _ReadHandle:
    """A file open for reading whose position is kept per thread.

    DuckDB reads one handle from several threads, each with a seek and then a read; with one
    shared position another thread's seek could land in between. Here each thread has its
    own position, and a read at it is one positioned read (``pread`` on a local file).
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._lock = threading.Lock()
        self._where = threading.local()
        try:
            self._fd: int | None = raw.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        return int(getattr(self._where, "pos", 0))

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.tell(), os.SEEK_END: self._size()}[whence]
        self._where.pos = base + offset
        return int(self._where.pos)

    def read(self, size: int = -1) -> bytes:
        pos = self.tell()
        if size is None or size < 0:
            size = max(0, self._size() - pos)
        if self._fd is not None:
            data = os.pread(self._fd, size, pos)
        else:
            with self._lock:
                self._raw.seek(pos)
                data = self._raw.read(size)
        self._where.pos = pos + len(data)
        return bytes(data)

    def _size(self) -> int:
        if self._fd is not None:
            return os.fstat(self._fd).st_size
        return int(self._raw.size)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> _ReadHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def lock(con: duckdb.DuckDBPyConnection, filesystems: Iterable[ReadOnlyFileSystem]) -> None:
    """Let ``con`` read only through ``filesystems`` (already registered), under their roots; lock it.

    Turns external access off, disables DuckDB's own local filesystem (so no file is read or
    written but through the read-only ones) and locks the configuration. DuckDB checks the
    names it is given, which the views escape (:func:`~scalable.ledger.sql.escape_glob`): each
    root is allowed as it is and escaped.
    """
    roots = [root for fs in filesystems for root in fs.allowed()]
    allowed = dict.fromkeys(d for root in roots for d in (root, escape_glob(root)))
    con.execute(f"SET allowed_directories=[{', '.join(quote(d) for d in allowed)}]")
    con.execute("SET enable_external_access=false")
    con.execute("SET disabled_filesystems='LocalFileSystem'")
    con.execute("SET lock_configuration=true")


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but one query, a plain EXPLAIN of one, or a read-only pragma.

    Raises:
        QueryError: the SQL does not parse, or is empty.
        ReadOnlyQueryError: a statement is of a kind that is not read-only, or several are given.
    """
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"SQL does not parse: {_first_line(exc)}") from None
    if not statements:
        raise QueryError("no SQL statement given; try: SELECT * FROM artifacts")
    for statement in statements:
        _check_statement(statement.type, statement.query)
    if len(statements) > 1:
        raise ReadOnlyQueryError(f"{len(statements)} statements given, send them one at a time; {_ALLOWED}")


def _check_statement(kind: Any, text: str) -> None:
    """Refuse one statement unless it is of a read-only kind (see the module docstring)."""
    import duckdb

    words = _words(text)
    first = words[0][1].upper() if words else ""
    if kind == duckdb.StatementType.SELECT:
        return
    if kind == duckdb.StatementType.MULTI and first in ("PIVOT", "PIVOT_WIDER"):
        return  # a PIVOT whose values DuckDB looks up first: a query, planned as several steps
    if kind == duckdb.StatementType.EXPLAIN and first == "EXPLAIN":
        if len(words) < 2 or words[1][1].upper() == "ANALYZE" or words[1][1] == "(":
            raise ReadOnlyQueryError(
                f"EXPLAIN ANALYZE (and EXPLAIN with options) is not allowed, it runs its statement; {_ALLOWED}"
            )
        inner = duckdb.extract_statements(text[words[1][0] :])
        if len(inner) != 1:
            raise QueryError("EXPLAIN takes exactly one statement")
        if inner[0].type != duckdb.StatementType.SELECT:
            raise ReadOnlyQueryError(f"EXPLAIN of a {inner[0].type.name} statement is not allowed; {_ALLOWED}")
        return
    if kind == duckdb.StatementType.PRAGMA and first == "PRAGMA":
        name = words[1][1].lower() if len(words) > 1 else ""
        if name in READ_ONLY_PRAGMAS and all(word != "=" for _offset, word in words):
            return
        raise ReadOnlyQueryError(f"PRAGMA {name or '(none)'} is not allowed; {_ALLOWED}")
    raise ReadOnlyQueryError(f"{first or kind.name} is not allowed ({kind.name} statement); {_ALLOWED}")


def _words(text: str) -> list[tuple[int, str]]:
    """The tokens of ``text`` without comments, as ``(offset, text)``, by DuckDB's tokenizer."""
    import duckdb

    tokens = duckdb.tokenize(text)
    out: list[tuple[int, str]] = []
    for i, (offset, kind) in enumerate(tokens):
        if kind == duckdb.token_type.comment:
            continue
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(text)
        out.append((offset, text[offset:end].strip()))
    return out


def run_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """Check ``sql`` and run it on the locked connection ``con``; return an Arrow table.

    Raises:
        ReadOnlyQueryError: the statement is not read-only, or touches what it may not.
        QueryError: the SQL does not parse, bind or run.
    """
    return read_only_batches(con, sql).read_all()


def read_only_batches(con: duckdb.DuckDBPyConnection, sql: str, *, batch_rows: int = 65536) -> pa.RecordBatchReader:
    """Check ``sql`` and stream its result from the locked connection ``con`` in batches of rows.

    Raises:
        ReadOnlyQueryError: the statement is not read-only, or touches what it may not.
        QueryError: the SQL does not parse, bind or run (also while the batches are read).
    """
    import pyarrow as pa

    check_read_only(con, sql)
    with _duckdb_errors():
        relation = con.sql(sql)
        if relation is None:
            return pa.RecordBatchReader.from_batches(pa.schema([]), [])
        reader = relation.to_arrow_reader(batch_rows)
    return pa.RecordBatchReader.from_batches(reader.schema, _guarded(reader))


def _guarded(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    with _duckdb_errors():
        yield from reader


@contextlib.contextmanager
def _duckdb_errors() -> Iterator[None]:
    """Turn DuckDB's errors (and the read-only filesystem's refusals) into the ledger's."""
    import duckdb

    try:
        yield
    except (duckdb.Error, PermissionError) as exc:
        text = str(exc)
        if _REFUSED in text or isinstance(exc, duckdb.PermissionException | PermissionError):
            refused = next((line for line in text.splitlines() if _REFUSED in line), _first_line(exc))
            raise ReadOnlyQueryError(f"query refused: {refused.split('PermissionError: ')[-1]}") from None
        raise QueryError(f"query failed: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
