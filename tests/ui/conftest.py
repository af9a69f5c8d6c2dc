"""The explorer's fixtures: the demo's ledger, a real ``scalable ui`` process over it, a real Chromium.

- ``demo_dir`` (session): a directory where ``examples/demo.py`` ran twice (two runs, the
  second hitting the first one's cache; ``timings.json`` differs between them).
- ``explorer_over`` starts ``scalable ui --port 0`` (the real CLI, in its own process) in a
  directory and returns an :class:`Explorer` (its URL, helpers to call it); it is stopped by
  its pid at the end of the test or module that started it.
- ``demo_explorer`` (module): the explorer over ``demo_dir``.
- ``browser`` (module): headless Chromium driven by Selenium through Debian's chromedriver,
  its path given, so nothing is downloaded. Skipped, with the reason, only where Chromium or
  its driver is not installed (``make test`` installs both as root with apt-get).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, child_env

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER_PATHS = ("/usr/bin/chromedriver",)
NOT_INSTALLED = (
    "chromium and chromium-driver are not installed here; `make test` installs them as root "
    "(apt-get install chromium chromium-driver)"
)


def clean_env(**extra: str) -> dict[str, str]:
    """A child's environment: this checkout importable, no SCALABLE_* variable of the outer shell."""
    env = {k: v for k, v in child_env().items() if not k.startswith("SCALABLE_")}
    env.update(extra)
    return env


def run_demo(directory: Path) -> str:
    """Run ``examples/demo.py`` (no explorer) in ``directory``; return what it printed."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        cwd=directory,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def cli(directory: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real ``scalable`` CLI in ``directory``."""
    proc = subprocess.run(
        [sys.executable, "-m", "scalable", *args],
        cwd=directory,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return proc


@dataclass
class Response:
    """An HTTP answer: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Explorer:
    """A running ``scalable ui`` process: where it listens and what it printed."""

    url: str
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def request(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Call the explorer; any status comes back as a :class:`Response` (no redirects followed)."""
        query = "?" + urllib.parse.urlencode(params, doseq=True) if params else ""
        req = urllib.request.Request(self.url + path + query, method=method, headers=headers or {})
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=120) as answer:
                return Response(answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())

    def json(self, path: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """GET a JSON endpoint that must answer 200."""
        answer = self.request(path, params, **kwargs)
        assert answer.status == 200, (path, params, answer.status, answer.body[:500])
        return answer.json()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def start_explorer(directory: Path, *args: str, timeout: float = 60) -> Explorer:
    """Start ``scalable ui --port 0 ARGS`` in ``directory``; return once it printed its URL.

    Raises:
        AssertionError: it exited or printed no URL in time (with what it printed).
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "scalable", "ui", "--port", "0", *args],
        cwd=directory,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line.rstrip("\n"))
        if line.startswith("scalable ui: "):
            url = line.split(" at ", 1)[1].split(" ", 1)[0].rstrip("/")
            explorer = Explorer(url, proc, seen)
            if any(a == "--token" or a.startswith("--host") for a in args):
                # The token lines follow the first one.
                for _ in range(2):
                    more = lines.get(timeout=10)
                    if more is not None:
                        seen.append(more.rstrip("\n"))
            return explorer
    stop_explorer(proc)
    raise AssertionError("scalable ui printed no URL:\n" + "\n".join(seen))


def stop_explorer(proc: subprocess.Popen[str]) -> int:
    """Stop an explorer this test session started (SIGINT, as Ctrl-C), by its pid; return its exit code."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    return int(proc.returncode)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where the demo ran twice."""
    directory = tmp_path_factory.mktemp("demo")
    run_demo(directory)
    run_demo(directory)
    return directory


@pytest.fixture(scope="module")
def demo_explorer(demo_dir: Path) -> Iterator[Explorer]:
    """``scalable ui`` serving the demo's ledger."""
    explorer = start_explorer(demo_dir)
    yield explorer
    stop_explorer(explorer.proc)


def _first(paths: tuple[str, ...], name: str) -> str | None:
    return next((p for p in paths if os.access(p, os.X_OK)), None) or shutil.which(name)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (one per module), driven through Debian's chromedriver."""
    chromium = _first(CHROMIUM_PATHS, "chromium")
    driver_path = _first(DRIVER_PATHS, "chromedriver")
    if chromium is None or driver_path is None:
        pytest.skip(NOT_INSTALLED)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
