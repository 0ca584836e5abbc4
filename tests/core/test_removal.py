"""Multiprocess mode under what prometheus_client's API allows: `clear()`, `remove()`, fork, a lost store.

Each scenario runs the test site (tests.settings) in a fresh interpreter with
PROMETHEUS_MULTIPROC_DIR set, as a gunicorn worker would, and requests go through Django's test
client and the real middleware.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = """
import json, os, shutil, sys
import django
django.setup()
from django.test import Client
from metrics import REGISTRY, collectors
client = Client()
def get(n, path="/ok/"):
    statuses = {client.get(path).status_code for _ in range(n)}
    assert statuses == {200}, statuses
def merged():
    return REGISTRY.get_sample_value(
        "django_http_requests_total", {"method": "GET", "view": "ok", "status": "200"}
    )
def own():
    # This process's own cell, not the merge.
    return collectors.http_requests_total.labels("GET", "ok", "200")._get()
def emit(obj):
    print("RESULT " + json.dumps(obj))
"""


def run(store: Path, code: str) -> object:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        PROMETHEUS_MULTIPROC_DIR=str(store),
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, proc.stdout + proc.stderr
    return json.loads(lines[-1][len("RESULT ") :])


def test_clear_drops_this_process_stored_values_and_counting_goes_on(tmp_path: Path) -> None:
    """`clear()` takes this process's values out of the merge; another live process keeps its own."""
    out = run(
        tmp_path,
        """
        get(3)
        r, w = os.pipe()
        done_r, done_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            get(2)
            os.write(w, b"x")
            os.read(done_r, 1)
            os._exit(0)
        os.read(r, 1)
        before = merged()
        collectors.http_requests_total.clear()
        after_clear = merged()
        get(5)
        emit([before, after_clear, merged(), own()])
        os.write(done_w, b"x")
        os.waitpid(pid, 0)
        """,
    )
    assert out == [5.0, 2.0, 7.0, 5.0]


def test_remove_drops_one_label_set_from_the_merge(tmp_path: Path) -> None:
    """`remove()` of one label set in multiprocess mode: gone from the merge, then counted afresh."""
    out = run(
        tmp_path,
        """
        get(4)
        collectors.http_requests_total.remove("GET", "ok", "200")
        gone = merged()
        get(1)
        emit([gone, merged()])
        """,
    )
    assert out == [None, 1.0]


def test_a_child_forked_after_requests_writes_only_to_its_own_store(tmp_path: Path) -> None:
    """After fork, a warm request recorder writes the child's requests into the child's slot."""
    out = run(
        tmp_path,
        """
        get(3)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            get(2)
            os.write(w, json.dumps(own()).encode())
            os._exit(0)
        child_own = json.loads(os.read(r, 100))
        os.waitpid(pid, 0)
        emit([own(), child_own, merged()])
        """,
    )
    assert out == [3.0, 2.0, 5.0]


def test_a_removed_store_directory_never_fails_a_request_or_a_scrape(tmp_path: Path) -> None:
    """The store directory removed under a running process: requests are served, scrapes answer."""
    out = run(
        tmp_path,
        """
        from metrics import generate_latest
        get(2)
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        get(3)
        get(1, "/echo/")
        text = generate_latest(REGISTRY).decode()
        emit("# TYPE django_http_requests_total counter" in text)
        """,
    )
    assert out is True
