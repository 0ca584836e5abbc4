"""The example site under gunicorn in multiprocess mode: exact counts under worker churn."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "example"

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(
    tmp_path: Path, workers: int, max_requests: int, **extra_env: str
) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    mp_dir = tmp_path / "mp"
    mp_dir.mkdir()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "server.settings",
        "PROMETHEUS_MULTIPROC_DIR": str(mp_dir),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "METRICS_ALLOWED_IPS": "127.0.0.1",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": str(workers),
        "GUNICORN_MAX_REQUESTS": str(max_requests),
        "GUNICORN_MAX_REQUESTS_JITTER": str(max_requests // 5),
        **extra_env,
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=EXAMPLE,
        env=env,
        check=True,
        timeout=120,
    )
    log = open(tmp_path / "gunicorn.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"), "server.wsgi"],
        cwd=EXAMPLE,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/metrics/liveness/", timeout=5).status_code == 200:
                    return proc, base, mp_dir
            except requests.RequestException:
                time.sleep(0.1)
        raise AssertionError("gunicorn did not start:\n" + (tmp_path / "gunicorn.log").read_text())
    except BaseException:
        stop(proc)
        raise
    finally:
        log.close()


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def load(base: str, n: int) -> int:
    """Send n GET /about/ requests from 8 threads; return how many got a 200."""

    def one(_: int) -> bool:
        try:
            return requests.get(f"{base}/about/", timeout=10).status_code == 200
        except requests.RequestException:
            return False

    with ThreadPoolExecutor(8) as pool:
        return sum(pool.map(one, range(n)))


def counted(base: str) -> tuple[float, float]:
    text = requests.get(f"{base}/metrics/", timeout=10).text
    total = hist = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.labels.get("view") != "about/":
                continue
            if s.name == "django_http_requests_total":
                total += s.value
            elif s.name == "django_http_request_duration_seconds_count":
                hist += s.value
    return total, hist


def memory_series(base: str) -> list[dict[str, str]]:
    text = requests.get(f"{base}/metrics/", timeout=10).text
    return [
        s.labels
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "django_process_memory_bytes"
    ]


def test_counts_are_exact_under_worker_churn_and_sigkill(tmp_path: Path) -> None:
    """4 workers recycled every ~50 requests, one SIGKILLed mid-run: every served request counted once."""
    proc, base, mp_dir = start_gunicorn(tmp_path, workers=4, max_requests=50)
    try:
        ok = load(base, 1500)
        workers = psutil.Process(proc.pid).children()
        assert workers, "gunicorn has no workers"
        os.kill(workers[0].pid, signal.SIGKILL)
        ok += load(base, 1500)
        total, hist = counted(base)
        assert ok >= 2900, "the load itself failed"
        assert total == ok
        assert hist == ok
        # Dead workers leave no slot behind once folded: only live processes hold slots.
        time.sleep(0.5)
        counted(base)
        live = len(psutil.Process(proc.pid).children())
        assert len(list(mp_dir.glob("slot-*.mrs"))) <= live + 1
        assert (mp_dir / "archive.mrs").exists()
        # Each live worker reports its own process metrics, labelled by its slot, never a pid.
        series = memory_series(base)
        assert series and all(set(labels) == {"slot"} for labels in series), series
        assert len(series) <= live + 1
    finally:
        stop(proc)


def test_every_live_worker_reports_its_memory_before_its_first_request(tmp_path: Path) -> None:
    """A worker that has served nothing yet still shows its own memory, never the zero its
    series was created with: its values are read as soon as it is up, not at its first request."""
    proc, base, _ = start_gunicorn(tmp_path, workers=4, max_requests=0)
    try:
        deadline = time.monotonic() + 30
        while len(psutil.Process(proc.pid).children()) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # every worker has imported the site by now
        text = requests.get(f"{base}/metrics/", timeout=10).text  # served by one worker only
        values = [
            s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
            if s.name == "django_process_memory_bytes"
        ]
        assert len(values) >= 4, text
        assert all(v > 0 for v in values), [line for line in text.splitlines() if "django_process_" in line]
    finally:
        stop(proc)


def test_store_directory_removed_under_a_running_site(tmp_path: Path) -> None:
    """With the store gone: scrapes answer 200, and a worker's exit never stops the master."""
    proc, base, mp_dir = start_gunicorn(tmp_path, workers=2, max_requests=0)
    try:
        assert load(base, 20) == 20
        shutil.rmtree(mp_dir)
        response = requests.get(f"{base}/metrics/", timeout=10)
        assert response.status_code == 200, response.text[:500]
        assert "django_http_requests_total" in response.text
        # The child_exit hook folds the dead worker's slot: the directory is gone, so it fails.
        workers = psutil.Process(proc.pid).children()
        os.kill(workers[0].pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(psutil.Process(proc.pid).children()) < 2:
            assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
            time.sleep(0.2)
        time.sleep(1)
        assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()[-3000:]
        assert load(base, 10) == 10
        log = (tmp_path / "gunicorn.log").read_text()
        assert "dead workers are folded at the next scrape" in log, log[-3000:]
    finally:
        stop(proc)


def hold_worker(address: tuple[str, int], release: threading.Event) -> None:
    """Occupy a sync worker: send a request head a byte every half second until `release`."""
    head = b"GET /about/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"x" * 10_000
    with socket.create_connection(address, timeout=5) as sock:
        for byte in head:
            if release.wait(0.5):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return


def test_export_port_answers_while_every_worker_is_held(tmp_path: Path) -> None:
    """With both sync workers held by slow clients, the master's export port still serves scrapes."""
    export = free_port()
    proc, base, _ = start_gunicorn(
        tmp_path,
        workers=2,
        max_requests=0,
        METRICS_EXPORT_PORT=f"127.0.0.1:{export}",
        METRICS_ALLOWED_IPS="",
        METRICS_AUTH_TOKEN="export-token",
    )
    release = threading.Event()
    holders: list[threading.Thread] = []
    try:
        assert load(base, 30) == 30
        export_url = f"http://127.0.0.1:{export}/metrics"
        assert requests.get(export_url, timeout=5).status_code == 401
        assert requests.get(export_url, headers={"X-Metrics-Token": "wrong"}, timeout=5).status_code == 403
        port = int(base.rsplit(":", 1)[1])
        holders = [
            threading.Thread(target=hold_worker, args=(("127.0.0.1", port), release)) for _ in range(4)
        ]
        for thread in holders:
            thread.start()
        time.sleep(1)
        with pytest.raises(requests.Timeout):
            requests.get(f"{base}/metrics/liveness/", timeout=2)
        for _ in range(10):
            started = time.monotonic()
            response = requests.get(export_url, headers={"Authorization": "Bearer export-token"}, timeout=3)
            assert response.status_code == 200
            assert time.monotonic() - started < 3
            served = sum(
                s.value
                for fam in text_string_to_metric_families(response.text)
                for s in fam.samples
                if s.name == "django_http_requests_total" and s.labels.get("view") == "about/"
            )
            assert served == 30
        assert proc.poll() is None
    finally:
        release.set()
        for thread in holders:
            thread.join()
        stop(proc)


def test_probes_answer_a_pod_ip_host_and_nothing_else_does(tmp_path: Path) -> None:
    """The kubelet's `Host: <pod IP>:<port>` gets the probes; any other path with it still gets 400."""
    proc, base, _ = start_gunicorn(tmp_path, workers=1, max_requests=0)
    try:
        pod = {"Host": "10.1.2.3:8000"}
        live = requests.get(f"{base}/metrics/liveness/", headers=pod, timeout=10)
        assert (live.status_code, live.json()) == (200, {"status": "ok"})
        ready = requests.get(f"{base}/metrics/readiness/", headers=pod, timeout=10)
        assert ready.status_code == 200, ready.text
        # Allowed by address (127.0.0.1), yet no details for a host outside ALLOWED_HOSTS.
        assert all(
            set(check) <= {"status", "latency_ms", "critical"} for check in ready.json()["checks"].values()
        )
        assert requests.get(f"{base}/", headers=pod, timeout=10).status_code == 400
        assert requests.get(f"{base}/metrics/", headers=pod, timeout=10).status_code == 400
        assert requests.get(f"{base}/metrics/health/", headers=pod, timeout=10).status_code == 400
        assert requests.get(f"{base}/metrics/liveness/", timeout=10).status_code == 200
    finally:
        stop(proc)
