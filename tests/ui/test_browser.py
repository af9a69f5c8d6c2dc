"""The explorer in a real browser (headless Chromium) over the demo's ledger, checked against the CLI."""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.ui.conftest import Explorer, cli, start_explorer, stop_explorer

pytestmark = pytest.mark.slow


def open_page(browser: Any, url: str, *, timeout: float = 60) -> str:
    """Load ``url`` and wait until the page says it is drawn; return what it drew (``data-ready``)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, timeout).until(lambda d: d.find_element(By.ID, "main").get_attribute("data-ready"))
    return str(browser.find_element(By.ID, "main").get_attribute("data-ready"))


def wait_for(browser: Any, condition: Callable[[Any], Any], timeout: float = 60) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(condition)


def graph_ready(browser: Any) -> None:
    wait_for(browser, lambda d: d.execute_script("return document.getElementById('graph')?.dataset.ready === '1'"))


def demo_runs(demo_dir: Path) -> list[dict[str, Any]]:
    """``scalable ledger runs --format json`` of the demo, oldest first."""
    return json.loads(cli(demo_dir, "ledger", "runs", "--format", "json").stdout)


def summary_digest(demo_dir: Path) -> str:
    rows = json.loads(
        cli(
            demo_dir,
            "ledger",
            "query",
            "SELECT DISTINCT digest FROM artifacts WHERE artifact_name = 'summary.json' AND op = 'recorded'",
            "--format",
            "json",
        ).stdout
    )
    assert len(rows) == 1
    return str(rows[0]["digest"])


def graph_elements(browser: Any) -> tuple[list[str], list[tuple[str, str, str, str]]]:
    """The ids of the nodes the page's graph holds, and its edges as (src, dst, relation, run_id)."""
    nodes = browser.execute_script("return window.scalableGraph.nodes().map(n => n.id())")
    edges = browser.execute_script(
        "return window.scalableGraph.edges().map(e => [e.data('source'), e.data('target'), e.data('relation'), e.data('run_id') || ''])"
    )
    return sorted(nodes), sorted(tuple(e) for e in edges)


def cli_graph(demo_dir: Path, *args: str) -> tuple[list[str], list[tuple[str, str, str, str]]]:
    """The nodes of `ledger lineage --format json`, and its walked edges and the context edges between its nodes."""
    doc = json.loads(cli(demo_dir, "ledger", "lineage", *args, "--format", "json").stdout)
    nodes = sorted(n["id"] for n in doc["nodes"])
    walked = {(e["src"], e["dst"], e["relation"], e["run_id"], e["task_id"]) for e in doc["edges"]}
    around = [
        e
        for e in doc["context"]
        if e["src"] in nodes
        and e["dst"] in nodes
        and (e["src"], e["dst"], e["relation"], e["run_id"], e["task_id"]) not in walked
    ]
    edges = sorted((e["src"], e["dst"], e["relation"], e.get("run_id") or "") for e in doc["edges"] + around)
    return nodes, edges


def test_the_demo_ledger_loads_and_the_runs_table_lists_exactly_the_runs_of_ledger_runs(
    demo_dir: Path, demo_explorer: Explorer, browser: Any
) -> None:
    """The runs page shows each run `scalable ledger runs` lists, once, with its project, status and counts; each audits ok."""
    from selenium.webdriver.common.by import By

    expected = demo_runs(demo_dir)
    assert len(expected) == 2
    assert open_page(browser, demo_explorer.url + "/runs") == "runs"
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr")
    shown = [r.get_attribute("data-run") for r in rows]
    assert sorted(shown) == sorted(r["run_id"] for r in expected) and len(set(shown)) == len(shown)
    by_id = {r["run_id"]: r for r in expected}
    for row in rows:
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        run = by_id[row.get_attribute("data-run")]
        assert cells[0] == run["run_id"] and cells[1] == run["project"] == "demo" and cells[2] == run["status"]
        assert (cells[5], cells[6]) == (str(run["tasks"]), str(run["artifacts"]))
    assert "of 2 matching run(s); 2 run(s) in the ledger" in browser.find_element(By.ID, "runs-summary").text
    wait_for(browser, lambda d: d.find_element(By.ID, "main").get_attribute("data-audited") == "1")
    audits = [
        r.find_elements(By.TAG_NAME, "td")[-1].text
        for r in browser.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr")
    ]
    assert audits == ["ok", "ok"]
    # A filter narrows the table to what it names, in the URL.
    first = expected[0]["run_id"]
    open_page(browser, demo_explorer.url + "/runs?" + urllib.parse.urlencode({"q": first[-8:]}))
    assert [r.get_attribute("data-run") for r in browser.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr")] == [
        first
    ]


