"""A fresh `startproject` site set up only as README says: right totals under pre-forking servers.

No PROMETHEUS_MULTIPROC_DIR anywhere: workers of gunicorn and `uvicorn --workers` find their
private shared store themselves (metrics.prefork); single-process runs stay in-process.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
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
        app = "mysite.asgi:application" if any("UvicornWorker" in o for o in options) else "mysite.wsgi"
        # --no-control-socket: gunicorn 23+ shares ~/.gunicorn/gunicorn.ctl between instances.
        return [
            sys.executable, "-m", "gunicorn", app, f"--chdir={site}", f"--bind=127.0.0.1:{port}",
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


def dirs_named_for(server: Server) -> list[str]:
    """Return the instance directories named for one of the server's processes."""
    pids = {str(server.process.pid), *(str(p.pid) for p in workers(server))}
    return [
        name
        for name in os.listdir(prefork.base_dir())
        if name.startswith("metrics-") and name.split("-")[-2] in pids
    ]


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
    # The master loads the site before forking: it makes the store, its workers inherit it.
    pytest.param("gunicorn", ("--workers=3", "--max-requests=40", "--preload"), id="gunicorn --preload"),
    # One worker still loses its counts when recycled, unless they are in a shared store.
    pytest.param("gunicorn", ("--workers=1", "--max-requests=25"), id="gunicorn -w 1 --max-requests 25"),
    pytest.param(
        "gunicorn",
        ("--workers=2", "--worker-class=uvicorn.workers.UvicornWorker"),
        id="gunicorn uvicorn workers",
    ),
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
        # Named for the master (gunicorn's arbiter, uvicorn's supervisor): the process we started.
        assert dirs_named_for(server) == [os.path.basename(directory)]
        assert os.path.basename(directory).split("-")[-2] == str(server.process.pid)


def test_two_instances_side_by_side_never_share_a_store(site: Path) -> None:
    """Two gunicorns of the same site, same user: separate directories, separate totals."""
    with (
        serving(site, "gunicorn", "--workers=2") as first,
        serving(site, "gunicorn", "--workers=2") as second,
    ):
        assert load(first, 40) == 40
        first_dirs, second_dirs = store_dirs(first), store_dirs(second)
        assert len(first_dirs) == 1 and len(second_dirs) == 1, (first_dirs, second_dirs)
        assert first_dirs != second_dirs
        first_total, second_total = login_total(first), login_total(second)
        # The second saw only its own readiness polls.
        assert first_total >= 40
        assert second_total < 40
        assert [login_total(second) for _ in range(4)] == [second_total] * 4


def test_a_dead_instance_directory_is_removed_when_a_new_one_starts(site: Path) -> None:
    """A server killed outright leaves its directory; the next instance's first worker removes it."""
    with serving(site, "gunicorn", "--workers=2") as dead:
        (left_behind,) = store_dirs(dead)
        # SIGKILL the whole group: no process gets to tidy up.
        os.killpg(dead.process.pid, signal.SIGKILL)
        dead.process.wait(timeout=10)
    assert os.path.isdir(left_behind)
    # A symlink under a dead instance's name is never followed: its target survives.
    target = site / "not-a-store"
    target.mkdir()
    (target / "keep").write_text("x")
    planted = Path(left_behind + "0")
    planted.symlink_to(target)
    try:
        with serving(site, "gunicorn", "--workers=2") as new:
            assert store_dirs(new) and left_behind not in store_dirs(new)
            assert not os.path.exists(left_behind)
            assert (target / "keep").exists()
    finally:
        planted.unlink(missing_ok=True)


def test_runserver_and_management_commands_stay_in_process(site: Path) -> None:
    """`manage.py runserver` (with its autoreloader) and a management command use no shared store."""
    port = free_port()
    argv = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}"]
    server = spawn("runserver", argv, site, port, env=_clean_env())
    try:
        server.wait_ready("/admin/login/", timeout=60)
        assert load(server, 20) == 20
        assert login_total(server) >= 20
        assert store_dirs(server) == set()
        assert dirs_named_for(server) == []
    finally:
        server.stop()
    printed = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from metrics import core; print(core.multiprocess_dir())",
        ],
        cwd=site,
        env=_clean_env(),
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Django 5.2's shell first says what it imported.
    assert printed.stdout.splitlines()[-1] == "None", printed.stderr


def test_off_logs_one_warning_and_keeps_workers_apart(site: Path) -> None:
    """`METRICS_MULTIPROCESS=off` under gunicorn: no shared store, one warning at the first request."""
    with serving(site, "gunicorn", "--workers=1", METRICS_MULTIPROCESS="off") as server:
        assert load(server, 30) == 30
        assert store_dirs(server) == set()
        log = server.log.read_text()
        assert log.count(OFF_WARNING) == 1, log


LIBRARY = """
from django.http import HttpResponse
from prometheus_client import Counter

HITS = Counter("library_hits", "Hits a library counts through prometheus_client.")


def hit(request):
    HITS.inc()
    return HttpResponse("ok")
"""


def test_prometheus_client_metrics_of_a_library_take_part(site: Path, tmp_path: Path) -> None:
    """A prometheus_client counter of the site's code adds up over workers, recycled ones included."""
    copy = tmp_path / "site"
    shutil.copytree(site, copy, ignore=shutil.ignore_patterns("logs"))
    (copy / "mysite" / "library.py").write_text(LIBRARY)
    urls = copy / "mysite" / "urls.py"
    text = urls.read_text().replace(
        "urlpatterns = [\n", "urlpatterns = [\n    path('library/', library.hit),\n", 1
    )
    urls.write_text("from mysite import library\n" + text)
    with serving(copy, "gunicorn", "--workers=3", "--max-requests=20") as server:
        assert load(server, 100, "/library/") == 100
        headers = {"Authorization": f"Bearer {TOKEN}"}
        totals = []
        for _ in range(6):
            text = requests.get(server.url + "/metrics/", headers=headers, timeout=30).text
            totals.append(
                sum(
                    sample.value
                    for family in text_string_to_metric_families(text)
                    for sample in family.samples
                    if sample.name == "library_hits_total"
                )
            )
        assert totals == [100.0] * 6


def test_the_export_port_of_deploy_gunicorn_conf_serves_the_same_totals(site: Path) -> None:
    """deploy/gunicorn.conf.py's master export port, without a directory: the workers' merged totals."""
    export = free_port()
    conf = Path(__file__).resolve().parents[2] / "deploy" / "gunicorn.conf.py"
    options = (f"--config={conf}", "--workers=2", "--max-requests=30")
    env = {"METRICS_EXPORT_PORT": f"127.0.0.1:{export}", "DJANGO_SETTINGS_MODULE": "mysite.settings"}
    with serving(site, "gunicorn", *options, **env) as server:
        assert load(server, 100) == 100
        on_site = login_total(server)
        exported = login_total(Server("export", server.process, export, server.log, server.workdir))
        assert on_site == exported >= 100
        assert len(store_dirs(server)) == 1


def test_uvicorn_without_workers_stays_in_process(site: Path) -> None:
    """One uvicorn process: no shared store, no directory."""
    with serving(site, "uvicorn") as server:
        assert load(server, 20) == 20
        assert login_total(server) >= 20
        assert store_dirs(server) == set()
        assert dirs_named_for(server) == []
