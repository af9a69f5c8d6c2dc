"""Recording, putting and hashing never open a fifo, a socket or a device, and never read '' as '.'."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scalable import FileType, ScalableSession, cacheable
from scalable.errors import ArtifactNotFoundError, UnsafeArtifactError
from scalable.ledger import bus
from scalable.stores import LocalArtifactStore


@pytest.fixture
def specials(isolated: Path) -> Iterator[dict[str, Path]]:
    """A fifo with no writer, a listening-less unix socket, and two character devices."""
    os.mkfifo(isolated / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(isolated / "sock"))
    try:
        yield {
            "fifo": isolated / "pipe",
            "socket": isolated / "sock",
            "null": Path("/dev/null"),
            "zero": Path("/dev/zero"),
        }
    finally:
        sock.close()


@pytest.fixture
def session(isolated: Path) -> Iterator[ScalableSession]:
    """A session of a minimal project, closed after the test."""
    (isolated / "scalable.yaml").write_text("version: 1\nproject: {name: special-files}\n")
    s = ScalableSession.from_yaml(isolated / "scalable.yaml")
    yield s
    s.close()


@pytest.fixture
def recorded() -> Iterator[list[dict[str, Any]]]:
    """Every artifact event published during the test."""
    events: list[dict[str, Any]] = []
    unsubscribe = bus.subscribe(events.append, ["artifact"])
    yield events
    unsubscribe()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["fifo", "socket", "null", "zero"])
def test_record_artifact_refuses_special_files_at_once(
    session: ScalableSession, specials: dict[str, Path], recorded: list[dict[str, Any]], kind: str
) -> None:
    """record_artifact of a fifo, socket or device raises UnsafeArtifactError naming it; nothing is recorded."""
    path = specials[kind]
    with pytest.raises(UnsafeArtifactError, match="not a regular file") as info:
        session.record_artifact(path)
    assert str(path) in str(info.value)
    with pytest.raises(UnsafeArtifactError, match="not a regular file"):
        session.record_artifact(location=str(path), kind="result")
    assert recorded == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["fifo", "socket", "null", "zero"])
def test_put_refuses_special_files_at_once(
    session: ScalableSession, specials: dict[str, Path], recorded: list[dict[str, Any]], kind: str, isolated: Path
) -> None:
    """A store put (direct or through the session) of a fifo, socket or device is refused; nothing is stored."""
    store = LocalArtifactStore(isolated / "store")
    with pytest.raises(UnsafeArtifactError, match="not a regular file"):
        store.put(specials[kind], "k")
    with pytest.raises(UnsafeArtifactError, match="not a regular file"):
        session.put(specials[kind], "k")
    assert store.list_artifacts() == []
    assert recorded == []


@pytest.mark.timeout(30)
def test_a_directory_holding_a_fifo_is_refused(
    session: ScalableSession, specials: dict[str, Path], isolated: Path, recorded: list[dict[str, Any]]
) -> None:
    """record_artifact of a directory that holds a fifo names the fifo; nothing is recorded."""
    (isolated / "out").mkdir()
    (isolated / "out" / "ok.txt").write_text("ok")
    os.mkfifo(isolated / "out" / "pipe")
    with pytest.raises(UnsafeArtifactError, match="pipe"):
        session.record_artifact(isolated / "out")
    assert recorded == []


@pytest.mark.timeout(30)
def test_a_fifo_file_argument_of_a_cached_function_is_refused(specials: dict[str, Path]) -> None:
    """A FileType argument naming a fifo raises at once instead of waiting for a writer."""

    @cacheable(data=FileType)
    def size(data: str) -> int:
        return len(Path(data).read_bytes())  # pragma: no cover - never reached

    with pytest.raises(UnsafeArtifactError, match="not a regular file"):
        size(str(specials["fifo"]))


@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_path_is_never_the_working_directory(
    session: ScalableSession, isolated: Path, recorded: list[dict[str, Any]], empty: str
) -> None:
    """record_artifact('') and put('') are refused; the working directory is neither recorded nor stored."""
    (isolated / "data.txt").write_text("in the working directory")
    with pytest.raises(ArtifactNotFoundError, match="path is empty"):
        session.record_artifact(empty)
    with pytest.raises(ArtifactNotFoundError, match="path is empty"):
        session.record_artifact(location=empty)
    with pytest.raises(ArtifactNotFoundError, match="path is empty"):
        session.put(empty)
    assert recorded == []
