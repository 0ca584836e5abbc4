"""export_metrics, snapshot_metrics and cleanup_metrics, run in-process and as real `manage.py` processes.

Pushes go to a real Pushgateway started on a free loopback port (tests/promstack.py).
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from metrics import collectors
from metrics.core import REGISTRY, exposition
from metrics.management.commands.export_metrics import escape_grouping_pair, pushgateway_url
from metrics.models import MetricSample
from tests.promstack import (
    ROOT,
    Server,
    free_port,
    http_get,
    start_pushgateway,
    wait_for,
)


def run(*args: str, **options: Any) -> tuple[str, str]:
    """Run a command in-process and return (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def manage(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `django-admin <args>` with the test settings in a fresh process."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "python")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Yield a running Pushgateway on a free loopback port."""
    server = start_pushgateway(tmp_path_factory.mktemp("pushgateway"))
    try:
        yield server
    finally:
        server.stop()


def groups(gateway: Server) -> list[dict[str, Any]]:
    """Return the Pushgateway's groups (`/api/v1/metrics`): labels and metric families of each."""
    status, body = http_get(gateway.url + "/api/v1/metrics")
    assert status == 200, body
    data: list[dict[str, Any]] = json.loads(body)["data"]
    return data


def group(gateway: Server, **labels: str) -> dict[str, Any] | None:
    """Return the group whose grouping labels are exactly `labels`, or None."""
    for candidate in groups(gateway):
        if candidate["labels"] == labels:
            return candidate
    return None


def raw_push(gateway: Server, path: str, body: bytes, method: str = "PUT") -> None:
    """Push a hand-written text exposition, bypassing the command."""
    request = urllib.request.Request(
        gateway.url + path,
        data=body,
        method=method,
        headers={"Content-Type": "text/plain; version=0.0.4"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def sample_value(text: str, name: str, labels: dict[str, str]) -> float | None:
    """Return the value of one sample of a text exposition, or None."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


# --- export_metrics --print ---


def test_print_writes_the_exposition() -> None:
    """`--print` writes the same families /metrics/ serves, with current values."""
    collectors.custom_metric_counter.labels(type="export", action="print").inc(3)
    out, _ = run("export_metrics", "--print")
    assert sample_value(out, "django_custom_metric_total", {"type": "export", "action": "print"}) == 3.0
    printed = {family.name for family in text_string_to_metric_families(out)}
    served = {family.name for family in text_string_to_metric_families(exposition().decode())}
    assert printed == served
    assert "django_http_requests" in printed


def test_print_from_the_command_line() -> None:
    """`django-admin export_metrics --print` exits 0 with a parseable exposition on stdout."""
    result = manage("export_metrics", "--print")
    assert result.returncode == 0, result.stderr
    families = {family.name: family for family in text_string_to_metric_families(result.stdout)}
    assert families["django_http_requests"].type == "counter"
    assert families["django_http_request_duration_seconds"].type == "histogram"


def test_print_and_pushgateway_are_exclusive() -> None:
    """Giving both --print and --pushgateway, or neither, is a CommandError."""
    with pytest.raises(CommandError, match="not allowed with argument"):
        run("export_metrics", "--print", "--pushgateway", "127.0.0.1:1", "--job", "x")
    with pytest.raises(CommandError, match="one of the arguments --print --pushgateway is required"):
        run("export_metrics")


# --- export_metrics --pushgateway ---


def test_grouping_key_escaping() -> None:
    """Plain values are percent-encoded; values with `/` or empty values use the @base64 form."""
    assert escape_grouping_pair("instance", "web 1") == "instance/web%201"
    assert escape_grouping_pair("path", "/a/b") == "path@base64/L2EvYg=="
    assert escape_grouping_pair("empty", "") == "empty@base64/="
    assert (
        pushgateway_url("https://pg.example:9091/", "batch", {"shard": "3"})
        == "https://pg.example:9091/metrics/job/batch/shard/3"
    )


def test_push_replaces_the_group(pushgateway: Server) -> None:
    """A PUT push lands in the group named by --job and --grouping-key, with our samples in it."""
    collectors.custom_metric_counter.labels(type="export", action="push").inc(5)
    out, _ = run(
        "export_metrics",
        "--pushgateway",
        pushgateway.address,
        "--job",
        "nightly",
        "--grouping-key",
        "instance=web 1",
        "--grouping-key",
        "path=/srv/app",
        "--grouping-key",
        "empty=",
    )
    assert "PUT http://" in out
    assert "HTTP 200" in out
    pushed = group(pushgateway, job="nightly", instance="web 1", path="/srv/app", empty="")
    assert pushed is not None, groups(pushgateway)
    assert "django_custom_metric_total" in pushed
    _status, body = http_get(pushgateway.url + "/metrics")
    value = sample_value(
        body.decode(),
        "django_custom_metric_total",
        {
            "job": "nightly",
            "instance": "web 1",
            "path": "/srv/app",
            "empty": "",
            "type": "export",
            "action": "push",
        },
    )
    assert value == REGISTRY.get_sample_value(
        "django_custom_metric_total", {"type": "export", "action": "push"}
    )


def test_post_keeps_other_families_put_drops_them(pushgateway: Server) -> None:
    """--method post replaces only the pushed families; put (the default) replaces the whole group."""
    collectors.custom_metric_counter.labels(type="export", action="semantics").inc()
    raw_push(pushgateway, "/metrics/job/semantics", b"# TYPE batch_extra gauge\nbatch_extra 42\n")
    run("export_metrics", "--pushgateway", pushgateway.address, "--job", "semantics", "--method", "post")
    after_post = group(pushgateway, job="semantics")
    assert after_post is not None
    assert "batch_extra" in after_post
    assert "django_custom_metric_total" in after_post
    run("export_metrics", "--pushgateway", pushgateway.address, "--job", "semantics")
    after_put = group(pushgateway, job="semantics")
    assert after_put is not None
    assert "batch_extra" not in after_put
    assert "django_custom_metric_total" in after_put


def test_delete_removes_the_group(pushgateway: Server) -> None:
    """--method delete removes the group and sends no body."""
    run("export_metrics", "--pushgateway", pushgateway.address, "--job", "doomed")
    assert group(pushgateway, job="doomed") is not None
    out, _ = run(
        "export_metrics", "--pushgateway", pushgateway.address, "--job", "doomed", "--method", "delete"
    )
    # The Pushgateway accepts a delete (202) and applies it asynchronously, a moment later.
    assert "DELETE" in out
    assert ": HTTP 202 (group deleted)" in out
    wait_for(lambda: group(pushgateway, job="doomed") is None, 10, "the group to disappear")


def test_refused_push_is_a_command_error(tmp_path: Path) -> None:
    """A push the Pushgateway rejects (here a type clash with another group) raises with its reason.

    Which side of the clash the Pushgateway names (GAUGE or COUNTER) depends on its map order.
    """
    # The clash needs at least one sample of the family in our exposition.
    collectors.custom_metric_counter.labels(type="clash", action="push").inc()
    gateway = start_pushgateway(tmp_path)
    try:
        raw_push(
            gateway,
            "/metrics/job/clash",
            b"# TYPE django_custom_metric_total gauge\ndjango_custom_metric_total 1\n",
        )
        refused = (
            r"(?s)refused PUT .*: HTTP 400 Bad Request: .*django_custom_metric_total.*is not a "
            r"(GAUGE|COUNTER)"
        )
        with pytest.raises(CommandError, match=refused):
            run("export_metrics", "--pushgateway", gateway.address, "--job", "victim")
        # The Pushgateway remembers the failed attempt, without any of its samples.
        victim = group(gateway, job="victim")
        assert victim is not None
        assert victim["last_push_successful"] is False
        assert "django_custom_metric_total" not in victim
    finally:
        gateway.stop()


def test_unreachable_gateway_from_the_command_line() -> None:
    """A closed port exits non-zero with a message naming the URL, and no traceback."""
    port = free_port()
    result = manage("export_metrics", "--pushgateway", f"127.0.0.1:{port}", "--job", "x")
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(
        f"CommandError: Could not reach the Pushgateway for PUT http://127.0.0.1:{port}/metrics/job/x: "
    )
    # (Tracebacks logged by scrape-time hooks of other modules may precede it; none is the command's.)
    assert "export_metrics.py" not in result.stderr


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Yield the port of a TCP server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_timeout(silent_server: int) -> None:
    """--timeout bounds the wait for a gateway that never answers."""
    started = time.monotonic()
    with pytest.raises(CommandError, match="timed out"):
        run("export_metrics", "--pushgateway", f"127.0.0.1:{silent_server}", "--job", "x", "--timeout", "0.5")
    assert time.monotonic() - started < 5


@pytest.fixture
def garbage_server() -> Iterator[Any]:
    """Yield a function that starts a TCP server answering every connection with `reply` bytes.

    `reply` of None closes each connection without a byte; the function returns the port.
    """
    listeners: list[socket.socket] = []
    threads: list[threading.Thread] = []
    stop = threading.Event()

    def serve(listener: socket.socket, reply: bytes | None) -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    _read_request(conn)
                    if reply is not None:
                        conn.sendall(reply)
                    # Close without a reset: the client reads the reply (or a clean EOF).
                    conn.shutdown(socket.SHUT_WR)
                    while conn.recv(65536):
                        pass
                except OSError:
                    pass

    def start(reply: bytes | None) -> int:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listeners.append(listener)
        thread = threading.Thread(target=serve, args=(listener, reply), daemon=True)
        thread.start()
        threads.append(thread)
        return int(listener.getsockname()[1])

    try:
        yield start
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for listener in listeners:
            listener.close()


def _read_request(conn: socket.socket) -> None:
    """Read a whole HTTP request (head and Content-Length body), so replying never races it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip() or 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return
        body += chunk


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n", "BadStatusLine"),
        (b"\x00\xff\xfe garbage \x07\r\n\r\n", "BadStatusLine"),
        # Closed unanswered, after the whole request was read: a clean close.
        (None, "RemoteDisconnected"),
        (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", "LineTooLong"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n", "HTTPException"),
    ],
)
def test_a_server_that_does_not_speak_http_is_a_command_error(
    garbage_server: Any, reply: bytes | None, error: str
) -> None:
    """Non-HTTP bytes, a closed connection or absurd headers are a one-line CommandError."""
    port = garbage_server(reply)
    with pytest.raises(CommandError) as raised:
        run("export_metrics", "--pushgateway", f"127.0.0.1:{port}", "--job", "x", "--timeout", "2")
    message = str(raised.value)
    assert message.startswith(
        f"Could not reach the Pushgateway for PUT http://127.0.0.1:{port}/metrics/job/x: "
    )
    assert re.search(error, message), message
    assert "\n" not in message


def test_garbage_from_the_command_line_is_one_line_without_traceback(garbage_server: Any) -> None:
    """From the command line, a non-HTTP answer exits 1 with the CommandError line, no traceback."""
    port = garbage_server(b"SSH-2.0-OpenSSH_9.6\r\n")
    result = manage("export_metrics", "--pushgateway", f"127.0.0.1:{port}", "--job", "x")
    assert result.returncode == 1, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("CommandError: Could not reach the Pushgateway"), result.stderr
    assert "BadStatusLine" in last_line
    assert "export_metrics.py" not in result.stderr


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("ftp://127.0.0.1:21", "only http:// and https:// are supported"),
        ("file:///etc/passwd", "only http:// and https:// are supported"),
        ("gopher://127.0.0.1:70", "only http:// and https:// are supported"),
        ("javascript:alert(1)//x", "is not a valid address|names no host|only http"),
        ("127.0.0.1:notaport", "is not a valid address"),
        ("127.0.0.1:99999", "is not a valid address"),
        ("127.0.0.1:1:2", "is not a valid address"),
        ("http://[::1", "is not a valid address"),
        ("http://:9091", "names no host"),
        ("http://", "names no host"),
        ("", "names no host"),
        ("http://127.0.0.1:9091/?x=1", "without a query"),
        ("http://bad host:9091", "contains spaces or control characters"),
        ("http://127.0.0.1:9091\r\nX-Injected: 1", "contains spaces or control characters"),
        ("http://a\nb:9091", "contains spaces or control characters"),
    ],
)
def test_bad_gateway_addresses_are_command_errors(address: str, message: str) -> None:
    """Other schemes and malformed host:port values are refused with a CommandError naming them."""
    with pytest.raises(CommandError, match=message):
        run("export_metrics", "--pushgateway", address, "--job", "x", "--timeout", "2")


