"""Real Prometheus, Pushgateway and gunicorn processes for the tests, on free loopback ports.

Every server gets its own port and temporary directory and is stopped (SIGTERM, then SIGKILL) at
teardown, so parallel runs never meet, and the Debian system services on 9090/9091 are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example"
T = TypeVar("T")


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def executable(name: str, package: str) -> str:
    """Return the path of a system executable, failing the test loudly when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: run `make system-deps` (Debian package {package})")
    return path


def site_env(workdir: Path, token: str, **extra: str) -> dict[str, str]:
    """Return the environment of one example site: its SQLite database and shared store in `workdir`.

    Nobody is allowed by address, so every scrape must present `token`. `extra` adds or
    replaces variables (ports, workers, a superuser's password).
    """
    store = workdir / "multiproc"
    store.mkdir(parents=True)
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "server.settings",
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "METRICS_AUTH_TOKEN": token,
        "METRICS_ALLOWED_IPS": "",
        "PROMETHEUS_MULTIPROC_DIR": str(store),
        "PYTHONPATH": os.pathsep.join([str(EXAMPLE), str(ROOT / "python")]),
        **extra,
    }


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Call `check` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, ValueError, KeyError) as exc:
            last_error = exc
        else:
            if result:
                return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET `url` and return (status, body), HTTP errors included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Server:
    """A child process serving HTTP on 127.0.0.1:`port`."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    workdir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """Return `127.0.0.1:<port>`."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Return the base URL."""
        return f"http://{self.address}"

    def log_tail(self, lines: int = 40) -> str:
        """Return the end of the server's log, for assertion messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, path: str, timeout: float = 30.0) -> None:
        """Wait until GET `path` answers below 500, failing with the log when the process dies."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            status, _ = http_get(self.url + path, timeout=2)
            return status < 500

        try:
            wait_for(ready, timeout, f"{self.name} on {self.address}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None

    def stop(self) -> None:
        """Stop the process group (SIGTERM, SIGKILL after 10 s) and reap it."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def spawn(name: str, argv: list[str], workdir: Path, port: int, env: dict[str, str] | None = None) -> Server:
    """Start `argv` in its own process group with output to `<workdir>/<name>.log`."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    return Server(name=name, process=process, port=port, log=log, workdir=workdir)


def start_pushgateway(workdir: Path) -> Server:
    """Start a Pushgateway without persistence on a free port and wait until it answers."""
    port = free_port()
    server = spawn(
        "pushgateway",
        [
            executable("prometheus-pushgateway", "prometheus-pushgateway"),
            f"--web.listen-address=127.0.0.1:{port}",
            "--persistence.file=",
            "--log.level=warn",
        ],
        workdir,
        port,
    )
    server.wait_ready("/-/ready")
    return server


def start_prometheus(
    config: str, workdir: Path, rule_files: dict[str, str] | None = None, flags: tuple[str, ...] = ()
) -> Server:
    """Write `config` (and rule files beside it) to `workdir` and start Prometheus on a free port."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(config)
    for name, text in (rule_files or {}).items():
        (workdir / name).write_text(text)
    port = free_port()
    server = spawn(
        "prometheus",
        [
            executable("prometheus", "prometheus"),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
            *flags,
        ],
        workdir,
        port,
    )
    server.wait_ready("/-/ready")
    return server


def start_gunicorn(app: str, workdir: Path, env: dict[str, str], chdir: Path, workers: int = 1) -> Server:
    """Start gunicorn serving `app` (`module:callable`) from `chdir`, with exactly `env`."""
    port = free_port()
    return spawn(
        "gunicorn",
        [
            sys.executable,
            "-m",
            "gunicorn",
            app,
            f"--bind=127.0.0.1:{port}",
            f"--workers={workers}",
            f"--chdir={chdir}",
            "--access-logfile=-",
            "--graceful-timeout=5",
            # gunicorn 23+ listens on ~/.gunicorn/gunicorn.ctl by default: one path shared by every
            # gunicorn of the machine, so parallel test servers would fight over it.
            "--no-control-socket",
        ],
        workdir,
        port,
        env=env,
    )


def prom_query(prometheus: Server, expr: str, time_: float | None = None) -> dict[str, Any]:
    """Run an instant query through Prometheus's HTTP API and return its decoded JSON answer."""
    params = {"query": expr}
    if time_ is not None:
        params["time"] = f"{time_:.3f}"
    url = f"{prometheus.url}/api/v1/query?{urllib.parse.urlencode(params)}"
    status, body = http_get(url, timeout=10)
    answer: dict[str, Any] = json.loads(body)
    answer["http_status"] = status
    return answer
