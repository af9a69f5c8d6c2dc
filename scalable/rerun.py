"""Running a recorded run again in a working copy of what it read, and the verdict on what it made.

:func:`rerun` (``scalable ledger rerun RUN``) reads the run's recipe (:mod:`scalable.recipe`)
and its inputs (:func:`scalable.ledger.diff.run_versions`), then:

1. makes a working copy: a new or empty directory (``into``; by default a new one under
   ``.scalable/reruns/`` beside the runs directory). The code the run executed (its script,
   the project's modules it imported, its manifest) is restored there by digest, from the copy
   the run stored or from where it was if those bytes are still there; every input the run
   read inside its project folder is restored at the same place relative to it, by digest, from
   where it was or from any store or location the ledger saw those bytes at. Each copy is
   verified as replay verifies (:func:`scalable.ledger.replay.restore`). An input outside the
   project (another folder, a bucket) is read where it is, so it is checked there instead.
   When any of them cannot be had, nothing runs (:class:`~scalable.errors.RerunError`, naming
   each input and where it was);
2. runs the recorded command there (``python wf.py``, with the recorded interpreter when it
   still exists), with the recorded environment variables, on the recorded target (or
   ``target``), writing to the same ledger as a new run whose ``run/started`` says
   ``rerun_of``. With ``cache=False`` (the default with ``verify``) ``@cacheable`` calls use an
   empty cache of their own, so no stored value stands in for a computation; with the cache
   on, they use the cache the run used, and a value cached then hides whatever computing it
   again would give. A command that fails, or starts no run, is a
   :class:`~scalable.errors.RerunError` with the failure and the last line of its output (all of
   it is in ``.scalable/rerun.log`` of the working copy);
3. with ``verify``, compares the new run with the original (:func:`scalable.ledger.diff.diff_runs`
   with ``lineage=True``) and appends the verdict to the new run as ``run/verified``.

This module runs a command, so it sits above the ledger and imports no session: the command
starts its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final

import orjson

from scalable.errors import ConfigError, IntegrityError, RerunError, ScalableError
from scalable.failures import storage_error
from scalable.ledger.audit import hash_location
from scalable.ledger.diff import RunVersions, Verdict, Version, diff_runs, run_versions
from scalable.ledger.events import format_timestamp
from scalable.ledger.replay import restore
from scalable.ledger.sql import quote
from scalable.logs import get_logger, mask_secrets
from scalable.uris import is_file_uri, local_path, path_to_uri

if TYPE_CHECKING:
    from scalable.ledger.log import Ledger

__all__ = ["LOG_NAME", "NotRestorable", "RerunResult", "rerun"]

_log = get_logger("scalable.rerun")

#: The command's output, in the working copy.
LOG_NAME: Final = ".scalable/rerun.log"
_SHORT = 12  # hex characters of a digest in messages


@dataclass(frozen=True)
class NotRestorable:
    """Something a run read that its rerun cannot have: what it is, and each place tried with why not."""

    what: str
    tried: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        (first, why), *others = self.tried
        text = f"{self.what}: it was at {mask_secrets(first)} ({why})"
        if others:
            text += "; also tried " + ", ".join(f"{mask_secrets(where)} ({reason})" for where, reason in others)
        return text


@dataclass
class RerunResult:
    """What a rerun did.

    Attributes:
        run_id: the run that was run again.
        new_run_id: the run the command started (``None`` when it started none).
        into: the working copy.
        command: the command run, as run.
        returncode: its exit code.
        log: the file holding its output.
        cache: whether ``@cacheable`` calls used the run's cache (else an empty one).
        restored: the files and directories restored into the working copy.
        verdict: with ``verify``, how the new run compares with the original.
    """

    run_id: str
    new_run_id: str | None
    into: Path
    command: list[str]
    returncode: int
    log: Path
    cache: bool
    restored: list[str] = field(default_factory=list)
    verdict: Verdict | None = None


def _inside(path: str) -> bool:
    """Whether a recorded relative path stays inside the folder it is relative to."""
    parts = PurePosixPath(path).parts
    return bool(parts) and not PurePosixPath(path).is_absolute() and ".." not in parts


def _working_copy(ledger: Ledger, run_id: str, into: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """The directory to run in (made now) and whether this call made it."""
    if into is None:
        parent = ledger.settings.runs_dir.parent / "reruns"
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{run_id}-", dir=parent)), True
    if not os.fspath(into).strip():
        raise ConfigError("the directory to rerun in is empty (''); give a new or empty directory")
    path = Path(os.path.abspath(into))
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"{str(path)!r} is not a new or empty directory; give one to rerun in")
    made = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    return path, made


def _recipe(versions: RunVersions) -> dict[str, Any]:
    """The run's recipe, refused when it cannot be run again as recorded."""
    run_id = versions.run_id
    recipe = versions.recipe
    if not recipe.get("argv"):
        raise RerunError(
            f"run {run_id!r} recorded no command to run again (it was made by a version of scalable that "
            "recorded none, or outside a session); run its script again by hand"
        )
    if recipe.get("interactive"):
        raise RerunError(
            f"run {run_id!r} was started from an interactive interpreter or notebook, so there is no command "
            "to run again; put its code in a script"
        )
    if recipe.get("masked"):
        raise RerunError(
            f"the command of run {run_id!r} held a value that looked like a secret, which was not recorded; "
            "pass secrets in the environment instead of arguments"
        )
    if not _inside(str(recipe.get("cwd") or ".")) and recipe.get("cwd") != ".":
        raise RerunError(
            f"run {run_id!r} was started in {recipe.get('cwd')!r}, outside its project folder "
            f"{recipe.get('root')!r}; start it from inside the project"
        )
    return recipe