def test_https_and_uppercase_schemes_are_accepted() -> None:
    """http:// and https:// in any case are used as given (lower-cased for urllib)."""
    assert pushgateway_url("HTTPS://pg.example:9091", "j", {}) == "https://pg.example:9091/metrics/job/j"
    assert pushgateway_url("Http://pg.example", "j", {}) == "http://pg.example/metrics/job/j"


def test_a_redirect_is_not_followed(garbage_server: Any) -> None:
    """A redirect (to ftp://, or anywhere) is reported as the gateway's answer, not followed."""
    port = garbage_server(b"HTTP/1.1 302 Found\r\nLocation: ftp://127.0.0.1/x\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(CommandError, match="HTTP 302"):
        run("export_metrics", "--pushgateway", f"127.0.0.1:{port}", "--job", "x", "--method", "post")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--job", ""], "--pushgateway needs --job NAME"),
        (["--job", "x", "--grouping-key", "novalue"], "expected label=value"),
        (["--job", "x", "--grouping-key", "bad-name=1"], "is not a valid label name"),
        (["--job", "x", "--grouping-key", "__reserved=1"], "is not a valid label name"),
        (["--job", "x", "--grouping-key", "job=y"], "give the job with --job"),
        (["--job", "x", "--grouping-key", "a=1", "--grouping-key", "a=2"], "given twice"),
        (["--job", "x", "--timeout", "0"], "--timeout must be a positive number"),
        (["--job", "x", "--timeout", "nan"], "--timeout must be a positive number"),
        (["--job", "x", "--timeout", "inf"], "--timeout must be a positive number"),
        (["--job", "x", "--method", "patch"], "invalid choice"),
    ],
)
def test_bad_push_arguments(args: list[str], message: str) -> None:
    """Bad push arguments are CommandErrors that say what is wrong, before any network traffic."""
    with pytest.raises(CommandError, match=message):
        run("export_metrics", "--pushgateway", "127.0.0.1:1", *args)


