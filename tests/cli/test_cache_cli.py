"""``scalable cache stats`` and ``scalable cache clear``."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from scalable import cacheable
from scalable.cache import default_cache
from tests.conftest import CliInvoker, forget_object_store_clients


@cacheable
def double(x: int) -> int:
    """Twice ``x``."""
    return 2 * x


@cacheable
def triple(x: int) -> int:
    """Three times ``x``."""
    return 3 * x


def _calls() -> None:
    for x in (1, 1, 1, 2):
        double(x)
    triple(5)


def test_stats_reports_entries_bytes_and_hit_ratio_per_function(cli: CliInvoker) -> None:
    """Stats lists each function with its entries, bytes, hits, misses and hit ratio."""
    _calls()
    result = cli("cache", "stats", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {r["function"]: r for r in json.loads(result.stdout)}
    d = rows[f"{__name__}.double"]
    assert (d["entries"], d["hits"], d["misses"], d["writes"]) == (2, 2, 2, 2)
    assert d["hit_ratio"] == 0.5
    assert d["bytes"] > 0
    t = rows[f"{__name__}.triple"]
    assert (t["entries"], t["hits"], t["misses"], t["hit_ratio"]) == (1, 0, 1, 0.0)


def test_stats_on_an_empty_cache_prints_no_rows(cli: CliInvoker, isolated: Path) -> None:
    """With an empty cache directory and no events, stats prints an empty table, not an error."""
    (isolated / ".scalable" / "cache").mkdir(parents=True)
    result = cli("cache", "stats")
    assert result.exit_code == 0
    assert "(no rows)" in result.stdout
    assert json.loads(cli("cache", "stats", "--format", "json").stdout) == []


def test_clear_one_function_keeps_the_others(cli: CliInvoker) -> None:
    """``clear --function NAME`` removes that function's entries only."""
    _calls()
    result = cli("cache", "clear", "--function", f"{__name__}.double", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"tier": "local", "removed": 2}]
    assert [r["function"] for r in default_cache().local.stats()] == [f"{__name__}.triple"]


def test_clear_everything(cli: CliInvoker, isolated: Path) -> None:
    """``clear`` with no options empties the local tier."""
    _calls()
    result = cli("cache", "clear")
    assert result.exit_code == 0
    assert "3" in result.stdout
    assert len(default_cache().local) == 0


def test_clear_remote_without_a_remote_is_bad_input(cli: CliInvoker) -> None:
    """``clear --remote`` with no SCALABLE_CACHE_REMOTE exits 2 with a one-line message."""
    result = cli("cache", "clear", "--remote")
    assert result.exit_code == 2
    assert "SCALABLE_CACHE_REMOTE" in result.stderr
    assert "Traceback" not in result.stderr


def test_clear_remote_on_an_unreachable_remote_is_one_line(cli: CliInvoker, monkeypatch: pytest.MonkeyPatch) -> None:
    """``clear --remote`` against a closed port exits 2 naming the remote, without a traceback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for name, value in {
        "AWS_ACCESS_KEY_ID": "dummy",
        "AWS_SECRET_ACCESS_KEY": "dummy",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "SCALABLE_CACHE_REMOTE": "s3://unreachable/cache/",
    }.items():
        monkeypatch.setenv(name, value)
    forget_object_store_clients()  # a client made earlier would still reach the test server
    result = cli("cache", "clear", "--remote")
    assert result.exit_code == 2
    assert "s3://unreachable/cache/" in result.stderr
    assert "Traceback" not in result.stderr


def test_clear_remote_empties_the_shared_tier(cli: CliInvoker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``clear --remote`` removes entries from the remote tier as well as the local one."""
    monkeypatch.setenv("SCALABLE_CACHE_REMOTE", str(tmp_path / "shared"))
    from scalable.ledger import bus

    bus.reset_default()
    _calls()
    result = cli("cache", "clear", "--remote", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"tier": "local", "removed": 3}, {"tier": "remote", "removed": 3}]
    remote = default_cache().remote
    assert remote is not None and remote.store.list_artifacts("v1/") == []