def _sources(ledger: Ledger, digests: Sequence[str]) -> dict[str, list[str]]:
    """Every location the ledger saw each digest at, stored copies (``put``) first."""
    if not digests:
        return {}
    listed = ", ".join(quote(d) for d in sorted(set(digests)))
    rows = ledger.query(
        "SELECT digest, location, min(CASE op WHEN 'put' THEN 0 WHEN 'recorded' THEN 1 ELSE 2 END) AS rank "
        f"FROM artifacts WHERE digest IN ({listed}) AND location IS NOT NULL GROUP BY digest, location "
        "ORDER BY digest, rank, location"
    ).to_pylist()
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(str(row["digest"]), []).append(str(row["location"]))
    return found


def _why(exc: BaseException, location: str) -> str:
    if isinstance(exc, IntegrityError):
        return "holds other bytes"
    if isinstance(exc, FileNotFoundError) or isinstance(storage_error(exc, location), FileNotFoundError):
        return "nothing is there any more"
    return str(storage_error(exc, location))


def _restore_from(
    places: Sequence[str],
    target: Path,
    digest: str | None,
    kind: str | None,
    storage_options: Mapping[str, Mapping[str, Any]] | None,
) -> list[tuple[str, str]] | None:
    """Restore ``target`` from the first of ``places`` that holds ``digest``; else each place with why not."""
    tried: list[tuple[str, str]] = []
    for place in dict.fromkeys(places):
        try:
            restore(place, target, digest, "dir" if kind == "dir" else None, storage_options)
        except (OSError, ScalableError) as exc:
            tried.append((place, _why(exc, place)))
            continue
        except Exception as exc:  # a backend's own error: say what it was, try the next place
            tried.append((place, str(storage_error(exc, place))))
            continue
        return None
    return tried


def _check_in_place(
    version: Version, storage_options: Mapping[str, Mapping[str, Any]] | None
) -> tuple[str, str] | None:
    """An input read outside the project: ``(location, why)`` unless it still holds its bytes."""
    assert version.location is not None
    try:
        found = hash_location(version.location, storage_options)
    except Exception as exc:
        return version.location, str(storage_error(exc, version.location))
    if found is None:
        return version.location, "nothing is there any more"
    if version.digest is not None and found != version.digest:
        return version.location, f"holds other bytes ({found[:_SHORT]})"
    return None


def _describe(version: Version) -> str:
    digest = f" (sha256 {version.digest[:_SHORT]})" if version.digest else ""
    return f"input {version.name or version.key}{digest}"


def _under_root(location: str, root: str) -> str | None:
    """The path of a local location relative to the project folder ``root``, if it is inside it."""
    if not is_file_uri(location) and "://" in location:
        return None
    try:
        path = local_path(location)
    except ConfigError:
        return None
    rel = os.path.relpath(path, root)
    posix = PurePosixPath(Path(rel)).as_posix()
    return posix if _inside(posix) else None


