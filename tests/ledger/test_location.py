"""One contract for every ledger location: a local directory, and object storage (file://, S3, GCS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scalable.errors import CompactionConflictError
from scalable.ledger.generations import Generation, commit_generation, read_generation
from scalable.ledger.location import LocalLocation, Location, ObjectLocation, open_object_location
from scalable.ledger.log import Ledger
from scalable.ledger.sql import connect, file_list

KINDS = ["local", "file", "s3", "gcs", "gcs_strict"]
#: Locations on gcp-storage-emulator, which ignores ifGenerationMatch=0.
_LAX: set[int] = set()


@pytest.fixture(params=KINDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    """Each kind of location, empty."""
    kind = request.param
    if kind == "local":
        return LocalLocation(tmp_path / "runs", tmp_path / "ledger")
    if kind == "file":
        return open_object_location(f"file://{tmp_path}/remote", outbox=tmp_path / "runs")
    bucket, options = request.getfixturevalue(f"{kind}_bucket")
    scheme = "s3" if kind == "s3" else "gs"
    # The stores' default options: listings cached, as a user's client has them.
    options = {k: v for k, v in options.items() if k != "use_listings_cache"}
    found = open_object_location(f"{scheme}://{bucket}/ledger", outbox=tmp_path / "runs", storage_options=options)
    if kind == "gcs":
        _LAX.add(id(found))
    return found


def honours_create_if_absent(location: Location) -> bool:
    """gcp-storage-emulator ignores ifGenerationMatch=0; every other store refuses a second create."""
    return id(location) not in _LAX


def parquet_file(path: Path, rows: int) -> Path:
    """A small Parquet file with ``rows`` rows."""
    pq.write_table(pa.table({"n": list(range(rows))}), path)
    return path


def test_create_writes_once_and_reads_back(location: Location) -> None:
    """create() writes a new file; where the store honours it, a second create of the name fails."""
    assert location.list_names("_manifest") == []
    location.create("_manifest/00000000000000000001.json", b"first")
    assert location.read_bytes("_manifest/00000000000000000001.json") == b"first"
    assert location.list_names("_manifest") == ["00000000000000000001.json"]
    if honours_create_if_absent(location):
        with pytest.raises(FileExistsError):
            location.create("_manifest/00000000000000000001.json", b"second")
        assert location.read_bytes("_manifest/00000000000000000001.json") == b"first"


def test_generations_commit_and_read_back(location: Location) -> None:
    """A committed generation is the newest one read; committing its version again is a conflict."""
    assert read_generation(location) == Generation()
    commit_generation(location, Generation(version=1, created="2026-01-01T00:00:00.000000Z"))
    commit_generation(location, Generation(version=2, retired_before="2025-01-01T00:00:00.000000Z"))
    newest = read_generation(location)
    assert (newest.version, newest.retired_before) == (2, "2025-01-01T00:00:00.000000Z")
    if honours_create_if_absent(location):
        with pytest.raises(CompactionConflictError, match="committed by another compaction"):
            commit_generation(location, Generation(version=2))


def test_published_files_are_listed_read_by_duckdb_and_deleted(location: Location, tmp_path: Path) -> None:
    """publish() moves a staged file into place; DuckDB reads it at url(); delete() removes it."""
    staged = parquet_file(tmp_path / "staged.parquet", 3)
    size = staged.stat().st_size
    rel = "events/date=2026-01-01/part-x.parquet"
    assert location.publish(staged, rel) == size
    assert location.list_files("events") == [rel]
    url = location.url(rel)
    assert any(url.startswith(prefix) for prefix in location.read_prefixes())
    con = connect(filesystem=location.filesystem)
    try:
        assert con.execute(f"SELECT count(*) FROM read_parquet({file_list([url])})").fetchall() == [(3,)]
    finally:
        con.close()
    location.delete(rel)
    location.delete(rel)  # already gone: nothing happens
    assert location.list_files("events") == []


def test_sources_and_staging(location: Location, tmp_path: Path) -> None:
    """A run's lines show up as a source of that run, complete lines only; staging is local and removed."""
    lines = b'{"a":1}\n{"a":2}\n'
    if isinstance(location, LocalLocation):
        stream = tmp_path / "runs" / "run-1" / "artifacts.jsonl"
        stream.parent.mkdir(parents=True)
        stream.write_bytes(lines + b'{"a":')  # a line still being written
    else:
        assert isinstance(location, ObjectLocation)
        location.put_segment("run-1", "m-0000000000000000-0000000000000016.jsonl", lines)
    (source,) = location.sources()
    assert location.run_of(source.key) == source.run_id == "run-1"
    assert location.complete_bytes(source) == len(lines)
    with location.open_source(source) as fh:
        assert fh.read(len(lines)) == lines
    with location.staging() as tmp:
        assert tmp.is_dir()
        (tmp / "x").write_bytes(b"x")
    assert not tmp.exists()