# --- snapshot_metrics ---


@pytest.mark.django_db
def test_snapshot_refused_when_storage_is_off() -> None:
    """With METRICS_STORE_IN_DB off, snapshot_metrics stores nothing and fails loudly."""
    with (
        override_settings(METRICS_STORE_IN_DB=False),
        pytest.raises(CommandError, match="METRICS_STORE_IN_DB"),
    ):
        run("snapshot_metrics")
    assert MetricSample.objects.count() == 0


@pytest.mark.django_db
@override_settings(METRICS_STORE_IN_DB=True)
def test_snapshot_stores_every_sample() -> None:
    """One snapshot stores the exposition's samples under one timestamp, without `_created` gauges."""
    collectors.custom_metric_counter.labels(type="snapshot", action="store").inc(7)
    collectors.http_request_duration_seconds.labels(method="GET", view="snap").observe(0.02)
    before = timezone.now()
    out, _ = run("snapshot_metrics")
    rows = list(MetricSample.objects.all())
    assert out == f"Stored {len(rows)} samples.\n"
    assert len({row.taken_at for row in rows}) == 1
    assert rows[0].taken_at >= before
    counter = MetricSample.objects.get(
        name="django_custom_metric_total", labels__type="snapshot", labels__action="store"
    )
    assert counter.value == 7.0
    buckets = MetricSample.objects.filter(
        name="django_http_request_duration_seconds_bucket", labels__view="snap"
    ).count()
    assert buckets == len(collectors.LATENCY_BUCKETS) + 1
    assert not MetricSample.objects.filter(name__endswith="_created").exists()
    expected = sum(
        len(family.samples)
        for family in text_string_to_metric_families(exposition().decode())
        if not family.name.endswith("_created")
    )
    # Process and GC values move between the two expositions; the number of samples does not.
    assert len(rows) == expected