def test_the_lineage_graph_of_the_summary_has_exactly_the_nodes_and_edges_of_ledger_lineage(
    demo_dir: Path, demo_explorer: Explorer, browser: Any
) -> None:
    """The graph drawn for the demo's summary holds the nodes and edges `ledger lineage --format json` gives, both ways too."""
    digest = summary_digest(demo_dir)
    open_page(browser, demo_explorer.url + "/lineage?" + urllib.parse.urlencode({"node": digest}))
    graph_ready(browser)
    nodes, edges = graph_elements(browser)
    want_nodes, want_edges = cli_graph(demo_dir, digest)
    assert nodes == want_nodes and len(nodes) > 3
    assert edges == want_edges
    assert browser.execute_script(f"return window.scalableGraph.getElementById('{digest}').hasClass('root')")
    open_page(
        browser,
        demo_explorer.url + "/lineage?" + urllib.parse.urlencode({"node": digest, "direction": "both", "depth": 1}),
    )
    graph_ready(browser)
    assert graph_elements(browser) == cli_graph(demo_dir, digest, "--both", "--depth", "1")


def click_node(browser: Any, node_id: str) -> None:
    """Click the graph where the node is drawn (a real pointer click on the canvas)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    container = browser.find_element(By.ID, "graph")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", container)
    x, y, width, height = browser.execute_script(
        "const n = window.scalableGraph.getElementById(arguments[0]); const p = n.renderedPosition();"
        "const r = document.getElementById('graph').getBoundingClientRect(); return [p.x, p.y, r.width, r.height];",
        node_id,
    )
    ActionChains(browser).move_to_element_with_offset(
        container, int(x - width / 2), int(y - height / 2)
    ).click().perform()


def test_clicking_a_node_opens_it_or_recentres_the_graph_on_it(
    demo_dir: Path, demo_explorer: Explorer, browser: Any
) -> None:
    """A click on an artifact opens its version page, on a run its run page; in re-centre mode the graph starts there."""
    digest = summary_digest(demo_dir)
    nodes, edges = cli_graph(demo_dir, digest)
    table = next(src for src, _dst, relation, _run in edges if relation == "derived_from")
    run = demo_runs(demo_dir)[0]["run_id"]
    assert run in nodes
    page = demo_explorer.url + "/lineage?" + urllib.parse.urlencode({"node": digest})
    open_page(browser, page)
    graph_ready(browser)
    click_node(browser, table)
    wait_for(browser, lambda d: "/artifact?" in d.current_url)
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(browser.current_url).query) == {"digest": [table]}
    assert open_page(browser, browser.current_url) == "artifact"
    open_page(browser, page)
    graph_ready(browser)
    click_node(browser, run)
    wait_for(browser, lambda d: d.current_url.endswith(f"/runs/{run}"))
    assert open_page(browser, browser.current_url) == "run"
    open_page(browser, page + "&click=centre")
    graph_ready(browser)
    click_node(browser, table)
    wait_for(browser, lambda d: f"node={table}" in d.current_url)
    open_page(browser, browser.current_url)
    graph_ready(browser)
    assert browser.execute_script(f"return window.scalableGraph.getElementById('{table}').hasClass('root')")


def test_the_compare_page_of_two_demo_runs_shows_the_changed_artifact(
    demo_dir: Path, demo_explorer: Explorer, browser: Any
) -> None:
    """From a run's "Compare with…", the comparison lists timings.json as changed (as `ledger diff` does) and the rest the same."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    first, second = (r["run_id"] for r in demo_runs(demo_dir))
    open_page(browser, f"{demo_explorer.url}/runs/{first}")
    wait_for(browser, lambda d: d.find_element(By.ID, "main").get_attribute("data-compare-ready") == "1")
    Select(browser.find_element(By.ID, "compare-with")).select_by_value(second)
    browser.find_element(By.ID, "compare-button").click()
    wait_for(browser, lambda d: d.current_url.endswith(f"/compare/{first}/{second}"))
    assert open_page(browser, browser.current_url) == "compare"
    rows = browser.find_elements(By.CSS_SELECTOR, "#compare-artifacts tbody tr")
    statuses = {
        r.get_attribute("data-name") + "@" + r.find_elements(By.TAG_NAME, "td")[2].text: r.get_attribute("data-status")
        for r in rows
    }
    changed = [key for key, status in statuses.items() if status == "changed"]
    assert len(changed) == 1 and changed[0].startswith("timings.json@")
    assert set(statuses.values()) == {"changed", "same"}
    assert "The runs differ: 1 artifact(s) changed" in browser.find_element(By.ID, "verdict").text
    diff = cli(demo_dir, "ledger", "diff", first, second, "--format", "json")
    assert diff.returncode == 1
    cli_changed = [r["name"] for r in json.loads(diff.stdout) if r["status"] == "changed"]
    assert cli_changed == ["timings.json"]


