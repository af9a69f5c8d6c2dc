"""The explorer's assets: pinned vendored libraries with licences, nothing fetched at run time, shipped in the wheel."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from scalable.ui.app import STATIC
from scalable.ui.cookbook import COOKBOOK
from tests.helpers import ROOT
from tools import vendor_ui_assets

VENDOR = STATIC / "vendor"


def test_the_vendored_files_are_exactly_those_of_the_lock() -> None:
    """Every vendored file is in the lock with its SHA-256; every pinned package has its licence; bundled versions check."""
    assert vendor_ui_assets.check() == []
    lock = json.loads((VENDOR / "vendor.lock.json").read_text())
    assert {(p["name"], p["version"], p["license"]) for p in lock["packages"]} == {
        (p.name, p.version, "MIT") for p in vendor_ui_assets.PACKAGES
    }
    for package in lock["packages"]:
        assert package["integrity"].startswith("sha512-") and package["tarball"].startswith(
            "https://registry.npmjs.org/"
        )
        licence = next(f for f in package["files"] if f.endswith("/LICENSE"))
        assert "Permission is hereby granted" in (VENDOR / licence).read_text()


def test_the_check_finds_a_changed_a_missing_and_an_extra_file(tmp_path: Path) -> None:
    """A byte changed, a file removed or a file added to the vendored copy is reported."""
    copy = tmp_path / "vendor"
    shutil.copytree(VENDOR, copy)
    script = copy / "cytoscape" / "cytoscape.min.js"
    script.write_bytes(script.read_bytes()[:-1] + b" ")
    (copy / "dagre" / "LICENSE").unlink()
    (copy / "cytoscape" / "extra.js").write_text("x")
    assert vendor_ui_assets.check(copy) == [
        "cytoscape/cytoscape.min.js does not match its SHA-256 in the lock",
        "dagre/LICENSE is missing",
        "cytoscape/extra.js is not in the lock",
    ]


def test_pages_load_nothing_from_elsewhere() -> None:
    """The HTML, script and style name no other origin: the explorer works offline."""
    html = (STATIC / "index.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(
        s.startswith(("/static/", "/api/", "/runs", "/compare", "/lineage", "/audit", "/sql", "data:", "#"))
        for s in sources
    )
    for name in ("app.js", "app.css", "index.html"):
        text = (STATIC / name).read_text()
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
    assert re.findall(r'<script src="([^"]+)"', html) == ["/static/app.js"]
    loaded = re.findall(r'"(/static/vendor/[^"]+\.js)"', (STATIC / "app.js").read_text())
    assert loaded == [
        "/static/vendor/cytoscape/cytoscape.min.js",
        "/static/vendor/cytoscape-dagre/cytoscape-dagre.min.js",
    ]
    assert all((STATIC / p.removeprefix("/static/")).is_file() for p in loaded)


def test_the_content_policy_allows_exactly_the_one_style_cytoscape_adds() -> None:
    """The style hash in the Content-Security-Policy is that of the rule the vendored Cytoscape.js inserts."""
    from scalable.ui import app

    bundle = (VENDOR / "cytoscape" / "cytoscape.min.js").read_text()
    assert "__________cytoscape_container" in bundle and "{ position: relative; }" in bundle
    rule = ".__________cytoscape_container { position: relative; }"
    digest = base64.b64encode(hashlib.sha256(rule.encode()).digest()).decode()
    assert f"style-src 'self' 'sha256-{digest}';" in app.CONTENT_SECURITY_POLICY


@pytest.mark.slow
def test_the_wheel_carries_the_pages_and_the_vendored_libraries(tmp_path: Path) -> None:
    """A wheel built from the checkout holds every static file and licence of the explorer."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("scalable-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {f"scalable/ui/static/{p.relative_to(STATIC)}" for p in STATIC.rglob("*") if p.is_file()}
    assert len(wanted) >= 10 and wanted <= names, sorted(wanted - names)


def test_the_sql_console_offers_the_cookbook_of_the_ledger_page() -> None:
    """docs/ledger.rst's cookbook and the console's examples are the same queries, titles and times, in order."""
    text = (ROOT / "docs" / "ledger.rst").read_text()
    block = text[text.index("SQL cookbook") : text.index("Reading the streams yourself")]
    documented = re.findall(
        r'^\s+# \d+\. (.+)\n\s+scalable ledger query "(.+?)"(?: --as-of (\S+))?$', block, re.MULTILINE
    )
    assert len(documented) == 12
    assert [(r.title, r.sql, r.as_of or "") for r in COOKBOOK] == documented
