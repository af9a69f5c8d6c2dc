"""Who may use the explorer: loopback by default, a token off loopback (header or login cookie), reads only."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from scalable.errors import ConfigError
from scalable.ledger import bind
from scalable.ledger.log import Ledger
from scalable.ui import AccessPolicy, access_policy, running
from scalable.ui.access import is_loopback
from scalable.ui.server import Listening, listen
from tests.ui.conftest import Explorer

TOKEN = "s3cret-token-for-the-tests"
#: Every endpoint, with parameters that make it answer 200 over the ledger of ``seeded``.
ENDPOINTS = (
    "/runs",
    "/runs/run-acc",
    "/compare/run-acc/run-acc",
    "/artifact?location=file:///acc/out.csv",
    "/lineage?node=file:///acc/out.csv",
    "/audit",
    "/sql?q=SELECT+1",
    "/static/app.js",
    "/static/vendor/cytoscape/cytoscape.min.js",
    "/api/info",
    "/api/runs",
    "/api/runs/run-acc",
    "/api/audit-states?run=run-acc",
    "/api/compare?a=run-acc&b=run-acc",
    "/api/artifact?location=file:///acc/out.csv",
    "/api/lineage?node=file:///acc/out.csv",
    "/api/audit",
    "/api/audit/stream?content=0",
    "/api/cookbook",
    "/api/sql?q=SELECT+count(*)+FROM+events",
    "/api/sql?q=SELECT+1&format=csv",
)


@pytest.fixture
def seeded(ledger: Ledger) -> Ledger:
    with bind(run_id="run-acc"):
        ledger.append({"event_type": "run", "op": "started", "attrs": {"project": "acc"}})
        ledger.append(
            {"event_type": "artifact", "op": "recorded", "location": "file:///acc/out.csv", "digest": "e" * 64}
        )
    ledger.finish_run("run-acc")
    return ledger


@pytest.fixture
def remote(seeded: Ledger) -> Iterator[tuple[Explorer, AccessPolicy]]:
    """The explorer with the rules of one bound to a non-loopback address (served on 127.0.0.1, as tests must)."""
    policy = access_policy("10.1.2.3", 8765, TOKEN)
    assert not policy.loopback and policy.token == TOKEN
    with running(seeded, policy=policy) as bound:
        yield Explorer(bound.url.rstrip("/"), proc=None), policy  # type: ignore[arg-type]


def _cookie(policy: AccessPolicy, value: str) -> dict[str, str]:
    return {"Cookie": f"{policy.cookie_name}={value}"}


def test_loopback_is_recognised_by_address_and_name() -> None:
    """127.0.0.0/8, ::1 and localhost are loopback; wildcards and other addresses are not."""
    for host in ("127.0.0.1", "127.5.6.7", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "192.168.1.5", "8.8.8.8", "no-such-host.invalid"):
        assert not is_loopback(host), host


def test_off_loopback_a_token_is_required_and_generated_when_none_is_given() -> None:
    """No token on loopback; off loopback the given token, or a generated one that must be printed."""
    assert access_policy("127.0.0.1", 1, None).token is None
    given = access_policy("0.0.0.0", 1, TOKEN)
    assert (given.token, given.generated, given.loopback) == (TOKEN, False, False)
    made = access_policy("0.0.0.0", 1, None)
    assert made.generated and made.token and len(made.token) >= 32
    assert access_policy("0.0.0.0", 1, None).token != made.token
    assert access_policy("127.0.0.1", 1, TOKEN).token == TOKEN  # a token given on loopback is required too
    with pytest.raises(ConfigError, match="shorter than 16"):
        access_policy("0.0.0.0", 1, "short")
    with pytest.raises(ConfigError, match="empty"):
        access_policy("127.0.0.1", 1, "   ")


def test_the_banner_prints_a_generated_token_and_a_one_time_login_url() -> None:
    """What `scalable ui` prints off loopback: the URL, the generated token and the login URL; a given token is not echoed."""
    with socket.socket() as sock:
        made = access_policy("0.0.0.0", 8765, None)
        lines = Listening(sock, made, "http://box:8765/", "http://box:8765/login?code=abc").banner(Ledger.open())
        assert lines[0].startswith("scalable ui: the ledger of ") and "http://box:8765/" in lines[0]
        assert lines[1].endswith(f": {made.token}") and "generated" in lines[1]
        assert lines[2] == "open this URL once to log a browser in: http://box:8765/login?code=abc"
        given = access_policy("0.0.0.0", 8765, TOKEN)
        assert TOKEN not in "\n".join(Listening(sock, given, "u", "l").banner(Ledger.open()))


def test_without_the_token_every_endpoint_is_refused(remote: tuple[Explorer, AccessPolicy]) -> None:
    """Off loopback, a request without the token, or with a wrong one, gets 401 on every page and endpoint."""
    c, policy = remote
    for path in ENDPOINTS:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-of-some-length"},
            {"X-Scalable-Token": TOKEN[:-1]},
            _cookie(policy, "forged"),
            {"Authorization": TOKEN},
        ):
            answer = c.request(path, headers=headers)
            assert answer.status == 401, (path, headers)
            assert b"needs its access token" in answer.body and b"run-acc" not in answer.body
    assert c.request("/api/runs").json()["error"].startswith("error: this explorer needs its access token")
    assert c.request("/api/runs").headers["www-authenticate"] == 'Bearer realm="scalable ui"'


def test_with_the_token_every_endpoint_works(remote: tuple[Explorer, AccessPolicy]) -> None:
    """The token as a bearer header or X-Scalable-Token opens every page and endpoint; writes stay refused."""
    c, _policy = remote
    for path in ENDPOINTS:
        for headers in ({"Authorization": f"Bearer {TOKEN}"}, {"X-Scalable-Token": TOKEN}):
            answer = c.request(path, headers=headers)
            assert answer.status == 200, (path, answer.body[:200])
    assert c.request("/api/runs", method="POST", headers={"Authorization": f"Bearer {TOKEN}"}).status == 405


def test_a_one_time_login_url_sets_a_cookie_that_opens_everything(remote: tuple[Explorer, AccessPolicy]) -> None:
    """/login?code= works once and sets an HttpOnly, SameSite=Strict cookie (not the token); /login?token= works again."""
    c, policy = remote
    code = policy.login_code()
    answer = c.request(f"/login?code={code}")
    assert (answer.status, answer.headers["location"]) == (303, "/runs")
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{policy.cookie_name}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert TOKEN not in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    for path in ENDPOINTS:
        assert c.request(path, headers=_cookie(policy, value)).status == 200, path
    again = c.request(f"/login?code={code}")
    assert again.status == 401 and b"used already" in again.body
    assert c.request("/login?code=made-up").status == 401
    assert c.request("/login?token=wrong").status == 401
    assert c.request(f"/login?token={TOKEN}").status == 303


def test_on_loopback_only_requests_addressed_to_this_machine_are_answered(seeded: Ledger) -> None:
    """Without a token, a Host header naming another site (DNS rebinding) gets 421; loopback names pass."""
    with running(seeded) as bound:
        c = Explorer(bound.url.rstrip("/"), proc=None)  # type: ignore[arg-type]
        port = bound.policy.port
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "127.0.0.1", "LOCALHOST"):
            assert c.request("/api/runs", headers={"Host": host}).status == 200, host
        for host in (f"evil.example:{port}", "127.0.0.1.evil.example", f"10.0.0.1:{port}", "[::2]"):
            answer = c.request("/api/runs", headers={"Host": host})
            assert answer.status == 421, host
            assert "addressed to this machine" in answer.json()["error"]


def test_listening_refuses_a_busy_port_and_a_foreign_address_in_one_line() -> None:
    """A port in use and an address this machine does not have are ConfigErrors naming them."""
    busy = listen("127.0.0.1", 0, None)
    try:
        port = busy.sock.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"cannot listen on 127\.0\.0\.1:{port}: Address already in use"):
            listen("127.0.0.1", port, None)
    finally:
        busy.sock.close()
    with pytest.raises(ConfigError, match=r"cannot listen on 192\.0\.2\.1:"):
        listen("192.0.2.1", 0, None)  # TEST-NET-1: never this machine's
