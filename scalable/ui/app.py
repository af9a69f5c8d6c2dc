"""The explorer's ASGI app: the pages, the JSON endpoints behind them, and the static assets.

Every page is one HTML document (``static/index.html``) at a stable URL; its script reads the
URL and draws the page from the JSON endpoints under ``/api/``, which scripts may call as well
(docs/ui.rst lists them). Endpoints run in worker threads and read the ledger only through
:mod:`scalable.ui.explorer`; an error a user caused answers with the CLI's one line
(``error: ...``) and a status that says what kind it was; anything else is a 500 with one
line, its traceback in the log.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote as url_quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from scalable.errors import ConfigError, IntegrityError, ScalableError
from scalable.logs import error_line, get_logger, mask_secrets
from scalable.ui import explorer
from scalable.ui.access import AccessGuard, AccessPolicy
from scalable.ui.cookbook import COOKBOOK
from scalable.ui.download import verified_download

if TYPE_CHECKING:
    from scalable.ledger.log import Ledger
    from scalable.ui.access import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_SECURITY_POLICY", "PAGES", "STATIC", "create_app", "status_of"]

#: The directory of the explorer's HTML, script, style and vendored libraries.
STATIC: Final = Path(__file__).resolve().parent / "static"
#: Every page's URL pattern (each serves the one HTML document).
PAGES: Final = (
    "/runs",
    "/runs/{run_id}",
    "/compare",
    "/compare/{run_a}/{run_b}",
    "/artifact",
    "/lineage",
    "/audit",
    "/sql",
)
# The one inline style Cytoscape.js adds to the page (a container rule); allowed by its hash.
_CYTOSCAPE_STYLE_HASH: Final = "sha256-pgvDUBa4IjFA2yuSJ2cqcyxmNYJMborsd0ORcRv9vw8="
#: The policy every page is sent with: scripts, styles and data from the explorer only.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; "
    f"style-src 'self' '{_CYTOSCAPE_STYLE_HASH}'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_log = get_logger("scalable.ui")


def status_of(exc: ScalableError) -> int:
    """The HTTP status of an error a request caused: 404 not there, 403 refused, 409 changed bytes, else 400."""
    if isinstance(exc, IntegrityError):
        return 409
    if isinstance(exc, PermissionError):
        return 403
    if isinstance(exc, LookupError | FileNotFoundError):
        return 404
    return 400


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    try:
        text = json.dumps(data, default=str, ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN or an infinity (SQL can make them): JSON has no such numbers
        text = json.dumps(_finite(data), default=str, ensure_ascii=False, allow_nan=False)
    return Response(text.encode(), status_code=status, media_type="application/json", headers=headers)


def _finite(value: Any) -> Any:
    """``value`` with every NaN and infinity written as text (``"NaN"``, ``"Infinity"``, ``"-Infinity"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _error(exc: ScalableError) -> Response:
    status = status_of(exc)
    return _json({"error": error_line(exc), "type": type(exc).__name__, "status": status}, status)


def _param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value if value not in (None, "") else None


def _required(request: Request, name: str) -> str:
    value = _param(request, name)
    if value is None:
        raise ConfigError(f"the query parameter {name}= is missing")
    return value


def _int(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    text = _param(request, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is out of range; give {low} to {high}")
    return value


def _flag(request: Request, name: str, default: bool) -> bool:
    text = _param(request, name)
    if text is None:
        return default
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={text!r} is not a yes/no value; give 1 or 0")


Handler = Callable[[Request], Response]


def _endpoint(handler: Handler) -> Callable[[Request], Any]:
    """Run ``handler`` in a worker thread; an error a user caused becomes its one line and status."""

    async def endpoint(request: Request) -> Response:
        try:
            return await asyncio.to_thread(handler, request)
        except ScalableError as exc:
            return _error(exc)
        except Exception as exc:  # a bug, not bad input: logged whole, answered in one line
            _log.exception("ui.unexpected_error", path=request.url.path)
            first = mask_secrets(str(exc).splitlines()[0]) if str(exc) else "no message"
            message = f"error: unexpected {type(exc).__name__}: {first} (the explorer's log has the traceback)"
            return _json({"error": message, "type": type(exc).__name__, "status": 500}, 500)

    endpoint.__name__ = handler.__name__
    return endpoint


class _Api:
    """The JSON endpoints over one ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def info(self, _request: Request) -> Response:
        from scalable import __version__

        lock = json.loads((STATIC / "vendor" / "vendor.lock.json").read_text())
        return _json(
            {
                "version": __version__,
                "runs_dir": str(self.ledger.runs_dir),
                "ledger_dir": str(self.ledger.ledger_dir),
                "vendored": [{k: p[k] for k in ("name", "version", "license")} for p in lock["packages"]],
            }
        )

    def runs(self, request: Request) -> Response:
        wanted = explorer.RunFilter(
            project=_param(request, "project"),
            status=_param(request, "status"),
            since=_param(request, "since"),
            until=_param(request, "until"),
            text=_param(request, "q"),
            sort=_param(request, "sort") or "started_at",
            descending=(_param(request, "order") or "desc") != "asc",
            limit=_int(request, "limit", 100, 1, 1000) or 100,
            offset=_int(request, "offset", 0, 0, 1 << 40) or 0,
        )
        return _json(explorer.runs_page(self.ledger, wanted))

    def run(self, request: Request) -> Response:
        return _json(explorer.run_page(self.ledger, request.path_params["run_id"]))

    def audit_states(self, request: Request) -> Response:
        runs = request.query_params.getlist("run")
        if len(runs) > 1000:
            raise ConfigError(f"{len(runs)} runs asked for; give at most 1000")
        return _json(explorer.audit_states(self.ledger, runs))

    def compare(self, request: Request) -> Response:
        return _json(explorer.compare_page(self.ledger, _required(request, "a"), _required(request, "b")))

    def artifact(self, request: Request) -> Response:
        return _json(
            explorer.artifact_page(self.ledger, location=_param(request, "location"), digest=_param(request, "digest"))
        )

    def lineage(self, request: Request) -> Response:
        relations = [r for value in request.query_params.getlist("relation") for r in value.split(",") if r]
        return _json(
            explorer.lineage_page(
                self.ledger,
                _required(request, "node"),
                direction=_param(request, "direction") or "up",
                depth=_int(request, "depth", None, 1, 1000),
                relations=relations,
                limit=_int(request, "limit", explorer.LINEAGE_NODE_LIMIT, 1, explorer.LINEAGE_NODE_LIMIT)
                or explorer.LINEAGE_NODE_LIMIT,
            )
        )

    def audit(self, request: Request) -> Response:
        report = self.ledger.audit(_param(request, "run"), content=_flag(request, "content", False))
        return _json(report.to_dict())

    def cookbook(self, _request: Request) -> Response:
        return _json([r._asdict() for r in COOKBOOK])

    def sql(self, request: Request) -> Response:
        sql, as_of = _required(request, "q"), _param(request, "as_of")
        fmt = _param(request, "format")
        if fmt is None:
            return _json(explorer.sql_page(self.ledger, sql, as_of=as_of))
        if fmt not in ("csv", "json", "jsonl"):
            raise ConfigError(f"format={fmt!r} is not one of csv, json, jsonl")
        from scalable.cli.output import render_rows

        table = self.ledger.query(sql, as_of=as_of)
        out = io.StringIO()
        render_rows(table.to_pylist(), table.column_names, fmt, out)
        media = {"csv": "text/csv", "json": "application/json", "jsonl": "application/x-ndjson"}[fmt]
        return Response(
            out.getvalue().encode(),
            media_type=f"{media}; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="query.{fmt}"'},
        )

    def download(self, request: Request) -> Response:
        found = verified_download(self.ledger, _required(request, "location"), _required(request, "digest"))
        name = found.filename.replace("\\", "_").replace("/", "_")
        return StreamingResponse(
            found.chunks,
            media_type="application/x-tar" if found.is_directory else "application/octet-stream",
            headers={
                "content-length": str(found.size),
                "content-disposition": f"attachment; filename*=UTF-8''{url_quote(name, safe='')}",
                "content-security-policy": "sandbox",
            },
        )


class _AuditStream:
    """``/api/audit/stream``: the audit run in a thread, its progress sent as JSON lines."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def respond(self, request: Request) -> Response:
        """Start the audit the request asks for and stream its progress."""
        try:
            run, content = _param(request, "run"), _flag(request, "content", True)
        except ScalableError as exc:
            return _error(exc)
        return StreamingResponse(self._lines(run, content), media_type="application/x-ndjson")

    async def _lines(self, run: str | None, content: bool) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def put(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def work() -> None:
            last = 0.0

            def progress(phase: str, done: int, total: int) -> None:
                nonlocal last
                if stop.is_set():
                    raise _Stopped
                # The first and last report of each phase, and at most ten a second between.
                if done in (0, total) or time.monotonic() - last >= 0.1:
                    last = time.monotonic()
                    put("progress", {"phase": phase, "done": done, "total": total})

            try:
                report = self.ledger.audit(run, content=content, progress=progress)
                put("done", report.to_dict())
            except _Stopped:
                return
            except ScalableError as exc:
                put("error", {"error": error_line(exc), "status": status_of(exc)})
            except Exception as exc:  # reported to the page, never a dead stream
                _log.error("ui.audit_failed", error=repr(exc))
                put("error", {"error": f"error: the audit failed: {type(exc).__name__}", "status": 500})

        threading.Thread(target=work, name="scalable-ui-audit", daemon=True).start()
        try:
            while True:
                kind, value = await queue.get()
                if kind == "done":
                    yield _line({"event": "done", "report": value})
                    return
                yield _line({"event": kind, **value})
                if kind == "error":
                    return
        finally:
            stop.set()


class _Stopped(Exception):
    """The page that asked for an audit went away: stop hashing."""


def _line(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, default=str) + "\n").encode()


async def _page(_request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")


async def _home(_request: Request) -> Response:
    return RedirectResponse("/runs", status_code=303)


async def _no_api(request: Request) -> Response:
    return _json({"error": f"error: no endpoint {request.url.path}; see /api/info", "status": 404}, 404)


class _Headers:
    """Security headers on every response: no framing, no sniffing, a strict content policy, no caching of data."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {bytes(k).lower() for k, _v in message.get("headers", [])}
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-cache" if static else b"no-store"),
                ]
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in names)]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(ledger: Ledger, policy: AccessPolicy | None = None) -> ASGIApp:
    """Return the explorer over ``ledger`` as an ASGI app, guarded by ``policy`` (loopback, no token, by default).

    Args:
        ledger: the ledger to explore (never written to).
        policy: who may connect (see :func:`scalable.ui.access.access_policy`).
    """
    api = _Api(ledger)
    routes = [
        Route("/", _home),
        *(Route(path, _page) for path in PAGES),
        Route("/api/info", _endpoint(api.info)),
        Route("/api/runs", _endpoint(api.runs)),
        Route("/api/runs/{run_id}", _endpoint(api.run)),
        Route("/api/audit-states", _endpoint(api.audit_states)),
        Route("/api/compare", _endpoint(api.compare)),
        Route("/api/artifact", _endpoint(api.artifact)),
        Route("/api/download", _endpoint(api.download)),
        Route("/api/lineage", _endpoint(api.lineage)),
        Route("/api/audit", _endpoint(api.audit)),
        Route("/api/audit/stream", _AuditStream(ledger).respond),
        Route("/api/cookbook", _endpoint(api.cookbook)),
        Route("/api/sql", _endpoint(api.sql)),
        Route("/api/{rest:path}", _no_api),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes)
    return AccessGuard(_Headers(app), policy or AccessPolicy(loopback=True, token=None))
