"""The example site under gunicorn (WSGI) and uvicorn (ASGI), driven over real HTTP on loopback."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "example"
BIN = Path(sys.executable).parent
TOKEN = "e2e-token"
# Another loopback address: not in METRICS_ALLOWED_IPS, so it has to authenticate.
OUTSIDER = "127.0.0.2"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _site_env(database: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METRICS_", "PROMETHEUS_", "DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="server.settings",
        DATABASE_URL=f"sqlite:///{database}",
        DJANGO_DEBUG="0",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        METRICS_ALLOWED_IPS="127.0.0.1",
        METRICS_AUTH_TOKEN=TOKEN,
    )
    env.pop("REDIS_URL", None)
    return env


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a migrated SQLite database for the example site."""
    path = tmp_path_factory.mktemp("example") / "db.sqlite3"
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=EXAMPLE,
        env=_site_env(path),
        check=True,
        timeout=120,
    )
    return path


@dataclass
class Server:
    """A running server: its base URL, port and log."""

    kind: str
    url: str
    port: int
    log: Path

    def get(self, path: str, **kwargs: object) -> requests.Response:
        """GET a path from 127.0.0.1 (an allowed address)."""
        return requests.get(self.url + path, timeout=10, **kwargs)  # type: ignore[arg-type]

    def get_from(
        self, source: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict, bytes]:
        """GET a path with the connection's source address set to `source`."""
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=10, source_address=(source, 0)
        )
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()


