"""A ledger keeps its lineage connection between walks, and every walk still sees the ledger as it is now."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from scalable.ledger import views
from scalable.ledger.context import bind
from scalable.ledger.log import Ledger


def digest(i: int) -> str:
    return f"{i:064x}"


def put(ledger: Ledger, run_id: str, i: int, *inputs: int) -> None:
    """Artifact ``i`` of ``run_id``, derived from ``inputs``."""
    with bind(run_id=run_id):
        ledger.append(
            {
                "event_type": "artifact",
                "op": "put",
                "artifact_name": f"a{i}",
                "location": f"s3://bucket/a{i}",
                "digest": digest(i),
                "inputs": [digest(n) for n in inputs] or None,
            }
        )


def below(ledger: Ledger, i: int, **kwargs: object) -> set[str]:
    return ledger.lineage(digest(i), direction="down", **kwargs).descendants()  # type: ignore[arg-type]


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger.open(tmp_path / "runs", tmp_path / "ledger")
    yield led  # type: ignore[misc]
    led.close()


def test_walks_see_lines_appended_runs_added_and_compactions_since_the_last_walk(ledger: Ledger) -> None:
    """Appended to a stream the last walk read, a new stream, a compaction, as_of: each is seen."""
    put(ledger, "run-1", 1)
    put(ledger, "run-1", 2, 1)
    assert below(ledger, 1) == {digest(2)}
    kept = views._warm[ledger].con
    assert kept is not None

    put(ledger, "run-1", 3, 2)  # the same stream: the same snapshot, the same connection
    assert below(ledger, 1) == {digest(2), digest(3)}
    assert views._warm[ledger].con is kept

    put(ledger, "run-2", 4, 3)  # a new stream: a new snapshot
    assert below(ledger, 1) == {digest(2), digest(3), digest(4)}
    assert views._warm[ledger].con is not kept

    ledger.finish_run("run-1")
    ledger.finish_run("run-2")
    ledger.compact()
    put(ledger, "run-3", 5, 4)
    assert below(ledger, 1) == {digest(n) for n in (2, 3, 4, 5)}
    assert ledger.lineage(digest(5)).ancestors() == {digest(n) for n in (1, 2, 3, 4)}
    as_of = ledger.query(f"SELECT min(timestamp) AS t FROM events WHERE digest = '{digest(3)}'").to_pylist()[0]["t"]
    assert below(ledger, 1, as_of=as_of) == {digest(2), digest(3)}
    assert below(ledger, 1) == {digest(n) for n in (2, 3, 4, 5)}


def test_walks_from_several_threads_at_once_all_give_the_whole_answer(ledger: Ledger) -> None:
    """One thread reads through the kept connection; the others through their own, all correct."""
    for i in range(1, 30):
        put(ledger, f"run-{i % 3}", i, *([i - 1] if i > 1 else []))
    want = {digest(i) for i in range(2, 30)}
    found: list[set[str]] = []
    errors: list[BaseException] = []

    def walk() -> None:
        try:
            for _ in range(5):
                found.append(below(ledger, 1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=walk) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert found == [want] * 20


def test_closing_the_ledger_closes_its_connection(tmp_path: Path) -> None:
    """The kept connection goes with the ledger; a ledger opened again on the files walks anew."""
    led = Ledger.open(tmp_path / "runs", tmp_path / "ledger")
    put(led, "run-1", 1)
    put(led, "run-1", 2, 1)
    assert below(led, 1) == {digest(2)}
    kept = views._warm[led].con
    assert kept is not None
    led.close()
    assert led not in views._warm
    with pytest.raises(Exception, match="closed"):
        kept.execute("SELECT 1")
    again = Ledger.open(tmp_path / "runs", tmp_path / "ledger")
    try:
        assert below(again, 1) == {digest(2)}
    finally:
        again.close()


def test_a_forked_child_walks_with_a_connection_of_its_own(ledger: Ledger) -> None:
    """A child forked after a walk never touches the parent's connection and walks correctly."""
    put(ledger, "run-1", 1)
    put(ledger, "run-1", 2, 1)
    assert below(ledger, 1) == {digest(2)}
    parents = views._warm[ledger].con
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            right = below(ledger, 1) == {digest(2)}
            code = 0 if right and views._warm[ledger].con is not parents else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert below(ledger, 1) == {digest(2)}
