"""Where a ledger's data lives: a local directory, or object storage through fsspec.

A :class:`Location` holds the sources of events (the files of JSON lines compaction takes in)
and the compacted data (Parquet files, lineage files and generations). Compaction
(:mod:`~scalable.ledger.compact`) and the views (:mod:`~scalable.ledger.views`) work through
this one interface and never ask which kind they have:

* :class:`LocalLocation`: the runs directory's streams are the sources; the compacted data is
  the ledger directory. A compaction holds an exclusive lock (:attr:`Location.exclusive`),
  so it may also retire events and streams and write lineage files.
* :class:`ObjectLocation` (``SCALABLE_RUNS_DIR_REMOTE``): the sources are the immutable
  segments every machine ships (:mod:`~scalable.ledger.segments`) under ``segments/``, the
  compacted data lives under ``ledger/``. There is no lock: compactions on several machines
  commit optimistically with a put-if-absent write and the loser starts again, so the steps
  that rewrite or delete streams (retention, retiring streams) do not run there. The local
  streams not shipped yet are its :attr:`~Location.outbox`, which the views read as well.
  Every listing asks the store itself, never fsspec's listings cache: a commit protocol
  that decides from a stale listing retries the same version for ever.

Paths a location takes and gives (``rel``) are relative to its compacted data, with ``/``
separators; :meth:`Location.url` turns one into what DuckDB reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, Final, NamedTuple

from scalable.errors import ConfigError, LedgerError, LedgerNotFoundError, ScalableError
from scalable.failures import failure_kind, split_userinfo, storage_error
from scalable.ledger.durable import create_file, exclusive_lock, fsync_dir, move_file
from scalable.ledger.generations import GENERATIONS_DIR
from scalable.ledger.stream import complete_prefix, stream_files
from scalable.uris import is_remote, local_path

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

    from scalable.ledger.generations import Generation
    from scalable.settings import Settings

__all__ = [
    "SEGMENTS_DIR",
    "SHIPPED_COMPACTED",
    "LocalLocation",
    "Location",
    "ObjectLocation",
    "Source",
    "open_location",
    "open_object_location",
    "shipped_compacted_runs",
]

#: Directory of the shipped segments, under the root of an object-storage ledger.
SEGMENTS_DIR: Final = "segments"
#: Directory of the compacted data, under the root of an object-storage ledger.
_DATA_DIR: Final = "ledger"
#: Directory of a local compaction's staged files, under the ledger directory.
_STAGING_DIR: Final = "_tmp"


class Source(NamedTuple):
    """A file of event lines: a run's stream, or a segment of one.

    ``key`` names it in a generation's ``streams`` (the run id of a local stream, the path of
    a segment under the root); ``path`` is where DuckDB reads it.
    """

    key: str
    run_id: str
    path: str
    size: int


class Location(ABC):
    """Where the sources of events and the compacted data of a ledger live."""

    #: Whether a compaction here holds a lock that keeps every other compaction out.
    exclusive: ClassVar[bool]
    #: Whether the views copy the tails into memory once (each read costs a round trip).
    materialize_tails: ClassVar[bool]
    #: A URI or path naming the location in messages.
    uri: str
    #: Local runs directory whose streams are shipped here; ``None`` when they are the sources.
    outbox: Path | None = None
    #: Local ledger directory whose compacted runs (streams retired) are shipped here too.
    outbox_ledger: Path | None = None
    #: The fsspec filesystem DuckDB reads through; ``None`` for plain local paths.
    filesystem: Any = None

    @abstractmethod
    def check_exists(self, *, before_compaction: bool = False) -> None:
        """Check that a ledger is there to read, before a reader says it holds nothing.

        Args:
            before_compaction: the compacted data may be missing (the first compaction makes it).

        Raises:
            LedgerNotFoundError: no ledger is there.
            StoreError: a subclass saying why the place cannot be reached or read.
        """

    # --- sources of events --------------------------------------------------------------------

    @abstractmethod
    def sources(self) -> list[Source]:
        """Every source of events compaction takes in, by key."""

    @abstractmethod
    def complete_bytes(self, source: Source) -> int:
        """Bytes of ``source`` that hold complete lines."""

    @abstractmethod
    def open_source(self, source: Source) -> IO[bytes]:
        """Open ``source`` for reading bytes."""

    @abstractmethod
    def run_of(self, key: str) -> str:
        """The run a generation's ``streams`` key belongs to."""

    @abstractmethod
    def retire_source(self, source: Source, size: int) -> bool:
        """Delete ``source`` if it still holds exactly ``size`` bytes; return whether it was deleted."""

    @abstractmethod
    def runs_without_stream(self, generation: Generation) -> set[str]:
        """Runs ``generation`` holds events of whose stream is no longer here to read."""

    def live_sources(self) -> list[Source]:
        """Every file of event lines the views read besides the compacted data.

        The sources, and the streams of the outbox (lines that may not be shipped yet).
        """
        shipped: list[Source] = []
        if self.outbox is not None:
            runs = os.path.realpath(self.outbox)
            shipped = [Source(path, run_id, path, size) for run_id, path, size in stream_files(runs)]
        return [*shipped, *self.sources()]

    def unshipped_compacted(self) -> tuple[list[str], list[str]]:
        """The local Parquet files and runs of the outbox whose events are compacted locally only.

        Runs compacted on this machine before a remote was configured may have no stream left
        to ship (``--no-keep-jsonl``); until a sync ships them from Parquet, the views read
        them here. ``([], [])`` where there is no outbox.
        """
        if self.outbox is None or self.outbox_ledger is None:
            return [], []
        from scalable.ledger.generations import read_generation

        local = LocalLocation(self.outbox, self.outbox_ledger)
        generation = read_generation(local)
        runs = sorted(local.runs_without_stream(generation) - shipped_compacted_runs(self.outbox))
        if not runs or not generation.files:
            return [], []
        return [local.url(f.path) for f in generation.files], runs

    # --- compacted data ----------------------------------------------------------------------

    @abstractmethod
    def url(self, rel: str) -> str:
        """``rel`` as DuckDB reads it (through :attr:`filesystem` when there is one)."""

    @abstractmethod
    def display(self, rel: str) -> str:
        """``rel`` as messages name it."""

    @abstractmethod
    def read_prefixes(self) -> list[str]:
        """Directory prefixes (ending in ``/``) DuckDB must be allowed to read."""

    @abstractmethod
    def list_names(self, rel_dir: str) -> list[str]:
        """Names of the entries of directory ``rel_dir`` (empty when it does not exist)."""

    @abstractmethod
    def list_files(self, rel_dir: str) -> list[str]:
        """Every file under ``rel_dir``, recursively, as ``rel`` paths."""

    @abstractmethod
    def read_bytes(self, rel: str) -> bytes:
        """The bytes of file ``rel``."""

    @abstractmethod
    def size(self, rel: str) -> int:
        """The size of file ``rel`` in bytes.

        Raises:
            FileNotFoundError: there is no such file.
        """

    @abstractmethod
    def create(self, rel: str, data: bytes) -> None:
        """Write file ``rel`` if, and only if, it does not exist yet, in one atomic step.

        Raises:
            FileExistsError: the file exists.
        """

    @abstractmethod
    def publish(self, staged: Path, rel: str) -> int:
        """Move the local file ``staged`` to ``rel``, durably; return its size in bytes."""

    @abstractmethod
    def delete(self, rel: str) -> None:
        """Delete file ``rel`` (nothing happens if it is gone)."""

    @abstractmethod
    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Held while a compaction runs (keeps others out where :attr:`exclusive`)."""

    def compacting(self) -> bool:
        """Whether another process holds :meth:`lock` right now (``False`` where no lock is kept)."""
        return False

    @abstractmethod
    def staging(self) -> contextlib.AbstractContextManager[Path]:
        """A local directory for a compaction's staged files and spills, removed afterwards."""