def _command(kind: str, port: int) -> list[str]:
    if kind == "gunicorn":
        # One worker: the single-process store (multiprocess mode is tested on its own).
        return [str(BIN / "gunicorn"), "server.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    # --no-proxy-headers: uvicorn would otherwise rewrite the client address from
    # X-Forwarded-For sent through 127.0.0.1, before Django's own rules see it.
    return [
        str(BIN / "uvicorn"),
        "server.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-proxy-headers",
        "--log-level",
        "warning",
    ]


@contextmanager
def _running(kind: str, database: Path, log: Path, **env: str) -> Iterator[tuple[Server, subprocess.Popen]]:
    """Start the example site under `kind` with extra environment `env`; stop it on exit."""
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            _command(kind, port),
            cwd=EXAMPLE,
            env={**_site_env(database), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    site = Server(kind, f"http://127.0.0.1:{port}", port, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"{kind} exited with {process.returncode}:\n{log.read_text()}")
            try:
                if site.get("/metrics/liveness/").status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{kind} did not answer within 30 s:\n{log.read_text()}")
            time.sleep(0.1)
        yield site, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module", params=["gunicorn", "uvicorn"])
def server(
    request: pytest.FixtureRequest, database: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """Start the example site, wait until it answers, stop it after the module."""
    kind = request.param
    with _running(kind, database, tmp_path_factory.mktemp(kind) / "server.log") as (site, _process):
        yield site


def _traffic(site: Server) -> None:
    expected = {
        "/": 200,
        "/items/1/": 200,
        "/items/999/": 404,
        "/api/items/": 200,
        "/async/": 200,
        "/stream/": 200,
        "/about/": 200,
        "/boom/": 500,
        "/no/such/page/": 404,
    }
    for path, status in expected.items():
        response = site.get(path)
        assert response.status_code == status, (path, response.status_code, site.log.read_text()[-2000:])
    assert site.get("/stream/").text.count("line") == 10


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_five_http_metrics_after_real_requests(server: Server) -> None:
    """After real requests, /metrics/ shows the five HTTP metrics with bounded labels, exactly."""
    before = _samples(server.get("/metrics/").text)
    _traffic(server)
    response = server.get("/metrics/")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = _samples(response.text)

    def value(name: str, **labels: str) -> float:
        # The series must be served after the traffic; before it, absent means nothing counted yet.
        key = (name, frozenset(labels.items()))
        assert key in samples, key
        return samples[key] - before.get(key, 0.0)

    # _traffic() asks for each path once, and the stream once more.
    assert value("django_http_requests_total", method="GET", view="shop:home", status="200") == 1
    assert value("django_http_requests_total", method="GET", view="shop:item-detail", status="200") == 1
    assert value("django_http_requests_total", method="GET", view="shop:item-detail", status="404") == 1
    assert value("django_http_requests_total", method="GET", view="shop:async", status="200") == 1
    assert value("django_http_requests_total", method="GET", view="shop:boom", status="500") == 1
    assert value("django_http_requests_total", method="GET", view="shop:stream", status="200") == 2
    assert value("django_http_requests_total", method="GET", view="about/", status="200") == 1
    assert value("django_http_requests_total", method="GET", view="<unresolved>", status="404") == 1
    assert value("django_http_request_duration_seconds_count", method="GET", view="shop:home") == 1
    assert value("django_http_request_size_bytes_count", method="GET", view="shop:home") == 1
    # The stream is 10 lines of 7 bytes, counted as it went out (twice).
    assert value("django_http_response_size_bytes_sum", method="GET", view="shop:stream") == 140
    # The scrape reading these samples is itself excluded, so nothing is in progress.
    assert samples[("django_http_requests_in_progress", frozenset({("method", "GET")}))] == 0
    assert not any("no/such" in dict(labels).get("view", "") for _, labels in samples)


# The spec names these gauges with a `_total` suffix, which promtool's linter reserves for
# counters. The names are the spec's (dashboards and alerts use them); this is the only finding
# tolerated.
SPEC_GAUGES_NAMED_TOTAL = {
    "django_active_users_total",
    "django_db_connections_total",
    "django_process_threads_total",
    "django_process_open_files_total",
}


def test_promtool_accepts_the_exposition(server: Server) -> None:
    """`promtool check metrics` parses what the site serves and finds nothing else to report."""
    _traffic(server)
    body = server.get("/metrics/").content
    assert b"django_http_requests_total" in body
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, timeout=60, check=False
    )
    findings = (result.stdout + result.stderr).decode().splitlines()
    tolerated = {
        f'{name} non-counter metrics should not have "_total" suffix' for name in SPEC_GAUGES_NAMED_TOTAL
    }
    assert [line for line in findings if line not in tolerated] == []
    # 0: clean; 3: lint findings only (a parse error is 1).
    assert result.returncode in (0, 3) and (result.returncode == 0) == (not findings)


def test_access_rules_over_http(server: Server) -> None:
    """Allowed address, token, Bearer, wrong token, spoofed X-Forwarded-For, over real sockets."""
    status, headers, body = server.get_from(OUTSIDER, "/metrics/")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert b"django_http" not in body
    assert server.get_from(OUTSIDER, "/metrics/", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert server.get_from(OUTSIDER, "/metrics/", {"X-Metrics-Token": TOKEN})[0] == 200
    assert server.get_from(OUTSIDER, "/metrics/", {"X-Metrics-Token": "wrong"})[0] == 403
    assert server.get_from(OUTSIDER, "/metrics/", {"X-Forwarded-For": "127.0.0.1"})[0] == 401
    assert server.get_from("127.0.0.1", "/metrics/")[0] == 200


def test_negotiation_over_http(server: Server) -> None:
    """OpenMetrics and gzip are served when asked for."""
    response = server.get(
        "/metrics/",
        headers={"Accept": "application/openmetrics-text;version=1.0.0", "Accept-Encoding": "gzip"},
    )
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.text.endswith("# EOF\n")


def test_probes_over_http(server: Server) -> None:
    """The probes answer well within Kubernetes' 1 s default timeout."""
    # Health is `degraded`: its non-critical Celery check finds no worker (none runs here);
    # readiness leaves that check out.
    expected = {"/metrics/liveness/": "ok", "/metrics/readiness/": "ok", "/metrics/health/": "degraded"}
    for path, status in expected.items():
        started = time.monotonic()
        response = server.get(path)
        assert time.monotonic() - started < 1.0
        assert response.status_code == 200, response.text
        assert response.json()["status"] == status, response.text
    checks = server.get("/metrics/health/").json()["checks"]
    expected_checks = {"database:default": True, "cache:default": True, "migrations": True, "celery": False}
    if server.kind == "gunicorn":
        # A gunicorn worker shares a private store on its own (metrics.prefork), whose disk is checked.
        expected_checks["disk:multiproc"] = True
    assert {name: check["status"] == "ok" for name, check in checks.items()} == expected_checks
    assert checks["celery"]["critical"] is False
    # The kubelet calls the pod IP: the probes answer it, every other path keeps ALLOWED_HOSTS.
    assert server.get("/metrics/liveness/", headers={"Host": "10.1.2.3:8000"}).status_code == 200
    assert server.get("/metrics/", headers={"Host": "10.1.2.3:8000"}).status_code == 400
    assert server.get("/metrics/liveness/", headers={"Host": "localhost"}).status_code == 200


def test_other_methods_over_http_are_405(server: Server) -> None:
    """POST, PUT, DELETE and OPTIONS get 405 with `Allow: GET, HEAD`, not the CSRF 403 page."""
    for path in ("/metrics/", "/metrics/health/", "/metrics/readiness/", "/metrics/liveness/"):
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            response = requests.request(method, server.url + path, data=b"x=1", timeout=10)
            assert response.status_code == 405, (method, path, response.status_code)
            assert response.headers["Allow"] == "GET, HEAD"


def _open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_anonymous_health_calls_do_not_leak_descriptors(database: Path, tmp_path: Path) -> None:
    """Hundreds of anonymous /metrics/health/ calls leave the worker's open descriptors flat.

    The Celery broker check (Redis) is on: kombu and redis-py reach `uuid.uuid1()`, and libuuid
    keeps a file open in every thread it runs in, so a thread per check per call leaked one
    descriptor per call.
    """
    redis = socket.socket()
    redis.settimeout(1)
    try:
        redis.connect(("127.0.0.1", 6379))
    except OSError:
        pytest.skip("no Redis on 127.0.0.1:6379 for the Celery broker check")
    finally:
        redis.close()
    # A short timeout: no Celery worker answers the ping, so the broker check always waits it out.
    env = {"CELERY_BROKER_URL": "redis://127.0.0.1:6379/0", "METRICS_HEALTH_TIMEOUT": "0.1"}
    with _running("gunicorn", database, tmp_path / "server.log", **env) as (site, process):
        (worker,) = psutil.Process(process.pid).children()

        def call() -> None:
            # From an address METRICS_ALLOWED_IPS does not list, without a token: anonymous.
            status, _headers, raw = site.get_from(OUTSIDER, "/metrics/health/")
            # 503 when a loaded machine lets the database or cache check miss the 0.1 s timeout:
            # what is measured here is descriptors, not health.
            assert status in (200, 503), raw
            body = json.loads(raw)
            assert "error" not in body["checks"]["celery"]  # anonymous: no details
            assert body["checks"]["celery"]["status"] in {"error", "timeout"}

        # Warm up: the pool's threads, connections and imports are made once.
        for _ in range(20):
            call()
        before = _open_descriptors(worker.pid)
        for _ in range(300):
            call()
        after = _open_descriptors(worker.pid)
        assert after - before <= 5, (before, after)
        assert worker.num_threads() <= 1 + 8 + 2, worker.num_threads()
