"""Logging: the library configures nothing; the CLI configures, and secrets never reach a line."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import child_env, run_python


def test_a_host_applications_structlog_configuration_is_untouched(isolated: Path) -> None:
    """A host configures structlog with one processor, then imports scalable and runs a session,
    ledger appends and cached calls: its configuration is the same, and scalable's lines went through it."""
    proc = run_python(
        """
        import json
        from pathlib import Path

        import structlog

        seen = []

        def keep(logger, method, event_dict):
            seen.append(dict(event_dict))
            raise structlog.DropEvent

        structlog.configure(processors=[keep])
        before = structlog.get_config()

        import scalable
        from scalable import ScalableSession, cacheable

        @cacheable
        def square(n):
            return n * n

        @cacheable
        def closure(n):
            return lambda: n  # cannot be pickled: the cache logs an error and returns it

        Path("out.txt").write_text("x")
        with ScalableSession() as session:
            session.record_artifact("out.txt", kind="result", metadata={"token": "abc123"})
            session.put("out.txt")
            assert [square(3), square(3)] == [9, 9]
            assert closure(1)() == 1
            session.ledger.append({"event_type": "artifact", "op": "recorded", "artifact_name": "x.txt"})

        after = structlog.get_config()
        print(json.dumps({
            "same": after == before,
            "processors": [p.__name__ for p in after["processors"]],
            "configured": structlog.is_configured(),
            "events": [e["event"] for e in seen],
        }))
        """,
        cwd=isolated,
    )
    out = json.loads(proc.stdout)
    assert out["same"] is True
    assert out["processors"] == ["keep"]
    assert "cache.value_not_cached" in out["events"]
    assert proc.stderr == ""


def test_without_a_configuration_lines_go_to_stderr_masked_and_nothing_is_configured(isolated: Path) -> None:
    """With structlog unconfigured, scalable's lines are rendered on stderr with secrets masked, stdout stays clean."""
    proc = run_python(
        """
        import structlog

        from scalable.logs import get_logger

        get_logger("scalable.cache").warning(
            "cache.remote_unavailable", remote="s3://AKIAEXAMPLE:hunter2@bucket/cache/", token="abc123",
            error="403 for ...?X-Amz-Signature=deadbeef",
        )
        print(structlog.is_configured())
        """,
        cwd=isolated,
    )
    assert proc.stdout == "False\n"
    assert "cache.remote_unavailable" in proc.stderr and "warning" in proc.stderr
    for secret in ("hunter2", "abc123", "deadbeef"):
        assert secret not in proc.stderr
    assert "s3://***@bucket/cache/" in proc.stderr


def test_the_cli_configures_logging_and_masks_every_line(isolated: Path) -> None:
    """After a CLI command, structlog is configured: any logger's lines go to stderr, in JSON when asked, masked."""
    proc = run_python(
        """
        import structlog

        from pathlib import Path

        from scalable.cli import cli

        Path(".scalable/cache").mkdir(parents=True)
        print(structlog.is_configured())
        cli.main(["cache", "stats", "--format", "json"], standalone_mode=False)
        print(structlog.is_configured())
        structlog.get_logger("another.library").warning("login", password="hunter2", url="https://u:pw@host/x")
        """,
        cwd=isolated,
        env=child_env(SCALABLE_LOG_FORMAT="json"),
    )
    lines = proc.stdout.splitlines()
    assert lines[0] == "False" and json.loads("".join(lines[1:-1])) == [] and lines[-1] == "True"
    (logged,) = [json.loads(line) for line in proc.stderr.splitlines()]
    assert logged["event"] == "login" and logged["level"] == "warning"
    assert logged["password"] == "***" and logged["url"] == "https://***@host/x"