class LocalLocation(Location):
    """A ledger on local disk: streams under ``runs_dir``, compacted data under ``ledger_dir``."""

    exclusive = True
    materialize_tails = False

    def __init__(self, runs_dir: str | os.PathLike[str], ledger_dir: str | os.PathLike[str]) -> None:
        self.runs_dir = Path(runs_dir)
        self.ledger_dir = Path(ledger_dir)
        self.uri = str(self.ledger_dir)
        self._locked = False
        # DuckDB is given real paths: its allowed directories compare them literally.
        self._runs = os.path.realpath(self.runs_dir)
        self._data = os.path.realpath(self.ledger_dir)

    def check_exists(self, *, before_compaction: bool = False) -> None:
        """Check that the runs directory (or, for readers, the ledger directory) exists, readable.

        A runs directory set away from its default (by an argument, ``--runs-dir`` or
        ``SCALABLE_RUNS_DIR``) must exist itself. The ledger directory may be missing while the
        runs directory exists (nothing was compacted yet); with no runs directory, readers
        need it (a ledger whose streams were retired), and one set away from its default
        must exist.
        """
        from scalable.settings import load_settings

        defaults = load_settings(env={})
        runs = _readable_directory(self.runs_dir, "runs directory")
        if not runs and self.runs_dir != defaults.runs_dir:
            raise LedgerNotFoundError(
                f"no ledger at {str(self.runs_dir)!r}: the runs directory (--runs-dir or SCALABLE_RUNS_DIR) "
                "does not exist; check the path"
            )
        compacted = _readable_directory(self.ledger_dir, "ledger directory")
        if runs or (compacted and not before_compaction):
            return
        if before_compaction:
            missing = f"{str(self.runs_dir)!r} does not exist"
        elif self.ledger_dir != defaults.ledger_dir:
            raise LedgerNotFoundError(
                f"no ledger at {str(self.ledger_dir)!r}: the ledger directory (--ledger-dir or "
                f"SCALABLE_LEDGER_DIR) does not exist, nor does the runs directory {str(self.runs_dir)!r}; "
                "check the paths"
            )
        else:
            missing = f"neither {str(self.runs_dir)!r} nor {str(self.ledger_dir)!r} exists"
        raise LedgerNotFoundError(
            f"no ledger here: {missing}; run a session first, or point --runs-dir or SCALABLE_RUNS_DIR at a ledger"
        )

    def sources(self) -> list[Source]:
        return [Source(run_id, run_id, path, size) for run_id, path, size in stream_files(self._runs)]

    def complete_bytes(self, source: Source) -> int:
        return complete_prefix(Path(source.path), source.size)

    def open_source(self, source: Source) -> IO[bytes]:
        return open(source.path, "rb")  # the caller closes it

    def run_of(self, key: str) -> str:
        return key

    def retire_source(self, source: Source, size: int) -> bool:
        path = Path(source.path)
        # Under the writers' lock: nothing may have been appended since it was verified.
        with open(path, "rb") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                if os.fstat(fh.fileno()).st_size != size:
                    return False
                path.unlink()
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fsync_dir(path.parent)
        return True

    def runs_without_stream(self, generation: Generation) -> set[str]:
        present = {source.run_id for source in self.sources()}
        return {run for run, state in generation.streams.items() if state.retired or run not in present}

    def url(self, rel: str) -> str:
        return os.path.join(self._data, rel)

    def display(self, rel: str) -> str:
        return str(self.ledger_dir / rel)

    def read_prefixes(self) -> list[str]:
        return [self._runs.rstrip("/") + "/", self._data.rstrip("/") + "/"]

    def list_names(self, rel_dir: str) -> list[str]:
        try:
            return os.listdir(self.ledger_dir / rel_dir)
        except FileNotFoundError:
            return []

    def list_files(self, rel_dir: str) -> list[str]:
        return [
            p.relative_to(self.ledger_dir).as_posix() for p in (self.ledger_dir / rel_dir).rglob("*") if p.is_file()
        ]

    def read_bytes(self, rel: str) -> bytes:
        return (self.ledger_dir / rel).read_bytes()

    def size(self, rel: str) -> int:
        return (self.ledger_dir / rel).stat().st_size

    def create(self, rel: str, data: bytes) -> None:
        create_file(self.ledger_dir / rel, data)

    def publish(self, staged: Path, rel: str) -> int:
        target = self.ledger_dir / rel
        move_file(staged, target)
        return target.stat().st_size

    def delete(self, rel: str) -> None:
        (self.ledger_dir / rel).unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with exclusive_lock(self.ledger_dir / GENERATIONS_DIR / ".lock"):
            self._locked = True
            try:
                yield
            finally:
                self._locked = False

    def compacting(self) -> bool:
        if self._locked:
            return False  # this process is the compaction
        try:
            fd = os.open(self.ledger_dir / GENERATIONS_DIR / ".lock", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing the descriptor also releases a lock taken on it
        return False

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        root = self.ledger_dir / _STAGING_DIR
        root.mkdir(parents=True, exist_ok=True)
        try:
            yield root
        finally:
            shutil.rmtree(root, ignore_errors=True)


class ObjectLocation(Location):
    """A ledger on object storage: segments under ``<root>/segments/``, data under ``<root>/ledger/``."""

    exclusive = False
    materialize_tails = True

    def __init__(
        self,
        fs: AbstractFileSystem,
        root: str,
        uri: str,
        outbox: str | os.PathLike[str] | None = None,
        outbox_ledger: str | os.PathLike[str] | None = None,
    ) -> None:
        self.fs = fs
        self.filesystem = fs
        self.root = root.rstrip("/")
        self.uri = uri
        self.outbox = Path(outbox) if outbox is not None else None
        self.outbox_ledger = Path(outbox_ledger) if outbox_ledger is not None else None
        self._data = f"{self.root}/{_DATA_DIR}"

    def _failed(self, exc: Exception, path: str, action: str) -> ScalableError:
        """The one-line error of a failed call on ``path`` (names the object, secrets masked)."""
        return storage_error(exc, str(self.fs.unstrip_protocol(path)), action=action, what="the remote ledger")

    def check_exists(self, *, before_compaction: bool = False) -> None:
        """Check that the bucket answers and that the remote holds something, or a local outbox exists."""
        protocols = (self.fs.protocol,) if isinstance(self.fs.protocol, str) else tuple(self.fs.protocol)
        bucket = self.root.split("/", 1)[0]
        if {"s3", "s3a", "gs", "gcs"} & set(protocols):
            try:
                self.fs.info(bucket)
            except Exception as exc:
                # A HEAD of a missing bucket answers a bare 404.
                missing = "store-missing" if failure_kind(exc) == "not-found" else None
                raise storage_error(exc, self.uri, action="reach", what="the remote ledger", kind=missing) from exc
        try:
            held = bool(self.fs.ls(self.root, detail=False))
        except Exception as exc:
            if failure_kind(exc) != "not-found":
                raise self._failed(exc, self.root, "list") from exc
            held = False
        if not held and not (self.outbox is not None and _readable_directory(self.outbox, "runs directory")):
            raise LedgerNotFoundError(
                f"no ledger at the remote ledger {self.uri!r} (SCALABLE_RUNS_DIR_REMOTE): nothing was synced "
                "there and there is no local runs directory; check the URI, or run and sync a session first"
            )

    def _ready(self, path: str) -> str:
        """Return ``path`` after creating its parent where the filesystem needs it (local)."""
        protocols = (self.fs.protocol,) if isinstance(self.fs.protocol, str) else tuple(self.fs.protocol)
        if "file" in protocols or "local" in protocols:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        return path

    def _listed(self, path: str) -> str:
        """Return ``path`` after dropping what fsspec cached about it and its parents.

        Listings decide which generation is newest and which files exist; another machine
        may have changed either a moment ago.
        """
        self.fs.invalidate_cache(path)
        return path

    def _written(self, path: str, write: Callable[[str], object], *, exclusive: bool = False) -> None:
        """Run ``write(path)``; if it fails, leave no piece of ``path`` behind (a local target fills up mid-write).

        Raises:
            FileExistsError: ``exclusive`` and the object exists (it is someone else's).
            DiskFullError: the target ran out of space (or hit the file size limit).
            StoreError: any other failure, naming the object (a subclass saying why: credentials,
                permissions, network, a missing bucket).
        """
        try:
            write(path)
        except FileExistsError:
            if exclusive:
                raise
            self._remove_partial(path)
            raise LedgerError(f"cannot write {self.fs.unstrip_protocol(path)!r}: it exists") from None
        except Exception as exc:
            self._remove_partial(path)
            raise self._failed(exc, path, "write") from exc

    def _remove_partial(self, path: str) -> None:
        with contextlib.suppress(Exception):  # the store that failed the write may fail this too
            self.fs.rm_file(path)

    def put_segment(self, run_id: str, name: str, data: bytes) -> None:
        """Write segment ``name`` of run ``run_id`` (immutable: the same name means the same bytes)."""
        self._written(
            self._ready(f"{self.root}/{SEGMENTS_DIR}/{run_id}/{name}"), lambda path: self.fs.pipe_file(path, data)
        )

    def sources(self) -> list[Source]:
        try:
            found = self.fs.find(self._listed(f"{self.root}/{SEGMENTS_DIR}"), detail=True)
        except Exception as exc:
            if failure_kind(exc) != "not-found":
                raise self._failed(exc, f"{self.root}/{SEGMENTS_DIR}", "list") from exc
            return []
        prefix = self.root + "/"
        segments: list[Source] = []
        for path, info in sorted(found.items()):
            if path.endswith(".jsonl"):
                key = path.removeprefix(prefix)
                url = str(self.fs.unstrip_protocol(path))
                segments.append(Source(key, self.run_of(key), url, int(info.get("size") or 0)))
        return segments

    def complete_bytes(self, source: Source) -> int:
        return source.size  # a segment holds whole lines only

    def open_source(self, source: Source) -> IO[bytes]:
        try:
            handle: IO[bytes] = self.fs.open(source.path, "rb")
        except Exception as exc:
            raise self._failed(exc, source.path, "read") from exc
        return handle

    def run_of(self, key: str) -> str:
        return key.split("/")[1]

    def retire_source(self, source: Source, size: int) -> bool:
        raise ConfigError(f"segments of the ledger at {self.uri!r} are shared by every machine and are never retired")

    def runs_without_stream(self, generation: Generation) -> set[str]:
        return set()  # segments are never removed, and other machines' runs are theirs to audit

    def url(self, rel: str) -> str:
        return str(self.fs.unstrip_protocol(f"{self._data}/{rel}"))

    def display_root(self, key: str) -> str:
        """A path under the root (a segment's key) as messages name it."""
        return str(self.fs.unstrip_protocol(f"{self.root}/{key}"))

    def display(self, rel: str) -> str:
        return self.url(rel)

    def read_prefixes(self) -> list[str]:
        return [str(self.fs.unstrip_protocol(self.root)).rstrip("/") + "/"]

    def list_names(self, rel_dir: str) -> list[str]:
        path = f"{self._data}/{rel_dir}"
        try:
            listed = self.fs.ls(self._listed(path), detail=False)
            return [p.rstrip("/").rsplit("/", 1)[-1] for p in listed]
        except Exception as exc:
            if failure_kind(exc) != "not-found":
                raise self._failed(exc, path, "list") from exc
            return []

    def list_files(self, rel_dir: str) -> list[str]:
        path = f"{self._data}/{rel_dir}"
        try:
            found = self.fs.find(self._listed(path))
        except Exception as exc:
            if failure_kind(exc) != "not-found":
                raise self._failed(exc, path, "list") from exc
            return []
        return [p.removeprefix(self._data + "/") for p in found]

    def read_bytes(self, rel: str) -> bytes:
        path = f"{self._data}/{rel}"
        try:
            data: bytes = self.fs.cat_file(path)
        except Exception as exc:
            if failure_kind(exc) == "not-found":
                raise  # callers tell a missing file from a failing store
            raise self._failed(exc, path, "read") from exc
        return data

    def size(self, rel: str) -> int:
        return int(self.fs.size(f"{self._data}/{rel}"))

    def create(self, rel: str, data: bytes) -> None:
        # S3 conditional writes, GCS ifGenerationMatch=0, O_EXCL on a local filesystem.
        self._written(
            self._ready(f"{self._data}/{rel}"),
            lambda path: self.fs.pipe_file(path, data, mode="create"),
            exclusive=True,
        )

    def publish(self, staged: Path, rel: str) -> int:
        self._written(self._ready(f"{self._data}/{rel}"), lambda path: self.fs.put_file(str(staged), path))
        return staged.stat().st_size

    def delete(self, rel: str) -> None:
        path = f"{self._data}/{rel}"
        try:
            self.fs.rm_file(path)
        except Exception as exc:
            if failure_kind(exc) != "not-found":
                raise self._failed(exc, path, "delete") from exc

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        root = Path(tempfile.mkdtemp(prefix="scalable-compact-"))
        try:
            yield root
        finally:
            shutil.rmtree(root, ignore_errors=True)


#: File in a runs directory naming the runs shipped from local Parquet (their streams were retired).
SHIPPED_COMPACTED: Final = ".shipped-compacted"


def shipped_compacted_runs(runs_dir: Path) -> set[str]:
    """The runs of ``runs_dir`` already shipped to the remote from local Parquet."""
    try:
        return set((runs_dir / SHIPPED_COMPACTED).read_text().split())
    except FileNotFoundError:
        return set()


def open_object_location(
    uri: str,
    *,
    outbox: str | os.PathLike[str] | None = None,
    outbox_ledger: str | os.PathLike[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> ObjectLocation:
    """Return the object-storage ledger at ``uri`` (an fsspec URI such as ``s3://bucket/ledger/``).

    Args:
        uri: the root of the ledger.
        outbox: the local runs directory whose streams are shipped there.
        outbox_ledger: the local ledger directory whose compacted runs are shipped there too.
        storage_options: options of the fsspec filesystem.

    Raises:
        ConfigError: no fsspec backend handles the URI's protocol (or it is not installed).
    """
    import fsspec

    clean, user, secret = split_userinfo(uri)
    options = dict(storage_options or {})
    if user is not None:
        s3 = clean.lower().startswith(("s3://", "s3a://"))
        options.setdefault("key" if s3 else "username", user)
        if secret is not None:
            options.setdefault("secret" if s3 else "password", secret)
    try:
        if is_remote(clean):
            fs, root = fsspec.core.url_to_fs(clean, **options)
        else:  # a local directory, as a path or a percent-encoded file:// URI
            fs, root = fsspec.filesystem("file", **options), str(local_path(clean))
    except (ValueError, ImportError) as exc:
        raise ConfigError(
            f"SCALABLE_RUNS_DIR_REMOTE {clean!r} cannot be opened ({exc}); use an fsspec URI such as "
            "s3://bucket/ledger/ and install the backend: pip install 'scalable[cloud]'"
        ) from None
    return ObjectLocation(fs, str(root), clean, outbox, outbox_ledger)


def _readable_directory(path: Path, what: str) -> bool:
    """Whether ``path`` is a directory this process can read (``False`` when it does not exist).

    Raises:
        StoreError: it is a file, or it cannot be read (a subclass saying which).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise storage_error(exc, str(path), action="open", what=f"the {what}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise storage_error(NotADirectoryError(20, "Not a directory"), str(path), action="open", what=f"the {what}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise storage_error(PermissionError(13, "Permission denied"), str(path), action="read", what=f"the {what}")
    return True


def open_location(settings: Settings) -> Location:
    """Return the location of the ledger ``settings`` describe.

    Raises:
        ConfigError: ``SCALABLE_RUNS_DIR_REMOTE`` cannot be opened.
    """
    if settings.runs_dir_remote:
        return open_object_location(
            settings.runs_dir_remote, outbox=settings.runs_dir, outbox_ledger=settings.ledger_dir
        )
    return LocalLocation(settings.runs_dir, settings.ledger_dir)
