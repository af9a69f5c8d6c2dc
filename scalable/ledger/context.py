"""The run and task that events raised here belong to (context variables, no I/O).

A session binds its run id; a task wrapper binds the task name and the id of the task's
execution; the ledger fills them into every event that does not name them (the task id goes
into ``attrs``, where lineage reads which events one task raised). Outside any session, events go to an implicit run that
is unique to the process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = [
    "bind",
    "current_component",
    "current_run_id",
    "current_task_id",
    "current_task_name",
    "end_implicit_run",
    "implicit_run_id",
    "make_run_id",
]

current_run_id: ContextVar[str | None] = ContextVar("scalable_run_id", default=None)
current_task_name: ContextVar[str | None] = ContextVar("scalable_task_name", default=None)
current_component: ContextVar[str | None] = ContextVar("scalable_component", default=None)
current_task_id: ContextVar[str | None] = ContextVar("scalable_task_id", default=None)

_implicit: tuple[int, str] | None = None


def make_run_id(project: str) -> str:
    """Return a run id of Scalable's form: ``run-<UTC stamp>-<project>-<8 hex>``."""
    # A run id holds ASCII letters, digits, '.', '_' and '-' only, and at most 200 characters.
    slug = "".join(ch if (ch.isascii() and ch.isalnum()) or ch in "-_" else "-" for ch in project.strip())[:64]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"run-{stamp}-{slug or 'project'}-{os.urandom(4).hex()}"


def implicit_run_id() -> str:
    """Return this process's implicit run id (a new one after ``fork``, and after it was sealed)."""
    global _implicit
    pid = os.getpid()
    if _implicit is None or _implicit[0] != pid:
        _implicit = (pid, make_run_id("adhoc"))
    return _implicit[1]


def end_implicit_run(run_id: str) -> None:
    """Note that ``run_id`` was sealed: if it is the implicit run, later events start a new one."""
    global _implicit
    if _implicit is not None and _implicit[1] == run_id:
        _implicit = None


@contextmanager
def bind(
    *,
    run_id: str | None = None,
    task_name: str | None = None,
    component: str | None = None,
    task_id: str | None = None,
) -> Iterator[None]:
    """Make events raised inside the block carry ``run_id``/``task_name``/``component``/``task_id``."""
    tokens = []
    if run_id is not None:
        tokens.append((current_run_id, current_run_id.set(run_id)))
    if task_name is not None:
        tokens.append((current_task_name, current_task_name.set(task_name)))
    if component is not None:
        tokens.append((current_component, current_component.set(component)))
    if task_id is not None:
        tokens.append((current_task_id, current_task_id.set(task_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