def _restore_all(
    ledger: Ledger,
    versions: RunVersions,
    recipe: Mapping[str, Any],
    into: Path,
    storage_options: Mapping[str, Mapping[str, Any]] | None,
) -> list[str]:
    """Restore the run's code and inputs into ``into``; raise RerunError naming every one that cannot be."""
    root = str(recipe["root"])
    restored: list[str] = []
    missing: list[NotRestorable] = []
    for entry in recipe.get("code") or ():
        path = str(entry.get("path"))
        if not _inside(path):
            continue
        places = [p for p in (entry.get("stored"), path_to_uri(os.path.join(root, path))) if p]
        tried = _restore_from(places, into / path, entry.get("digest"), None, storage_options)
        if tried:
            missing.append(NotRestorable(f"code {path} (sha256 {str(entry.get('digest'))[:_SHORT]})", tuple(tried)))
        else:
            restored.append(str(into / path))
    inputs = sorted(versions.inputs.values(), key=lambda v: v.key)
    known = _sources(ledger, [v.digest for v in inputs if v.digest])
    for version in inputs:
        assert version.location is not None
        rel = _under_root(version.location, root)
        if rel is None:
            problem = _check_in_place(version, storage_options)
            if problem is not None:
                missing.append(NotRestorable(_describe(version), (problem,)))
            continue
        places = [version.location, *known.get(version.digest or "", ())]
        tried = _restore_from(places, into / rel, version.digest, version.kind, storage_options)
        if tried:
            missing.append(NotRestorable(_describe(version), tuple(tried)))
        else:
            restored.append(str(into / rel))
    if missing:
        shown = "; ".join(str(m) for m in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise RerunError(
            f"run {versions.run_id!r} cannot run again: {len(missing)} of what it read cannot be restored: "
            f"{shown}{more}; put those bytes back (or store them) and try again"
        )
    return restored


def _command(recipe: Mapping[str, Any], into: Path) -> list[str]:
    """The recorded command, its interpreter and the project's paths in its arguments moved to ``into``."""
    root = str(recipe["root"])
    argv = [str(a) for a in recipe["argv"]]
    recorded = str(recipe.get("executable") or "")
    python = recorded if recorded and os.access(recorded, os.X_OK) else sys.executable

    def moved(arg: str) -> str:
        name, eq, value = arg.partition("=") if arg.startswith("-") else ("", "", arg)
        if value == root or value.startswith(root + os.sep):
            value = str(into) + value[len(root) :]
        return f"{name}{eq}{value}"

    return [python, *(moved(a) for a in argv[1:])]


def _environment(
    ledger: Ledger,
    run_id: str,
    versions: RunVersions,
    recipe: Mapping[str, Any],
    into: Path,
    *,
    cache: bool,
    target: str | None,
) -> dict[str, str]:
    """The command's environment: this one, the recorded variables, and the ledger, storage, cache and target of the rerun.

    The run's default storage is the one it recorded (moved into the working copy when it was
    inside the project), so the command fetches what it fetched from where it fetched it.
    """
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in (recipe.get("env") or {}).items()})
    settings = ledger.settings
    env.update(
        SCALABLE_RERUN_OF=run_id,
        SCALABLE_TELEMETRY="1",
        SCALABLE_RUNS_DIR=str(settings.runs_dir),
        SCALABLE_LEDGER_DIR=str(settings.ledger_dir),
    )
    if settings.runs_dir_remote:
        env["SCALABLE_RUNS_DIR_REMOTE"] = settings.runs_dir_remote
    chosen = target or versions.started.get("target")
    if chosen:
        env["SCALABLE_TARGET"] = str(chosen)
    storage = str(versions.started.get("default_storage") or "")
    if storage and "***" not in storage:  # a URI whose credentials were masked is left to this environment
        inside = _under_root(storage, str(recipe["root"]))
        env["SCALABLE_DEFAULT_STORAGE"] = str(into / inside) if inside is not None else storage
    manifest = versions.started.get("manifest")
    if manifest:
        rel = _under_root(str(manifest), str(recipe["root"]))
        if rel is not None:
            env["SCALABLE_MANIFEST"] = str(into / rel)
    if not cache:
        env["SCALABLE_CACHE_DIR"] = str(into / ".scalable" / "rerun-cache")
        env.pop("SCALABLE_CACHE_REMOTE", None)
    elif recipe.get("cache_dir"):
        env["SCALABLE_CACHE_DIR"] = str(recipe["cache_dir"])
    roots = [str(into / r) for r in recipe.get("import_roots") or () if _inside(str(r)) or r == "."]
    if roots:
        env["PYTHONPATH"] = os.pathsep.join([*roots, *filter(None, [env.get("PYTHONPATH")])])
    return env


