"""The dashboard is safe to bind: it answers only requests whose Host names the address it was bound to
(DNS rebinding), warns on stderr when bound off the loopback, and its error answers show neither the
store's path or URL nor any other absolute path."""

from __future__ import annotations

import socket

import pytest
from fastapi.testclient import TestClient

from dibs.dashboards import app as dashboard_app
from dibs.dashboards.app import create_app
from dibs.dashboards.hosts import exposure_warning, host_policy
from dibs.platform.cli.main import main
from dibs.platform.store import StoreError

pytestmark = pytest.mark.unit


@pytest.fixture
def seeded_url(url, seeded):
    seeded(url)
    return url


def _status(app, host: str, path: str = "/") -> int:
    with TestClient(app, base_url=f"http://{host}") as client:
        return client.get(path).status_code


def test_loopback_bind_answers_loopback_names_at_its_port_only(seeded_url):
    app = create_app(seeded_url, host="127.0.0.1", port=8050)
    for good in ["127.0.0.1:8050", "localhost:8050", "LOCALHOST:8050", "[::1]:8050"]:
        assert _status(app, good) == 200, good
    for bad in ["evil.example:8050", "evil.example", "127.0.0.1:9999", "127.0.0.1", "10.0.0.5:8050"]:
        assert _status(app, bad) == 400, bad
    with TestClient(app, base_url="http://127.0.0.1:8050") as client:
        refused = client.get("/", headers={"host": "evil.example:8050"})
        assert (refused.status_code, refused.text) == (400, "Invalid host header")
        assert refused.headers["x-content-type-options"] == "nosniff"
        assert (
            client.get("/api/sweep/sweep-1/parcoords", headers={"host": "evil.example:8050"}).status_code
            == 400
        )


def test_every_interface_bind_answers_addresses_and_this_machine(seeded_url):
    app = create_app(seeded_url, host="0.0.0.0", port=8050, allowed_hosts=["dash.lab"])
    for good in ["10.1.2.3:8050", "127.0.0.1:8050", f"{socket.gethostname()}:8050", "dash.lab:8050",
                 "[fe80::1]:8050"]:  # fmt: skip
        assert _status(app, good) == 200, good
    for bad in ["evil.example:8050", "10.1.2.3:8051", "dash.lab.evil.example:8050"]:
        assert _status(app, bad) == 400, bad


def test_a_specific_address_answers_only_itself():
    policy = host_policy("192.168.7.2", 8050)
    assert policy.allows("192.168.7.2:8050")
    assert not policy.allows("127.0.0.1:8050") and not policy.allows("192.168.7.3:8050")
    for malformed in [None, "", "192.168.7.2:80x", "x@192.168.7.2:8050", "192.168.7.2:8050/a", "[::1"]:
        assert not policy.allows(malformed), malformed
    assert host_policy("::1", None).allows("[::1]:1234")  # no port given: any port (an app served elsewhere)


def test_off_loopback_warning():
    assert exposure_warning("127.0.0.1", 8050) is None and exposure_warning("localhost", 8050) is None
    assert exposure_warning("::1", 8050) is None
    assert exposure_warning("0.0.0.0", 8050).startswith(
        "dibs dashboard: warning: listening on 0.0.0.0:8050, "
    )
    assert exposure_warning("::", 9000).startswith("dibs dashboard: warning: listening on [::]:9000, ")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_cli_warns_when_bound_off_loopback(seeded_url, capsys, monkeypatch, host):
    served = []
    monkeypatch.setattr(dashboard_app, "serve", lambda app, **where: served.append(where))
    port = _free_port()
    assert main(["dashboard", "--db", seeded_url, "--host", host, "--port", str(port)]) == 0
    assert served == [{"host": host, "port": port}]
    err = capsys.readouterr().err
    if host == "127.0.0.1":
        assert err == ""
    else:
        assert err.count("\n") == 1
        assert err.startswith(f"dibs dashboard: warning: listening on 0.0.0.0:{port}, beyond this machine, "
                              "with no authentication")  # fmt: skip


def _no_paths(text: str, url: str) -> None:
    path = url.removeprefix("sqlite:///")
    assert "/tmp/" not in text and path not in text and url not in text and "dibs.db" not in text, text


def test_error_answers_name_no_store_and_no_path(seeded_url, capsys, monkeypatch):
    app = create_app(seeded_url, host="127.0.0.1", port=8050)
    reader = app.state.reader
    with TestClient(app, base_url="http://127.0.0.1:8050", raise_server_exceptions=False) as client:
        unknown = client.get("/run/nope")
        assert (unknown.status_code, unknown.json()) == (404, {"detail": "no run with id 'nope'"})
        _no_paths(unknown.text, seeded_url)
        for path in ["/api/run/nope/allocation", "/no/such/page", "/static/..%2F..%2Fetc%2Fpasswd",
                     "/api/run/run-gvm-0/budget?step=x", "/api/targets?target=x"]:  # fmt: skip
            response = client.get(path)
            assert response.status_code in (404, 422), path
            _no_paths(response.text, seeded_url)
        # The database fails: the page says so, the server's stderr says why.
        monkeypatch.setattr(reader, "runs", _raises(StoreError(f"store {seeded_url}: disk I/O error")))
        failed = client.get("/")
        assert failed.status_code == 503
        _no_paths(failed.text, seeded_url)
        assert capsys.readouterr().err == f"dibs dashboard: store {seeded_url}: disk I/O error\n"
        # Anything else: the generic 500, no traceback or path.
        monkeypatch.setattr(reader, "sweeps", _raises(RuntimeError(f"boom in {seeded_url}")))
        crashed = client.get("/sweep/sweep-1")
        assert (crashed.status_code, crashed.text) == (500, "Internal Server Error")


def _raises(exc: Exception):
    def method(*_args, **_kwargs):
        raise exc

    return method