@pytest.mark.django_db
@override_settings(METRICS_STORE_IN_DB=True)
def test_snapshot_prefix_filter() -> None:
    """--prefix keeps exactly the samples whose names start with one of the prefixes."""
    collectors.custom_metric_gauge.labels(type="prefix").set(1.5)
    run("snapshot_metrics")
    everything = set(MetricSample.objects.values_list("name", flat=True))
    MetricSample.objects.all().delete()
    prefixes = ("django_custom_metric_current", "django_http_requests")
    run("snapshot_metrics", "--prefix", prefixes[0], "--prefix", prefixes[1])
    names = set(MetricSample.objects.values_list("name", flat=True))
    assert "django_custom_metric_current" in names
    assert names == {n for n in everything if n.startswith(prefixes)}
    assert len(everything) > len(names)


@pytest.mark.django_db
@override_settings(METRICS_STORE_IN_DB=True)
def test_snapshot_bad_batch_size() -> None:
    """--batch-size below 1 is a CommandError."""
    with pytest.raises(CommandError, match="--batch-size must be at least 1"):
        run("snapshot_metrics", "--batch-size", "0")


# --- cleanup_metrics ---


def make_samples(ages_in_days: dict[float, int]) -> None:
    """Store `count` samples taken `age` days ago for each `age: count` item."""
    now = timezone.now()
    MetricSample.objects.bulk_create(
        MetricSample(taken_at=now - timedelta(days=age), name="t_total", labels={"i": str(i)}, value=float(i))
        for age, count in ages_in_days.items()
        for i in range(count)
    )


