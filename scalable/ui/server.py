"""Serving the explorer: bind the socket, decide the access rules, say where to go, run uvicorn.

The socket is bound here, before uvicorn starts, so ``--port 0`` (any free port) prints the
real URL and a port in use is one clear error rather than a log line.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from scalable.errors import ConfigError
from scalable.ledger.log import Ledger
from scalable.ui.access import AccessPolicy, access_policy

__all__ = ["Listening", "listen", "running", "serve"]


@dataclass
class Listening:
    """A bound socket, the access rules for it, and the URLs to print.

    Attributes:
        sock: the listening socket (handed to uvicorn).
        policy: who may connect.
        url: the explorer's address.
        login_url: the one-time URL that logs a browser in (``None`` without a token).
    """

    sock: socket.socket
    policy: AccessPolicy
    url: str
    login_url: str | None

    def banner(self, ledger: Ledger) -> list[str]:
        """The lines printed at start: where the explorer is, what it reads, how to log in."""
        lines = [f"scalable ui: the ledger of {ledger.runs_dir} at {self.url} (read-only; Ctrl-C stops it)"]
        if self.policy.token is not None:
            if self.policy.generated:
                lines.append(
                    f"access token (generated; scripts send 'Authorization: Bearer TOKEN'): {self.policy.token}"
                )
            else:
                lines.append("access token: the one given with --token (scripts send 'Authorization: Bearer TOKEN')")
            lines.append(f"open this URL once to log a browser in: {self.login_url}")
        return lines


def _url_host(host: str, port: int) -> str:
    if host in ("", "0.0.0.0", "::"):  # a wildcard is not an address to browse to
        host = socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(host: str, port: int, token: str | None) -> Listening:
    """Bind ``host:port`` (port 0: any free one) and decide the access rules.

    Raises:
        ConfigError: the address cannot be bound (in use, not this machine's, no permission),
            or the token is too short.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host!r}: {exc.strerror or exc}; give an address of this machine"
        ) from None
    # IPv4 first: "localhost" often resolves to ::1 first, where browsers may not look.
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {_url_host(host, port)}: {exc.strerror or exc}; choose another --port or --host"
        ) from None
    sock.set_inheritable(True)
    bound = int(sock.getsockname()[1])
    try:
        policy = access_policy(host, bound, token)
    except ConfigError:
        sock.close()
        raise
    base = f"http://{_url_host(host, bound)}"
    login = f"{base}/login?code={policy.login_code()}" if policy.token is not None else None
    return Listening(sock, policy, base + "/", login)


def _config(app: Any) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=3,
    )


@contextlib.contextmanager
def running(
    ledger: Ledger,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    token: str | None = None,
    policy: AccessPolicy | None = None,
) -> Iterator[Listening]:
    """Serve the explorer over ``ledger`` in a background thread for the ``with`` block (notebooks, scripts).

    Yields the :class:`Listening` address (``.url``, and ``.policy.token`` when one is needed);
    the server stops when the block ends.

    Args:
        ledger: the ledger to explore.
        host: the address to listen on.
        port: the port (0: any free one).
        token: the secret requests must carry (see :func:`~scalable.ui.access.access_policy`).
        policy: access rules to apply instead of those ``host`` and ``token`` decide (an
            explorer reached through a proxy on this machine may require a token, say).

    Raises:
        ConfigError: the address cannot be bound, or the token is too short.
    """
    import uvicorn

    from scalable.ui.app import create_app

    bound = listen(host, port, token)
    if policy is not None:
        policy.port = bound.policy.port
        bound.policy = policy
        bound.login_url = f"{bound.url}login?code={policy.login_code()}" if policy.token is not None else None
    server = uvicorn.Server(_config(create_app(ledger, bound.policy)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [bound.sock]}, name="scalable-ui", daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            time.sleep(0.01)
        yield bound
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        bound.sock.close()


def serve(
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    runs_dir: str | os.PathLike[str] | None = None,
    ledger_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    echo: Callable[[str], Any] = print,
) -> None:
    """Serve the explorer over the ledger until interrupted (Ctrl-C or SIGTERM).

    Args:
        host: the address to listen on; a non-loopback one requires a token.
        port: the port (0: any free one; the URL printed says which).
        runs_dir: the runs directory (default: from settings); must exist if given.
        ledger_dir: the compacted ledger directory (default: from settings).
        token: the secret requests must carry; generated and printed when off loopback and omitted.
        echo: where the start lines go.

    Raises:
        LedgerNotFoundError: a directory given explicitly does not exist.
        ConfigError: the address cannot be bound, or the token is too short.
    """
    import uvicorn

    from scalable.ui.app import create_app

    bound = listen(host, port, token)
    try:
        ledger = Ledger.open(runs_dir, ledger_dir, must_exist=True)
    except BaseException:
        bound.sock.close()
        raise
    try:
        config = _config(create_app(ledger, bound.policy))
        for line in bound.banner(ledger):
            echo(line)
        # uvicorn stops gracefully on Ctrl-C, then raises it again.
        with contextlib.suppress(KeyboardInterrupt):
            uvicorn.Server(config).run(sockets=[bound.sock])
        echo("scalable ui: stopped")
    finally:
        bound.sock.close()
        ledger.close()