REFUSED = (
    "DELETE FROM events",
    "COPY (SELECT * FROM events) TO '/tmp/scalable-ui-copy.csv'",
    "ATTACH '/tmp/scalable-ui.db' AS other",
    "CREATE TABLE t AS SELECT 1",
)


@pytest.mark.parametrize("statement", REFUSED)
def test_a_refused_sql_statement_shows_the_refusal_as_the_cli_shows_it(
    statement: str, demo_dir: Path, demo_explorer: Explorer, browser: Any
) -> None:
    """Typed into the console and run, a writing statement shows the one line `scalable ledger query` prints on stderr."""
    from selenium.webdriver.common.by import By

    refusal = cli(demo_dir, "ledger", "query", statement, check=False)
    assert refusal.returncode == 2
    open_page(browser, demo_explorer.url + "/sql")
    box = browser.find_element(By.ID, "sql")
    box.clear()
    box.send_keys(statement)
    browser.find_element(By.ID, "run-sql").click()
    wait_for(browser, lambda d: "q=" in d.current_url)
    open_page(browser, browser.current_url)
    wait_for(browser, lambda d: d.find_elements(By.ID, "sql-error"))
    assert browser.find_element(By.ID, "sql-error").text == refusal.stderr.strip()
    assert not Path("/tmp/scalable-ui-copy.csv").exists() and not Path("/tmp/scalable-ui.db").exists()