def test_a_ledger_under_a_glob_like_directory_reads_only_itself(tmp_path: Path) -> None:
    """DuckDB takes file names as glob patterns: a ledger in ``a[1]`` never reads a sibling ``a1``."""
    mine = Ledger.open(tmp_path / "a[1]" / "runs", tmp_path / "a[1]" / "ledger")
    other = Ledger.open(tmp_path / "a1" / "runs", tmp_path / "a1" / "ledger")
    mine.append({"event_type": "artifact", "op": "put", "run_id": "run-mine"})
    other.append({"event_type": "artifact", "op": "put", "run_id": "run-other"})
    other.compact()
    query = "SELECT run_id, count(*) AS n FROM events GROUP BY run_id"
    assert mine.query(query).to_pylist() == [{"run_id": "run-mine", "n": 1}]
    mine.compact()
    assert mine.query(query).to_pylist() == [{"run_id": "run-mine", "n": 1}]
    for led in (mine, other):
        led.close()


def test_a_ledger_on_each_location_compacts_through_the_same_pipeline(location: Location, tmp_path: Path) -> None:
    """Appending, compacting and querying give the same events wherever the location is."""
    settings: dict[str, Any] = {"runs_dir": tmp_path / "runs", "ledger_dir": tmp_path / "ledger"}
    if isinstance(location, ObjectLocation):
        settings["runs_dir_remote"] = location.uri
    from scalable.settings import load_settings

    led = Ledger(load_settings(**settings))
    led.append_many(
        {"event_type": "artifact", "op": "put", "run_id": f"run-{i % 2}", "size_bytes": i} for i in range(6)
    )
    before = led.query("SELECT event_id FROM events ORDER BY event_id").to_pylist()
    result = led.compact()
    assert (result.events_written, result.events_total) == (6, 6)
    assert led.compact().events_written == 0
    assert led.query("SELECT event_id FROM events ORDER BY event_id").to_pylist() == before
    assert read_generation(led.location).rows == 6
    led.close()


def test_listings_never_come_from_a_cache(location: Location, tmp_path: Path) -> None:
    """What another client (another machine) wrote a moment ago is in the next listing, generation and info."""
    if isinstance(location, LocalLocation):
        other: Location = LocalLocation(tmp_path / "runs", tmp_path / "ledger")
    else:
        assert isinstance(location, ObjectLocation)
        other = open_object_location(
            location.uri,
            outbox=tmp_path / "runs",
            storage_options={**location.fs.storage_options, "skip_instance_cache": True},
        )
        assert other.fs is not location.fs
    commit_generation(location, Generation(version=1))
    assert read_generation(location).version == 1  # listed (and, by default, cached) here
    assert location.list_files("events") == []
    commit_generation(other, Generation(version=2))
    staged = parquet_file(tmp_path / "staged.parquet", 1)
    other.publish(staged, "events/date=2026-01-01/part-y.parquet")
    assert read_generation(location).version == 2
    assert location.list_names("_manifest") == ["00000000000000000001.json", "00000000000000000002.json"]
    assert location.list_files("events") == ["events/date=2026-01-01/part-y.parquet"]
    if isinstance(other, ObjectLocation):
        other.put_segment("run-1", "m-0000000000000000-0000000000000002.jsonl", b"{}\n")
    else:
        (tmp_path / "runs" / "run-1").mkdir(parents=True)
        (tmp_path / "runs" / "run-1" / "artifacts.jsonl").write_bytes(b"{}\n")
    assert [s.run_id for s in location.sources()] == ["run-1"]
    other.delete("events/date=2026-01-01/part-y.parquet")
    assert location.list_files("events") == []