def _new_run(ledger: Ledger, run_id: str, into: Path, since: str) -> tuple[str | None, dict[str, Any]]:
    """The run the command started as a rerun of ``run_id``, and its ``run/finished`` attributes.

    It is the first rerun of ``run_id`` whose project folder is ``into``; failing that (a script
    that names its manifest by an absolute path keeps its project folder), the first one started
    since ``since``.
    """
    rows = ledger.query(
        "SELECT run_id, timestamp, attrs FROM events WHERE event_type = 'run' AND op = 'started' "
        f"AND json_extract_string(attrs, '$.rerun_of') = {quote(run_id)} ORDER BY timestamp, run_id"
    ).to_pylist()
    here = os.path.realpath(into)
    roots = {r["run_id"]: str((orjson.loads(r["attrs"] or "{}").get("recipe") or {}).get("root") or "") for r in rows}
    mine = [r["run_id"] for r in rows if roots[r["run_id"]] and os.path.realpath(roots[r["run_id"]]) == here]
    later = [r["run_id"] for r in rows if r["timestamp"] >= since]
    found = (mine or later or [None])[0]
    if found is None:
        return None, {}
    finished = ledger.query(
        f"SELECT attrs FROM events WHERE run_id = {quote(found)} AND event_type = 'run' AND op = 'finished'"
    ).to_pylist()
    return str(found), orjson.loads(finished[0]["attrs"] or "{}") if finished else {}


def _last_line(log: Path) -> str:
    try:
        with log.open("rb") as fh:
            fh.seek(max(0, log.stat().st_size - 8192))
            lines = [line for line in fh.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return mask_secrets(lines[-1].strip()) if lines else ""


def rerun(
    ledger: Ledger,
    run_id: str,
    *,
    into: str | os.PathLike[str] | None = None,
    verify: bool = False,
    cache: bool | None = None,
    target: str | None = None,
    storage_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> RerunResult:
    """Run ``run_id`` again in a working copy of what it read, as a new run (see the module text).

    Args:
        ledger: the ledger the run is in; the new run is written there too.
        run_id: the run to run again.
        into: a new or empty directory for the working copy (default: a new one under
            ``.scalable/reruns/`` beside the runs directory).
        verify: compare the new run with the original and record the verdict (``run/verified``).
        cache: let ``@cacheable`` calls use the run's cache; the default is ``not verify``.
        target: run on this target of the manifest instead of the recorded one.
        storage_options: per-protocol fsspec options for reading stores.

    Returns:
        The :class:`RerunResult`, with the verdict when ``verify``.

    Raises:
        RunNotFoundError: the run is not in the ledger.
        ConfigError: ``into`` is not a new or empty directory.
        RerunError: the run recorded no command that can run again, some of what it read cannot
            be restored (each is named with where it was), or the command failed or started no
            run (with the failure; ``result`` is the :class:`RerunResult`).
    """
    versions = run_versions(ledger, run_id)
    recipe = _recipe(versions)
    use_cache = (not verify) if cache is None else cache
    workdir, made = _working_copy(ledger, run_id, into)
    try:
        restored = _restore_all(ledger, versions, recipe, workdir, storage_options)
    except BaseException:
        if made:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    command = _command(recipe, workdir)
    env = _environment(ledger, run_id, versions, recipe, workdir, cache=use_cache, target=target)
    cwd = workdir / str(recipe.get("cwd") or ".")
    cwd.mkdir(parents=True, exist_ok=True)
    log = workdir / LOG_NAME
    log.parent.mkdir(parents=True, exist_ok=True)
    _log.info("rerun.started", run_id=run_id, into=str(workdir), cache=use_cache)
    since = format_timestamp(time.time_ns())
    with log.open("wb") as out:
        # The exit code is looked at below, with the run the command started.
        proc = subprocess.run(
            command, check=False, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    new_run, finished = _new_run(ledger, run_id, workdir, since)
    result = RerunResult(run_id, new_run, workdir, command, proc.returncode, log, use_cache, restored)
    shown = " ".join(command[1:]) or command[0]
    if new_run is None:
        error = RerunError(
            f"the command of run {run_id!r} ({shown}) exited with {proc.returncode} in {str(workdir)!r} and started "
            f"no run: {_last_line(log) or 'it printed nothing'}; its output is in {str(log)!r}"
        )
        error.result = result
        raise error
    status = finished.get("status")
    if proc.returncode != 0 or status != "completed":
        failure = (
            f"{finished.get('error_type')}: {finished.get('error')}"
            if finished.get("error")
            else _last_line(log) or f"exit code {proc.returncode}"
        )
        error = RerunError(
            f"the rerun of {run_id!r} failed: run {new_run} ended {status or 'unfinished'} (exit code "
            f"{proc.returncode}): {mask_secrets(failure)}; its output is in {str(log)!r}"
        )
        error.result = result
        raise error
    if verify:
        verdict = diff_runs(ledger, run_id, new_run, lineage=True).lineage
        assert verdict is not None
        result.verdict = verdict
        ledger.append(
            {
                "event_type": "run",
                "op": "verified",
                "run_id": new_run,
                "attrs": {**verdict.summary(), "cache": "used" if use_cache else "bypassed", "into": str(workdir)},
            }
        )
    return result
