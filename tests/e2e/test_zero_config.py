"""A fresh `startproject` site set up only as README says: right totals under pre-forking servers.

No PROMETHEUS_MULTIPROC_DIR anywhere: workers of gunicorn and `uvicorn --workers` find their
private shared store themselves (metrics.prefork); single-process runs stay in-process.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from metrics import prefork
from tests.promstack import Server, free_port, spawn

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
TOKEN = "zero-config-token"
OFF_WARNING = "METRICS_MULTIPROCESS is off"


def _clean_env(**extra: str) -> dict[str, str]:
    """Return this environment without any setting of ours or Django's, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METRICS_", "PROMETHEUS_", "DJANGO_"))}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a migrated `django-admin startproject mysite`, set up as README's install section says."""
    root = tmp_path_factory.mktemp("zero")
    subprocess.run([str(BIN / "django-admin"), "startproject", "mysite", str(root)], check=True, timeout=60)
    settings = root / "mysite" / "settings.py"
    text = settings.read_text()
    text = text.replace("INSTALLED_APPS = [\n", "INSTALLED_APPS = [\n    'metrics',\n", 1)
    middleware = "    'metrics.middleware.MetricsMiddleware',\n"
    text = text.replace("MIDDLEWARE = [\n", "MIDDLEWARE = [\n" + middleware, 1)
    text += f"\nMETRICS_AUTH_TOKEN = {TOKEN!r}\n"
    settings.write_text(text)
    urls = root / "mysite" / "urls.py"
    text = urls.read_text().replace("from django.urls import path", "from django.urls import include, path")
    route = "    path('metrics/', include('metrics.urls')),\n"
    text = text.replace("urlpatterns = [\n", "urlpatterns = [\n" + route, 1)
    urls.write_text(text)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=root,
        env=_clean_env(),
        check=True,
        timeout=120,
    )
    return root


def _argv(kind: str, site: Path, port: int, *options: str) -> list[str]:
    if kind == "gunicorn":
        # --no-control-socket: gunicorn 23+ shares ~/.gunicorn/gunicorn.ctl between instances.
        return [
            sys.executable, "-m", "gunicorn", "mysite.wsgi", f"--chdir={site}", f"--bind=127.0.0.1:{port}",
            "--no-control-socket", "--graceful-timeout=5", *options,
        ]  # fmt: skip
    return [
        sys.executable, "-m", "uvicorn", "mysite.asgi:application", f"--app-dir={site}", "--host=127.0.0.1",
        f"--port={port}", "--log-level=warning", *options,
    ]  # fmt: skip


@contextmanager
def serving(site: Path, argv_kind: str, *options: str, **env: str) -> Iterator[Server]:
    """Run the site under a server, wait until it answers, stop it and remove its store after."""
    port = free_port()
    log_dir = site / "logs" / f"{argv_kind}-{port}"
    server = spawn(argv_kind, _argv(argv_kind, site, port, *options), log_dir, port, env=_clean_env(**env))
    try:
        server.wait_ready("/admin/login/", timeout=60)
        yield server
    finally:
        directories = store_dirs(server)
        server.stop()
        for directory in directories:
            shutil.rmtree(directory, ignore_errors=True)


def workers(server: Server) -> list[psutil.Process]:
    """Return the server's processes below its master."""
    return psutil.Process(server.process.pid).children(recursive=True)


def store_dirs(server: Server) -> set[str]:
    """Return the directories of the store files that the server's processes hold open."""
    found = set()
    try:
        processes = [psutil.Process(server.process.pid), *workers(server)]
    except psutil.NoSuchProcess:
        return found
    for process in processes:
        fd_dir = f"/proc/{process.pid}/fd"
        try:
            targets = [os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir)]
        except OSError:
            continue
        for target in targets:
            # A slot is published by link(2) from its claim name, which the descriptor keeps.
            if re.search(r"/(slot-\d+\.mrs|\.claim-[^/]*\.tmp)( \(deleted\))?$", target):
                found.add(os.path.dirname(target))
    return found


def load(server: Server, n: int, path: str = "/admin/login/") -> int:
    """Send `n` GET requests from 30 threads; return how many were answered 200."""

    def one(_: int) -> bool:
        try:
            return requests.get(server.url + path, timeout=30).status_code == 200
        except requests.RequestException:
            return False

    with ThreadPoolExecutor(30) as pool:
        return sum(pool.map(one, range(n)))


def login_total(server: Server) -> float:
    """Return `django_http_requests_total{view="admin:login"}` summed over its other labels."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    response = requests.get(server.url + "/metrics/", headers=headers, timeout=30)
    assert response.status_code == 200, response.text[:500]
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "django_http_requests_total" and sample.labels.get("view") == "admin:login"
    )


SERVERS = [
    pytest.param("gunicorn", ("--workers=3", "--max-requests=40"), id="gunicorn -w 3 --max-requests 40"),
    pytest.param("uvicorn", ("--workers=3",), id="uvicorn --workers 3"),
]


@pytest.mark.parametrize(("kind", "options"), SERVERS)
def test_six_scrapes_agree_on_the_total(site: Path, kind: str, options: tuple[str, ...]) -> None:
    """300 concurrent requests: six scrapes in a row show the same total, at least 300."""
    with serving(site, kind, *options) as server:
        answered = load(server, 300)
        assert answered == 300, server.log_tail()
        totals = [login_total(server) for _ in range(6)]
        assert len(set(totals)) == 1, f"scrapes disagree: {totals}"
        assert totals[0] >= 300, totals
        # One store for the whole instance, private to this user, in memory.
        (directory,) = store_dirs(server)
        info = os.lstat(directory)
        assert oct(info.st_mode & 0o7777) == oct(0o700)
        assert info.st_uid == os.geteuid()
        assert directory.startswith(prefork.base_dir())