def test_a_query_shows_its_rows_and_downloads_them_as_the_cli_renders_them(
    demo_dir: Path, demo_explorer: Explorer, browser: Any
) -> None:
    """A cookbook query run from the console shows the rows; its CSV and JSON downloads equal the CLI's output."""
    from selenium.webdriver.common.by import By

    open_page(browser, demo_explorer.url + "/sql")
    browser.find_element(By.LINK_TEXT, "What did each run produce, and how much?").click()
    wait_for(browser, lambda d: "q=" in d.current_url)
    open_page(browser, browser.current_url)
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#sql-table tbody tr"))
    sql = urllib.parse.parse_qs(urllib.parse.urlsplit(browser.current_url).query)["q"][0]
    rows = browser.find_elements(By.CSS_SELECTOR, "#sql-table tbody tr")
    assert len(rows) == 2 and browser.find_element(By.ID, "sql-count").text.startswith("2 row(s).")
    downloads = {}
    for fmt in ("csv", "json"):
        link = browser.find_element(By.LINK_TEXT, f"Download {fmt.upper()}").get_attribute("href")
        answer = demo_explorer.request(urllib.parse.urlsplit(link).path + "?" + urllib.parse.urlsplit(link).query)
        assert answer.status == 200 and "attachment" in answer.headers["content-disposition"]
        downloads[fmt] = (answer.body.decode(), cli(demo_dir, "ledger", "query", sql, "--format", fmt).stdout)
    # The query has no ORDER BY: the same rows, in whatever order each run gave them.
    (csv_ui, csv_cli), (json_ui, json_cli) = downloads["csv"], downloads["json"]
    assert csv_ui.splitlines()[0] == csv_cli.splitlines()[0] == "run_id,artifacts,bytes"
    assert sorted(csv_ui.splitlines()[1:]) == sorted(csv_cli.splitlines()[1:]) and len(csv_ui.splitlines()) == 3
    key = lambda row: row["run_id"]  # noqa: E731
    assert sorted(json.loads(json_ui), key=key) == sorted(json.loads(json_cli), key=key)


def test_the_content_audit_runs_on_request_with_progress(demo_explorer: Explorer, browser: Any) -> None:
    """The audit page shows the structural audit; the button re-hashes the stored bytes with a progress bar, then reports."""
    from selenium.webdriver.common.by import By

    open_page(browser, demo_explorer.url + "/audit")
    wait_for(browser, lambda d: d.find_elements(By.ID, "structure-report"))
    assert browser.find_element(By.ID, "structure-report").get_attribute("data-ok") == "1"
    assert "2 run(s)" in browser.find_element(By.ID, "structure-report").text
    browser.find_element(By.ID, "content-audit").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "content-progress") or d.find_elements(By.ID, "audit-report"))
    wait_for(browser, lambda d: d.find_elements(By.ID, "audit-report"))
    report = browser.find_element(By.ID, "audit-report")
    assert report.get_attribute("data-ok") == "1"
    assert "10 artifact(s) checked" in report.text


PAGES = ("runs", "run", "compare", "artifact-location", "artifact-version", "lineage", "audit", "sql")


def page_urls(demo_dir: Path, base: str) -> dict[str, str]:
    first, second = (r["run_id"] for r in demo_runs(demo_dir))
    digest = summary_digest(demo_dir)
    location = (demo_dir / "demo-output" / "timings.json").resolve().as_uri()
    return {
        "runs": f"{base}/runs",
        "run": f"{base}/runs/{first}",
        "compare": f"{base}/compare/{first}/{second}",
        "artifact-location": f"{base}/artifact?" + urllib.parse.urlencode({"location": location}),
        "artifact-version": f"{base}/artifact?" + urllib.parse.urlencode({"digest": digest}),
        "lineage": f"{base}/lineage?" + urllib.parse.urlencode({"node": digest}),
        "audit": f"{base}/audit",
        "sql": f"{base}/sql?" + urllib.parse.urlencode({"q": "SELECT run_id, project, status, artifacts FROM runs"}),
    }


def test_every_page_renders_and_is_saved_as_a_screenshot(
    demo_dir: Path, demo_explorer: Explorer, browser: Any, tmp_path: Path
) -> None:
    """Each page draws without a script error and a PNG of it is saved under the test's directory."""
    urls = page_urls(demo_dir, demo_explorer.url)
    assert tuple(urls) == PAGES
    browser.get_log("browser")  # what earlier tests logged
    for name, url in urls.items():
        drawn = open_page(browser, url)
        assert drawn not in ("error",), name
        if name == "lineage":
            graph_ready(browser)
        time.sleep(0.3)  # the last paint
        path = tmp_path / f"{name}.png"
        assert browser.save_screenshot(str(path))
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    print(f"screenshots in {tmp_path}")