class TTY(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        """Claim to be a terminal."""
        return True


@pytest.mark.django_db
def test_cleanup_deletes_only_old_samples() -> None:
    """--days N deletes samples taken more than N days ago and keeps the rest."""
    make_samples({0.5: 3, 2.5: 4, 10: 5})
    out, _ = run("cleanup_metrics", "--days", "2")
    assert out.startswith("Deleted 9 metric samples older than 2 days, taken from ")
    assert MetricSample.objects.count() == 3
    assert not MetricSample.objects.filter(taken_at__lt=timezone.now() - timedelta(days=1)).exists()


@pytest.mark.django_db
def test_cleanup_default_is_the_retention_setting() -> None:
    """Without --days, METRICS_RETENTION_DAYS decides."""
    make_samples({1.5: 2, 3.5: 3, 8: 4})
    with override_settings(METRICS_RETENTION_DAYS=3):
        run("cleanup_metrics")
    assert MetricSample.objects.count() == 2
    with override_settings(METRICS_RETENTION_DAYS=1):
        run("cleanup_metrics")
    assert MetricSample.objects.count() == 0


@pytest.mark.django_db
def test_cleanup_dry_run_deletes_nothing() -> None:
    """--dry-run prints the count and the time range it would delete, and deletes nothing."""
    make_samples({3: 2, 9: 3, 1: 1})
    out, _ = run("cleanup_metrics", "--days", "2", "--dry-run")
    oldest, newest = (
        MetricSample.objects.older_than(timezone.now() - timedelta(days=2))
        .order_by("taken_at")
        .values_list("taken_at", flat=True)[i]
        for i in (0, 4)
    )
    assert out == (
        f"Would delete 5 metric samples older than 2 days, "
        f"taken from {oldest.isoformat()} to {newest.isoformat()}.\n"
    )
    assert MetricSample.objects.count() == 6


@pytest.mark.django_db
def test_cleanup_nothing_to_delete() -> None:
    """With nothing old enough, cleanup says so and succeeds."""
    make_samples({0.1: 2})
    out, _ = run("cleanup_metrics", "--days", "1")
    assert out.startswith("No metric samples older than 1 days")
    assert MetricSample.objects.count() == 2


@pytest.mark.django_db
def test_cleanup_in_batches_with_progress_on_a_terminal() -> None:
    """Rows go batch by batch, one DELETE per batch, with a progress line only on a terminal."""
    make_samples({5: 25})
    tty = TTY()
    with CaptureQueriesContext(connection) as queries:
        call_command("cleanup_metrics", "--days", "1", "--batch-size", "10", stdout=tty)
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].upper().startswith("DELETE")]
    assert len(deletes) == 3
    assert MetricSample.objects.count() == 0
    text = tty.getvalue()
    assert "\rDeleted 10/25 samples\rDeleted 20/25 samples\rDeleted 25/25 samples\n" in text
    make_samples({5: 3})
    out, _ = run("cleanup_metrics", "--days", "1", "--batch-size", "2")
    assert "\r" not in out
    assert out.startswith("Deleted 3 metric samples")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "-1"], "--days must be 0 or more, not -1"),
        (["--days", "99999999"], "--days 99999999 reaches before year 1"),
        (["--days", "seven"], "invalid int value: 'seven'"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_cleanup_bad_arguments(args: list[str], message: str) -> None:
    """Negative days, non-numbers, empty batches and unknown options are CommandErrors."""
    make_samples({30: 1})
    with pytest.raises(CommandError, match=message):
        run("cleanup_metrics", *args)
    assert MetricSample.objects.count() == 1


def test_cleanup_negative_days_from_the_command_line() -> None:
    """On the command line a negative --days exits 1 with the message and no traceback."""
    result = manage("cleanup_metrics", "--days", "-3")
    assert result.returncode == 1
    assert "CommandError: --days must be 0 or more, not -3" in result.stderr
    assert "Traceback" not in result.stderr
