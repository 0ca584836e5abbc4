"""The metrics server of non-site processes: the access rules of `/metrics/`, and hostile clients."""

from __future__ import annotations

import gzip
import http.client
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from django.test import override_settings

from metrics import worker_http
from metrics.worker_http import BoundedHTTPServer, MetricsServer, serve
from tests.promstack import http_get

TOKEN = {"X-Metrics-Token": "test-token"}


def _scrape(port: int, path: str = "/metrics") -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=TOKEN)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _idle_sockets(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sockets.append(sock)
    return sockets


def _closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Return True when the peer closes `sock` within `within` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    """A metrics server with a 1 s head timeout (the default is a few seconds)."""
    running = MetricsServer("127.0.0.1", 0, timeout=1.0).start()
    try:
        yield running
    finally:
        running.stop()


def test_idle_sockets_do_not_starve_a_scrape() -> None:
    """With 60 idle connections open, a scrape is answered at once, without a thread each."""
    running = serve("127.0.0.1", 0)
    threads = threading.active_count()
    idle = _idle_sockets(running.port, 60)
    try:
        time.sleep(0.2)
        started = time.monotonic()
        status, _headers, body = _scrape(running.port)
        assert status == 200, body
        assert time.monotonic() - started < 2.0
        assert threading.active_count() == threads
    finally:
        for sock in idle:
            sock.close()
        running.stop()


def test_idle_sockets_are_closed_after_the_timeout(server: MetricsServer) -> None:
    """A connection that sends nothing is closed once the head timeout passes."""
    idle = _idle_sockets(server.port, 60)
    try:
        started = time.monotonic()
        assert all(_closed_by_peer(sock, 3.0) for sock in idle)
        assert time.monotonic() - started < 2.5
    finally:
        for sock in idle:
            sock.close()
    assert worker_http.TIMEOUT <= 5


def test_a_client_sending_a_byte_at_a_time_is_cut_off(server: MetricsServer) -> None:
    """The deadline counts from the connection, so trickling bytes does not extend it."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    started = time.monotonic()
    cut = False
    try:
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            try:
                sock.send(bytes([byte]))
            except OSError:
                cut = True
                break
            if _closed_by_peer(sock, 0.2):
                cut = True
                break
        assert cut
        assert time.monotonic() - started < 2.0
    finally:
        sock.close()
    status, _headers, _body = _scrape(server.port)
    assert status == 200


def test_no_version_banner(server: MetricsServer) -> None:
    """The Server header names the server only: no Python version, on answers and on errors."""
    status, headers, _body = _scrape(server.port)
    assert status == 200
    assert headers["Server"] == "django-metrics"
    status, headers, _body = _scrape(server.port, "/nothing")
    assert status == 404 and headers["Server"] == "django-metrics"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 501")
    assert b"Python" not in answer and b"Server: django-metrics\r\n" in answer


def test_each_answer_closes_its_connection(server: MetricsServer) -> None:
    """An answer says `Connection: close` and the server closes the connection after it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Metrics-Token: test-token\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"\r\nConnection: close\r\n" in answer


def test_an_oversized_head_is_refused(server: MetricsServer) -> None:
    """A request head beyond 16 KiB is closed without an answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        try:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 40000)
        except OSError:
            pass
        assert _closed_by_peer(sock, 3.0)


class _Slow(BaseHTTPRequestHandler):
    """Holds its thread until released."""

    release = threading.Event()
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        worker_http.MetricsHandler.setup(self)  # type: ignore[arg-type]

    def finish(self) -> None:
        pass

    def do_GET(self) -> None:
        self.release.wait(10)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_busy_handlers_answer_503_beyond_the_queue() -> None:
    """With every handler busy and the queue full, a request gets 503 at once, not a thread."""
    _Slow.release.clear()
    running = BoundedHTTPServer("127.0.0.1", 0, _Slow, threads=1, queued=1)
    running.start()
    port = running.server_address[1]
    threads = threading.active_count()
    held = []
    try:
        for _ in range(2):  # one in the handler thread, one in the queue
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            held.append(sock)
            time.sleep(0.2)
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 503")
        assert time.monotonic() - started < 1.0
        assert threading.active_count() == threads
        _Slow.release.set()
        for sock in held:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        _Slow.release.set()
        for sock in held:
            sock.close()
        running.stop()


class _Broken(BaseHTTPRequestHandler):
    """Raises from its handler."""

    def setup(self) -> None:
        worker_http.MetricsHandler.setup(self)  # type: ignore[arg-type]

    def finish(self) -> None:
        pass

    def do_GET(self) -> None:
        raise RuntimeError("handler bug")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_failing_handler_is_logged_and_the_server_serves_on(caplog: pytest.LogCaptureFixture) -> None:
    """An exception in a handler closes that connection, is logged, and never stops the server."""
    running = BoundedHTTPServer("127.0.0.1", 0, _Broken, threads=1)
    running.start()
    port = running.server_address[1]
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert _closed_by_peer(sock, 3.0)
        failures = [r for r in caplog.records if r.getMessage().startswith("metrics-http: a request from")]
        assert len(failures) == 3
        assert all(r.exc_info and "handler bug" in str(r.exc_info[1]) for r in failures)
    finally:
        running.stop()


def test_a_forked_child_closes_what_it_inherited() -> None:
    """close_inherited() in a forked child leaves the parent's server answering."""
    running = serve("127.0.0.1", 0)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            code = 1
            try:
                running.close_inherited()
                code = 0 if running.socket.fileno() == -1 else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        status_code, _headers, _body = _scrape(running.port)
        assert status_code == 200
    finally:
        running.stop()


def test_stop_closes_the_port() -> None:
    """After stop() the port refuses connections and the server's threads are gone."""
    threads = threading.active_count()
    running = serve("127.0.0.1", 0)
    idle = _idle_sockets(running.port, 3)
    running.stop()
    assert threading.active_count() == threads
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", running.port), timeout=2).close()
    assert all(_closed_by_peer(sock, 2.0) for sock in idle)
    for sock in idle:
        sock.close()


def test_worker_server_applies_the_access_rules() -> None:
    """No credentials: 401; a wrong token: 403; the token or an allowed IP: the exposition."""
    server = serve("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        status, body = http_get(url)
        assert status == 401, body
        status, _ = http_get(url, {"X-Metrics-Token": "wrong"})
        assert status == 403
        status, body = http_get(url, {"X-Metrics-Token": "test-token"})
        assert status == 200 and b"# TYPE celery_tasks_total counter" in body
        status, body = http_get(url + "/", {"Authorization": "Bearer test-token"})
        assert status == 200 and b"celery_tasks_in_progress" in body
        status, _ = http_get(f"http://127.0.0.1:{server.port}/other", {"X-Metrics-Token": "test-token"})
        assert status == 404
        with override_settings(METRICS_ALLOWED_IPS="127.0.0.0/8"):
            status, _ = http_get(url)
            assert status == 200
        with override_settings(METRICS_ENABLED=False):
            status, _ = http_get(url, {"X-Metrics-Token": "test-token"})
            assert status == 404
        request = urllib.request.Request(
            url,
            headers={
                "X-Metrics-Token": "test-token",
                "Accept": "application/openmetrics-text; version=1.0.0",
                "Accept-Encoding": "gzip",
            },
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert response.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(response.read()).endswith(b"# EOF\n")
    finally:
        server.stop()