def file_digests(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under ``directory`` (relative path -> digest)."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_a_full_crawl_of_every_page_and_endpoint_writes_nothing(
    demo_dir: Path, demo_explorer: Explorer, browser: Any
) -> None:
    """Every file of the ledger, the stores, the cache and the outputs has the same SHA-256 after the explorer was crawled."""
    from selenium.webdriver.common.by import By

    before = file_digests(demo_dir)
    assert any(k.startswith(".scalable/runs/") for k in before) and any(
        k.startswith(".scalable/cache/") for k in before
    )
    assert any(k.startswith(".scalable/ledger/") for k in before) and any(
        k.startswith(".scalable/artifacts/") for k in before
    )
    for url in page_urls(demo_dir, demo_explorer.url).values():
        open_page(browser, url)
    open_page(browser, demo_explorer.url + "/audit")
    browser.find_element(By.ID, "content-audit").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "audit-report"))
    first, second = (r["run_id"] for r in demo_runs(demo_dir))
    api = demo_explorer
    artifacts = api.json(
        "/api/sql", {"q": "SELECT DISTINCT location, digest FROM artifacts WHERE op IN ('put', 'recorded')"}
    )["rows"]
    assert len(artifacts) >= 8
    superseded = 0
    for location, digest in artifacts:
        current = api.json("/api/artifact", {"location": location})["current"]
        download = api.request("/api/download", {"location": location, "digest": digest})
        # The first run's timings.json was overwritten by the second: that version is refused.
        assert download.status == (200 if digest == current else 409), (location, download.body[:300])
        superseded += digest != current
        api.json("/api/artifact", {"digest": digest})
        api.json("/api/lineage", {"node": digest, "direction": "both"})
    for run in (first, second):
        api.json(f"/api/runs/{run}")
        api.json("/api/lineage", {"node": run, "direction": "down"})
        api.json("/api/audit", {"run": run, "content": 1})
    api.json("/api/runs", {"sort": "bytes", "order": "asc", "q": "demo"})
    api.json("/api/audit-states", {"run": [first, second]})
    api.json("/api/compare", {"a": first, "b": second})
    api.json("/api/info")
    for recipe in api.json("/api/cookbook"):
        for fmt in (None, "csv", "json", "jsonl"):
            params = {"q": recipe["sql"], "as_of": recipe["as_of"], "format": fmt}
            assert api.request("/api/sql", {k: v for k, v in params.items() if v}).status == 200
    stream = api.request("/api/audit/stream", {"content": 1})
    assert json.loads(stream.body.splitlines()[-1])["event"] == "done"
    for statement in REFUSED:
        assert api.request("/api/sql", {"q": statement}).status == 403
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert api.request("/api/runs", method=method).status == 405
    assert superseded == 1
    after = file_digests(demo_dir)
    assert after == before


def test_a_token_is_needed_and_the_one_time_login_url_sets_the_cookie_once(demo_dir: Path, browser: Any) -> None:
    """With --token, a browser without the cookie is refused; the printed login URL logs it in once; the cookie then works."""
    from selenium.webdriver.common.by import By

    explorer = start_explorer(demo_dir, "--token", "a-long-enough-test-token")
    try:
        login = next(line.rsplit(" ", 1)[1] for line in explorer.lines if "/login?code=" in line)
        browser.delete_all_cookies()
        browser.get(explorer.url + "/runs")
        assert "needs its access token" in browser.find_element(By.TAG_NAME, "body").text
        assert open_page(browser, login) == "runs"
        assert browser.current_url == explorer.url + "/runs"
        assert len(browser.find_elements(By.CSS_SELECTOR, "#runs-table tbody tr")) == 2
        cookie = browser.get_cookie(f"scalable_ui_{urllib.parse.urlsplit(explorer.url).port}")
        assert cookie is not None and cookie["httpOnly"] and cookie["value"] != "a-long-enough-test-token"
        browser.delete_all_cookies()
        browser.get(login)
        assert "used already" in browser.find_element(By.TAG_NAME, "body").text
        assert explorer.request("/api/runs").status == 401
        ok = explorer.request("/api/runs", headers={"Authorization": "Bearer a-long-enough-test-token"})
        assert ok.status == 200 and len(ok.json()["runs"]) == 2
    finally:
        assert stop_explorer(explorer.proc) == 0
    assert explorer.lines[0].startswith("scalable ui: the ledger of ")
    assert explorer.lines[1] == "access token: the one given with --token (scripts send 'Authorization: Bearer TOKEN')"
    assert "a-long-enough-test-token" not in "\n".join(explorer.lines)


