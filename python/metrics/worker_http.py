"""A metrics HTTP server for processes that are not the Django site (Celery workers).

`serve(address, port)` starts a small HTTP server (`BoundedHTTPServer`: request heads read by one
thread with a deadline, answers from a fixed set of threads, no version banner) answering `GET /metrics` (and
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

import io
import logging
import os
import queue
import selectors
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from metrics import core
from metrics.access import WWW_AUTHENTICATE, is_allowed
from metrics.conf import app_settings
from metrics.negotiation import accepts_gzip, negotiate

if TYPE_CHECKING:
    from typing_extensions import Self

logger = logging.getLogger("metrics")

PATHS = frozenset({"/metrics", "/metrics/", "/"})


def _metrics_enabled() -> bool:
    # METRICS_ENABLED=False closes the endpoint as it does `/metrics/`.
    return app_settings.ENABLED


class MetricsHandler(BaseHTTPRequestHandler):
    """Serve the exposition to callers that `metrics.access.is_allowed` lets in.

    Run by `BoundedHTTPServer`: `request` is the connection and its request head, already read.
    """

    server_version = "django-metrics"
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        """Read the request from the head the server collected; write to the socket."""
        sock, head = self.request
        self.connection = sock
        self.rfile = io.BytesIO(head)
        self.wfile = _SocketWriter(sock)

    def finish(self) -> None:
        """Nothing to flush: every write went out whole."""

    def version_string(self) -> str:
        """Return the `Server` header: the name only, never the Python version."""
        return self.server_version

    def do_GET(self) -> None:
        """Answer with the metrics, a refusal, or 404."""
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        """Answer as GET does, without the body."""
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
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
        chosen = negotiate(self.headers.get("Accept", ""))
        gzip = accepts_gzip(self.headers.get("Accept-Encoding", ""))
        try:
            names = parse_qs(urlsplit(self.path).query).get("name[]")
            body = core.exposition(**chosen.encoder_options(), gzip=gzip, names=names)
        except Exception:
            logger.exception("metrics server: exposition failed")
            self._send(500, b"Exposition failed.\n", "text/plain; charset=utf-8", send_body)
            return
        extra = {"Vary": "Accept, Accept-Encoding"}
        if gzip:
            extra["Content-Encoding"] = "gzip"
        self._send(200, body, chosen.content_type, send_body, extra)

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
        # One request per connection (see BoundedHTTPServer).
        self.send_header("Connection", "close")
        self.close_connection = True
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Log requests at debug level: a scrape every 15 s must not fill the worker's log."""
        logger.debug("metrics server: %s - %s", self.address_string(), format % args)


# Seconds from accepting a connection to having its whole request head (idle or slow clients
# are cut off then, however they trickle bytes), and to send the answer.
TIMEOUT = 5.0
# Threads answering complete requests, and complete requests allowed to wait for one.
THREADS = 4
QUEUED = 8
# Connections still sending their request head; beyond it the oldest is closed.
MAX_CONNECTIONS = 256
# A request head larger than this is not a scrape.
MAX_HEAD = 16 * 1024

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 6\r\nConnection: close\r\nRetry-After: 1\r\n\r\nBusy.\n"
)


class _Connection:
    """An accepted connection whose request head is still arriving."""

    __slots__ = ("address", "deadline", "head", "sock")

    def __init__(self, sock: socket.socket, address: Any, deadline: float) -> None:
        self.sock = sock
        self.address = address
        self.deadline = deadline
        self.head = bytearray()


