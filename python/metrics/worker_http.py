"""A metrics HTTP server for processes that are not the Django site (Celery workers).

`serve(address, port)` starts a small threaded HTTP server answering `GET /metrics` (and
`/metrics/`, `/`) with what the site's `/metrics/` serves: `metrics.core.exposition()`, so in
multiprocess mode the merged values of every process sharing `PROMETHEUS_MULTIPROC_DIR`.
Who may read is decided by `metrics.access.is_allowed`, the function behind `/metrics/`: allowed
IPs and networks, `X-Metrics-Token` or `Authorization: Bearer`, trusted proxies. There are no
sessions here, so the superuser rule never applies. Content negotiation (OpenMetrics, gzip) is
the view's own code.

Start it in a worker's main process only: a server per prefork child would bind once and show
only that child's values.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from metrics import core
from metrics.access import WWW_AUTHENTICATE, is_allowed
from metrics.conf import SETTINGS

logger = logging.getLogger("metrics")

PATHS = frozenset({"/metrics", "/metrics/", "/"})


def _metrics_enabled() -> bool:
    # Read afresh: METRICS_ENABLED=False closes the endpoint as it does `/metrics/`.
    return bool(SETTINGS["METRICS_ENABLED"].read())


class MetricsHandler(BaseHTTPRequestHandler):
    """Serve the exposition to callers that `metrics.access.is_allowed` lets in."""

    server_version = "django-metrics"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        """Answer with the metrics, a refusal, or 404."""
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        """Answer as GET does, without the body."""
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        # Imported here: views.py pulls in Django's HTTP machinery, which needs settings.
        from metrics.views import accepts_gzip, wants_openmetrics

        if urlsplit(self.path).path not in PATHS or not _metrics_enabled():
            self._send(404, b"Not found.\n", "text/plain; charset=utf-8", send_body)
            return
        headers = {name: value for name, value in self.headers.items()}
        decision = is_allowed(self.client_address[0], headers)
        if not decision.allowed:
            extra = {"WWW-Authenticate": WWW_AUTHENTICATE} if decision.status == 401 else {}
            body = b"Authentication required.\n" if decision.status == 401 else b"Forbidden.\n"
            self._send(decision.status, body, "text/plain; charset=utf-8", send_body, extra)
            return
        openmetrics = wants_openmetrics(self.headers.get("Accept", ""))
        gzip = accepts_gzip(self.headers.get("Accept-Encoding", ""))
        try:
            body = core.exposition(openmetrics=openmetrics, gzip=gzip)
        except Exception:
            logger.exception("metrics server: exposition failed")
            self._send(500, b"Exposition failed.\n", "text/plain; charset=utf-8", send_body)
            return
        extra = {"Vary": "Accept, Accept-Encoding"}
        if gzip:
            extra["Content-Encoding"] = "gzip"
        content_type = core.OPENMETRICS_CONTENT_TYPE if openmetrics else core.CONTENT_TYPE_LATEST
        self._send(200, body, content_type, send_body, extra)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        send_body: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Log requests at debug level: a scrape every 15 s must not fill the worker's log."""
        logger.debug("metrics server: %s - %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A restarted worker must get its port back while old connections sit in TIME_WAIT.
    allow_reuse_address = True

    def __init__(self, address: str, port: int) -> None:
        if ":" in address:
            self.address_family = socket.AF_INET6
        super().__init__((address, port), MetricsHandler)


class MetricsServer:
    """A running metrics server: its address, its port, and how to stop it."""

    def __init__(self, address: str, port: int) -> None:
        self._server = _Server(address, port)
        self.address = address
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        """Serve in a daemon thread; return self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def close_inherited(self) -> None:
        """Close the listening socket in a forked child, leaving the parent's server running.

        A child forked after the server started inherits the socket; holding it would keep the
        port bound after the parent died.
        """
        self._server.socket.close()


def serve(address: str, port: int) -> MetricsServer:
    """Start a metrics server on `address`:`port` (port 0: any free port) and return it.

    Raise OSError when the address cannot be bound.
    """
    server = MetricsServer(address, port).start()
    logger.info("metrics server listening on %s:%d", address, server.port)
    return server