def test_a_graph_of_hundreds_of_nodes_starts_collapsed_and_a_click_opens_a_group(tmp_path: Path, browser: Any) -> None:
    """Over 300 nodes, the page draws groups that stand for every node; clicking one draws its members instead."""
    from tools.gen_events import artifact_digest, generate

    generate(tmp_path / ".scalable" / "runs", 20_000, runs=100, days=30)
    node = artifact_digest(5, 0)
    nodes, _edges = cli_graph(tmp_path, node, "--down", "--depth", "10")
    assert 300 < len(nodes) < 1000
    explorer = start_explorer(tmp_path)
    try:
        open_page(
            browser,
            explorer.url + "/lineage?" + urllib.parse.urlencode({"node": node, "direction": "down", "depth": 10}),
        )
        graph_ready(browser)
        count = "return window.scalableGraph.nodes().length"
        represented = "return window.scalableGraph.nodes().reduce((sum, n) => sum + (n.hasClass('group') ? n.data('count') : 1), 0)"
        drawn = browser.execute_script(count)
        groups = browser.execute_script("return window.scalableGraph.nodes('.group').length")
        assert drawn <= 300 and groups > 0
        assert browser.execute_script(represented) == len(nodes)
        assert (
            f"{len(nodes)} nodes are too many to draw one by one" in browser.find_element("id", "group-controls").text
        )
        group = browser.execute_script(
            "return window.scalableGraph.nodes('.group').sort((a, b) => b.data('count') - a.data('count'))[0].id()"
        )
        browser.execute_script("document.getElementById('graph').dataset.ready = ''")
        click_node(browser, group)
        graph_ready(browser)
        assert browser.execute_script(f"return window.scalableGraph.getElementById('{group}').length") == 0
        assert browser.execute_script(count) > drawn
        assert browser.execute_script(represented) == len(nodes)
    finally:
        stop_explorer(explorer.proc)


def test_the_audit_page_lists_each_problem_with_its_file_and_line(demo_dir: Path, tmp_path: Path, browser: Any) -> None:
    """An edited line of a copy of the demo's ledger shows on the audit page as its stream's file:line, as the CLI reports it."""
    import shutil

    from selenium.webdriver.common.by import By

    copy = tmp_path / "copy"
    shutil.copytree(demo_dir, copy)
    run = demo_runs(copy)[0]["run_id"]
    stream = copy / ".scalable" / "runs" / run / "artifacts.jsonl"
    lines = stream.read_bytes().splitlines(keepends=True)
    assert b'"task_name":"make_table"' in lines[1]
    lines[1] = lines[1].replace(b'"task_name":"make_table"', b'"task_name":"make_tables"', 1)
    stream.write_bytes(b"".join(lines))
    report = json.loads(cli(copy, "ledger", "audit", "--no-content", "--format", "json").stdout)
    assert not report["ok"]
    wheres = sorted(p["where"] for p in report["problems"])
    explorer = start_explorer(copy)
    try:
        open_page(browser, explorer.url + "/audit")
        wait_for(browser, lambda d: d.find_elements(By.ID, "structure-report"))
        section = browser.find_element(By.ID, "structure-report")
        assert section.get_attribute("data-ok") == "0"
        rows = browser.find_elements(By.CSS_SELECTOR, "#audit-problems tbody tr")
        shown = sorted(r.find_elements(By.TAG_NAME, "td")[1].text for r in rows)
        assert shown == wheres and any(w.startswith(f"{stream}:") for w in shown)
        assert f"FAILED: {len(wheres)} problem(s)" in section.text
    finally:
        stop_explorer(explorer.proc)
