"""Bench ``ui``: the explorer over 200,000 synthetic events, its endpoints and its pages in Chromium.

Sizes: 200,000 events of 1,000 runs (``--quick``: 50,000 of 250), written by
:mod:`tools.gen_events` and compacted before the rounds (both one-off ``setup_*_s`` params).
The explorer runs as ``scalable ui --port 0`` in its own process; the pages are drawn by
headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium).

Each round, in alternating order:

- ``runs_api_s`` and ``run_api_s``: ``GET /api/runs`` (the first page of the runs table) and
  ``GET /api/runs/RUN`` (one run: tasks, artifacts, cache lookups), over HTTP;
- ``runs_page_s`` and ``run_page_s``: the runs page and a run page in the browser, from the
  start of the navigation to the page drawn with its data (the page's own ``performance.now()``
  when it is ready); targets ``<= 1``;
- ``shell_page_s``, the baseline of the pages: the lineage page without a node, the same
  document and script drawn with no data; ``runs_page_vs_shell`` is the per-round ratio;
- ``runs_query_s``, the baseline of the endpoint: ``Ledger.query`` of what ``scalable ledger
  runs`` asks, in this process; ``runs_api_vs_query`` is the per-round ratio;
- ``lineage_page_s``: the lineage page of a node whose downstream graph at depth 40 has about
  2,000 nodes (``lineage_nodes``, ``lineage_edges`` are params), until the graph is laid out,
  drawn collapsed (``lineage_drawn_nodes``, target ``<= 300``; target ``lineage_page_s <= 10``);
- ``lineage_open_s``: a pointer click on its largest group until the graph is laid out again
  with that group open (target ``<= 3``): the page answers while it holds the whole graph.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from scalable import Ledger
from tools.bench_harness import Report, Target, interleave
from tools.gen_events import artifact_digest, generate, run_id_of

__all__ = ["TARGETS", "run"]

TARGETS = (
    Target("runs_page_s", "<=", 1.0),
    Target("run_page_s", "<=", 1.0),
    Target("lineage_drawn_nodes", "<=", 300),
    Target("lineage_page_s", "<=", 10.0),
    Target("lineage_open_s", "<=", 3.0),
)

ROOT = Path(__file__).resolve().parents[1]
#: (events, runs, (run index, artifact index) of the lineage start node, depth): the node's
#: downstream graph at that depth has about 2,000 nodes (1,958, of them 50 runs; with ``--quick``
#: 1,756, of them 52 runs).
FULL = (200_000, 1000, (60, 0), 40)
QUICK = (50_000, 250, (3, 0), 35)
_RUNS_SQL = (
    "SELECT run_id, project, status, started_at, finished_at, tasks, artifacts, bytes, events FROM runs "
    "ORDER BY started_at, run_id"
)


def _start(workdir: Path, runs_dir: Path, ledger_dir: Path) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALABLE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scalable",
            "ui",
            "--port",
            "0",
            "--runs-dir",
            str(runs_dir),
            "--ledger-dir",
            str(ledger_dir),
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("scalable ui: "):
        proc.kill()
        raise RuntimeError(f"scalable ui did not start: {line}{proc.stdout.read()}")
    return proc, line.split(" at ", 1)[1].split(" ", 1)[0]


def _browser() -> Any:
    chromium, driver = (
        shutil.which("chromium") or "/usr/bin/chromium",
        shutil.which("chromedriver") or "/usr/bin/chromedriver",
    )
    if not (os.access(chromium, os.X_OK) and os.access(driver, os.X_OK)):
        raise SystemExit("bench ui needs chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def _wait(browser: Any, script: str, timeout: float = 120) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.02).until(lambda d: d.execute_script(script))


def _page_seconds(browser: Any, url: str) -> float:
    """Load ``url``; the seconds from the start of the navigation to the page drawn with its data."""
    browser.get(url)
    ready = _wait(browser, "return document.getElementById('main').dataset.readyMs")
    if browser.execute_script("return document.getElementById('main').dataset.ready") == "error":
        raise RuntimeError(f"{url} drew an error: {browser.find_element('id', 'main').text[:300]}")
    return float(ready) / 1000


def run(quick: bool, rounds: int) -> Report:
    """Generate and compact the ledger, start the explorer and a browser, then time pages and endpoints in rounds."""
    report = Report()
    events, runs, (node_run, node_artifact), depth = QUICK if quick else FULL
    work = Path(tempfile.mkdtemp(prefix="scalable-bench-ui-"))
    proc: subprocess.Popen[str] | None = None
    browser: Any = None
    try:
        started = time.perf_counter()
        gen = generate(work / "runs", events, runs=runs, days=30)
        report.param("events", gen.events)
        report.param("runs", runs)
        report.param("setup_generate_s", time.perf_counter() - started)
        ledger = Ledger.open(work / "runs", work / "ledger")
        started = time.perf_counter()
        ledger.compact()
        report.param("setup_compact_s", time.perf_counter() - started)
        node = artifact_digest(node_run, node_artifact)
        graph = ledger.lineage(node, direction="down", depth=depth)
        report.param("lineage_nodes", len(graph.nodes))
        report.param("lineage_edges", len(graph.edges))
        proc, base = _start(work, work / "runs", work / "ledger")
        browser = _browser()
        one_run = run_id_of(runs // 2)
        lineage_url = base + "lineage?" + urllib.parse.urlencode({"node": node, "direction": "down", "depth": depth})
        drawn: list[float] = []
        opened: list[float] = []

        def query(_index: int) -> None:
            ledger.query(_RUNS_SQL)

        def get(path: str) -> None:
            with urllib.request.urlopen(base + path, timeout=120) as answer:
                answer.read()

        def lineage_page(_index: int) -> dict[str, float]:
            browser.get(lineage_url)
            ready = float(
                _wait(
                    browser,
                    "return document.getElementById('graph')?.dataset.ready === '1' && document.getElementById('graph').dataset.readyMs",
                )
            )
            drawn.append(float(browser.execute_script("return window.scalableGraph.nodes().length")))
            return {"seconds": ready / 1000}

        def lineage_open(_index: int) -> dict[str, float]:
            from selenium.webdriver.common.action_chains import ActionChains

            group = browser.execute_script(
                "const g = window.scalableGraph.nodes('.group').sort((a, b) => b.data('count') - a.data('count'))[0];"
                "const p = g.renderedPosition(); const r = document.getElementById('graph').getBoundingClientRect();"
                "document.getElementById('graph').scrollIntoView({block: 'center'}); const r2 = document.getElementById('graph').getBoundingClientRect();"
                "return [g.id(), p.x - r2.width / 2, p.y - r2.height / 2, r.top];"
            )
            if group is None:
                raise RuntimeError("the lineage page drew no group to open")
            before = float(browser.execute_script("return performance.now()"))
            container = browser.find_element("id", "graph")
            ActionChains(browser).move_to_element_with_offset(container, int(group[1]), int(group[2])).click().perform()
            ready = float(
                _wait(
                    browser,
                    f"const g = document.getElementById('graph'); return g.dataset.ready === '1' && Number(g.dataset.readyMs) > {before} && g.dataset.readyMs",
                )
            )
            if browser.execute_script("return window.scalableGraph.getElementById(arguments[0]).length", group[0]):
                raise RuntimeError("the click did not open the group")
            opened.append(float(browser.execute_script("return window.scalableGraph.nodes().length")))
            return {"seconds": (ready - before) / 1000}

        samples = interleave(
            {
                "runs_api": lambda _i: get("api/runs"),
                "run_api": lambda _i: get(f"api/runs/{one_run}"),
                "runs_query": query,
                "runs_page": lambda _i: {"seconds": _page_seconds(browser, base + "runs")},
                "run_page": lambda _i: {"seconds": _page_seconds(browser, f"{base}runs/{one_run}")},
                "shell_page": lambda _i: {"seconds": _page_seconds(browser, base + "lineage")},
                # The click needs the graph the page before it drew: one case, two timings.
                "lineage": lambda i: {
                    "page_s": lineage_page(i)["seconds"],
                    "seconds": lineage_open(i)["seconds"],
                },
            },
            rounds=rounds,
            warmup=1,
        )
        report.figure("runs_api_s", samples["runs_api"], "lower")
        report.figure("run_api_s", samples["run_api"], "lower")
        report.figure("runs_query_s", samples["runs_query"], "lower")
        report.ratio("runs_api_vs_query", samples["runs_api"], samples["runs_query"], "lower")
        report.figure("runs_page_s", samples["runs_page"], "lower")
        report.figure("run_page_s", samples["run_page"], "lower")
        report.figure("shell_page_s", samples["shell_page"], "lower")
        report.ratio("runs_page_vs_shell", samples["runs_page"], samples["shell_page"], "lower")
        report.figure("lineage_page_s", samples["lineage", "page_s"], "lower")
        report.figure("lineage_open_s", samples["lineage"], "lower")
        report.figure("lineage_drawn_nodes", drawn[-rounds:], "lower")
        report.param("lineage_nodes_after_open", opened[-1])
    finally:
        if browser is not None:
            browser.quit()
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        shutil.rmtree(work, ignore_errors=True)
    return report
