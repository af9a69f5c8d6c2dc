"""Screenshots of the explorer's pages for docs/ui.rst: the demo run twice, each page in headless Chromium.

Usage: ``python tools/ui_screenshots.py [DIR]`` (default ``docs/images``). Needs Debian's
``chromium`` and ``chromium-driver`` (``make test`` installs them as root).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scalable import Ledger
from scalable.ui import running

__all__ = ["main", "pages"]

ROOT = Path(__file__).resolve().parents[1]


def pages(base: str, workdir: Path) -> dict[str, str]:
    """Name -> URL of every page worth a picture, over the demo's ledger."""
    runs = json.load(urllib.request.urlopen(base + "api/runs?sort=started_at&order=asc"))["runs"]
    first, second = runs[0]["run_id"], runs[1]["run_id"]
    sql = "SELECT DISTINCT digest FROM artifacts WHERE artifact_name = 'summary.json' AND op = 'recorded'"
    digest = json.load(urllib.request.urlopen(base + "api/sql?" + urllib.parse.urlencode({"q": sql})))["rows"][0][0]
    timings = (workdir / "demo-output" / "timings.json").resolve().as_uri()
    return {
        "ui-runs": base + "runs",
        "ui-run": base + f"runs/{first}",
        "ui-compare": base + f"compare/{first}/{second}",
        "ui-artifact": base + "artifact?" + urllib.parse.urlencode({"location": timings}),
        "ui-lineage": base + "lineage?" + urllib.parse.urlencode({"node": digest}),
        "ui-audit": base + "audit",
        "ui-sql": base + "sql?" + urllib.parse.urlencode({"q": "DELETE FROM events"}),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the demo twice in a temporary directory, serve it, save one PNG per page into DIR."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("dir", nargs="?", default=str(ROOT / "docs" / "images"))
    args = parser.parse_args(argv)
    out = Path(args.dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory(prefix="scalable-shots-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCALABLE_")}
        env["PYTHONPATH"] = str(ROOT)
        for _ in range(2):
            subprocess.run(
                [sys.executable, str(ROOT / "examples" / "demo.py")], cwd=work, env=env, check=True, capture_output=True
            )
        ledger = Ledger.open(work / ".scalable" / "runs", work / ".scalable" / "ledger")
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            with running(ledger) as bound:
                for name, url in pages(bound.url, work).items():
                    driver.get(url)
                    WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "main").get_attribute("data-ready"))
                    if name == "ui-lineage":
                        WebDriverWait(driver, 60).until(
                            lambda d: d.execute_script("return document.getElementById('graph').dataset.ready === '1'")
                        )
                    time.sleep(0.5)
                    driver.save_screenshot(str(out / f"{name}.png"))
                    print(out / f"{name}.png")
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