class _SocketWriter(io.BufferedIOBase):
    """`wfile` of a handler: every write is sent whole (within the socket's timeout)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sock.sendall(data)
        return len(data)


class BoundedHTTPServer:
    """An HTTP server that a crowd of idle or slow clients cannot starve or exhaust.

    One thread reads request heads from every connection with a selector (an idle connection
    costs a descriptor, not a thread) and closes a connection whose head is not complete within
    `timeout` seconds. Complete requests go to `threads` handler threads, made once; up to
    `queued` more wait, and beyond that a request is answered 503 at once. Each request is
    answered on a connection of its own (`Connection: close`): a scrape every few seconds does
    not need keep-alive, and an open idle connection is what a slow client would hold.

    `handler` is a `BaseHTTPRequestHandler` subclass, called as socketserver would call it; its
    exceptions are logged, never raised out of the server's threads.
    """

    def __init__(
        self,
        address: str,
        port: int,
        handler: type[BaseHTTPRequestHandler],
        *,
        timeout: float = TIMEOUT,
        threads: int = THREADS,
        queued: int = QUEUED,
        max_connections: int = MAX_CONNECTIONS,
        name: str = "metrics-http",
    ) -> None:
        self.handler = handler
        self.timeout = timeout
        self.max_connections = max_connections
        self.name = name
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            # A restarted worker must get its port back while old connections sit in TIME_WAIT.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((address, port))
            self.socket.listen(128)
            self.socket.setblocking(False)
        except BaseException:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._selector.register(self.socket, selectors.EVENT_READ)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        # Insertion order is age order: the first entry is the oldest connection.
        self._connections: dict[socket.socket, _Connection] = {}
        self._requests: queue.Queue[tuple[socket.socket, Any, bytes] | None] = queue.Queue(queued)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._handlers = [
            threading.Thread(target=self._answer, name=f"{name}-{i}", daemon=True) for i in range(threads)
        ]

    def start(self) -> Self:
        """Start the reading thread and the handler threads; return self."""
        for thread in self._handlers:
            thread.start()
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close every connection and the listening socket."""
        self._stopping.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        for _ in self._handlers:
            try:
                self._requests.put(None, timeout=0.1)
            except queue.Full:
                break
        for thread in self._handlers:
            if thread.is_alive():
                thread.join(timeout)
        self._close_all()

    def close_inherited(self) -> None:
        """Close the inherited descriptors in a forked child; the parent keeps serving."""
        self._close_all()

    def _close_all(self) -> None:
        for sock in [*self._connections, self.socket, self._wake_read, self._wake_write]:
            try:
                sock.close()
            except OSError:
                pass
        self._connections.clear()
        try:
            self._selector.close()
        except (OSError, RuntimeError):
            pass

    def _wake(self) -> None:
        try:
            self._wake_write.send(b"x")
        except OSError:
            pass

    # --- the reading thread ---

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                self._turn()
            except Exception:
                # Never out of this thread: a server that stops answering is worse than a log line.
                logger.exception("%s: unexpected error, serving on", self.name)
                time.sleep(0.1)

    def _turn(self) -> None:
        now = time.monotonic()
        wait = 1.0
        if self._connections:
            oldest = min(c.deadline for c in self._connections.values())
            wait = min(wait, max(0.0, oldest - now))
        for key, _events in self._selector.select(wait):
            sock = key.fileobj
            if sock is self.socket:
                self._accept()
            elif sock is self._wake_read:
                try:
                    self._wake_read.recv(4096)
                except OSError:
                    pass
            else:
                assert isinstance(sock, socket.socket)
                self._read(sock)
        now = time.monotonic()
        for connection in [c for c in self._connections.values() if c.deadline <= now]:
            logger.debug(
                "%s: closing %s: no complete request within %g s", self.name, connection.address, self.timeout
            )
            self._drop(connection.sock)

    def _accept(self) -> None:
        # A bounded number per turn: a flood of connections must not starve reading.
        for _ in range(64):
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # Out of descriptors (EMFILE): free the oldest waiting connection, so the
                # listening socket does not stay readable forever and spin this thread.
                logger.warning("%s: cannot accept a connection: %s", self.name, exc)
                if self._connections:
                    self._drop(next(iter(self._connections)))
                else:
                    time.sleep(0.1)
                return
            if len(self._connections) >= self.max_connections:
                self._drop(next(iter(self._connections)))
            sock.setblocking(False)
            self._connections[sock] = _Connection(sock, address, time.monotonic() + self.timeout)
            self._selector.register(sock, selectors.EVENT_READ)

    def _read(self, sock: socket.socket) -> None:
        connection = self._connections.get(sock)
        if connection is None:
            return
        try:
            data = sock.recv(8192)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        connection.head += data
        end = _head_end(connection.head)
        if end < 0:
            if len(connection.head) > MAX_HEAD:
                self._drop(sock)
            return
        self._selector.unregister(sock)
        del self._connections[sock]
        sock.setblocking(True)
        sock.settimeout(self.timeout)
        try:
            self._requests.put_nowait((sock, connection.address, bytes(connection.head[:end])))
        except queue.Full:
            logger.warning("%s: every handler thread is busy, answering 503", self.name)
            try:
                sock.settimeout(0.0)
                sock.send(_BUSY)
            except OSError:
                pass
            sock.close()

    def _drop(self, sock: socket.socket) -> None:
        self._connections.pop(sock, None)
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    # --- the handler threads ---

    def _answer(self) -> None:
        while True:
            item = self._requests.get()
            if item is None:
                return
            sock, address, head = item
            try:
                # Typed for socketserver (a socket, a BaseServer); MetricsHandler.setup() takes this.
                self.handler((sock, head), address, self)  # type: ignore[arg-type]
            except Exception:
                logger.exception("%s: a request from %s failed", self.name, address)
            finally:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


def _head_end(data: bytearray) -> int:
    """Return the length of the request head in `data` (through its blank line), or -1."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        index = data.find(separator)
        if index >= 0:
            return index + len(separator)
    return -1


class MetricsServer(BoundedHTTPServer):
    """A running metrics server: its address, its port, and how to stop it."""

    def __init__(self, address: str, port: int, **options: Any) -> None:
        super().__init__(address, port, MetricsHandler, **options)
        self.address = address
        self.port = int(self.server_address[1])


def serve(address: str, port: int) -> MetricsServer:
    """Start a metrics server on `address`:`port` (port 0: any free port) and return it.

    Raise OSError when the address cannot be bound.
    """
    server = MetricsServer(address, port).start()
    logger.info("metrics server listening on %s:%d", address, server.port)
    return server


# The export server of this process (gunicorn's master), closed in every forked child.
_export_server: MetricsServer | None = None


def start_export_server() -> MetricsServer | None:
    """Serve `/metrics/` from this process on `METRICS_EXPORT_PORT`, if set; return the server.

    For gunicorn's master (`when_ready` in deploy/gunicorn.conf.py): it never serves user
    requests, so a scrape is answered while every worker is busy. Never raises: a bad setting
    (reported by the system check metrics.E019) or a port in use is logged, and the site runs
    without the export port. Forked children (the workers) close the inherited sockets at once.
    """
    global _export_server
    if _export_server is not None:
        return _export_server
    try:
        where = app_settings.EXPORT_PORT
        if where is None:
            return None
        address, port = where
        _export_server = MetricsServer(address, port, name="metrics-export").start()
    except Exception:
        logger.exception("metrics export port: not started")
        return None
    logger.info("metrics export port listening on %s:%d", address, _export_server.port)
    return _export_server


def stop_export_server() -> None:
    """Stop the export server of this process, if one runs."""
    global _export_server
    server, _export_server = _export_server, None
    if server is not None:
        server.stop()


def _close_export_server_in_child() -> None:
    global _export_server
    server, _export_server = _export_server, None
    if server is not None:
        server.close_inherited()


os.register_at_fork(after_in_child=_close_export_server_in_child)
