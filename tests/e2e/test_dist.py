"""The wheel as users install it: into a fresh virtualenv, without a Rust toolchain, serving a site.

`make test` builds it first (`make dist`); the wheel under test is the one file in `dist/`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_multiprocess_gunicorn import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

SETTINGS = """
SECRET_KEY = "dist-test"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "metrics"]
MIDDLEWARE = ["metrics.middleware.MetricsMiddleware"]
ROOT_URLCONF = "site_urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}}
USE_TZ = True
METRICS_AUTH_TOKEN = "dist-token"
"""

URLS = """
from django.http import HttpResponse
from django.urls import include, path

def hello(request):
    return HttpResponse("hello")

urlpatterns = [path("hello/", hello), path("metrics/", include("metrics.urls"))]
"""


def the_wheel() -> Path:
    wheels = sorted((ROOT / "dist").glob("*.whl"))
    assert len(wheels) == 1, f"expected one wheel in dist/ (make dist), found {wheels}"
    return wheels[0]


def without_rust(path: str) -> str:
    """Return PATH without the directories that hold cargo or rustc."""
    kept = [d for d in path.split(os.pathsep) if d and not (Path(d) / "cargo").exists()]
    kept = [d for d in kept if not (Path(d) / "rustc").exists()]
    return os.pathsep.join(kept)


def test_wheel_is_abi3_and_carries_no_sources() -> None:
    """One wheel for every CPython from 3.10 on, holding the compiled core and the package."""
    wheel = the_wheel()
    assert "-cp310-abi3-" in wheel.name, wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert "metrics/_core.abi3.so" in names, names
    assert "metrics/py.typed" in names and "metrics/_core.pyi" in names
    assert not [n for n in names if n.endswith(".rs")]


def test_installed_wheel_serves_a_site_without_rust(tmp_path: Path) -> None:
    """pip installs the wheel with no Rust toolchain on PATH; gunicorn serves a page and a scrape."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PROMETHEUS_", "DJANGO_"))}
    env["PATH"] = without_rust(os.environ["PATH"])
    env.pop("PYTHONPATH", None)
    assert shutil.which("cargo", path=env["PATH"]) is None
    assert shutil.which("rustc", path=env["PATH"]) is None
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", str(the_wheel()), "gunicorn"],
        check=True,
        env=env,
        timeout=600,
    )
    site = tmp_path / "site"
    site.mkdir()
    (site / "site_settings.py").write_text(SETTINGS)
    (site / "site_urls.py").write_text(textwrap.dedent(URLS))
    env.update(DJANGO_SETTINGS_MODULE="site_settings", PYTHONPATH=str(site))
    where = subprocess.run(
        [python, "-c", "import metrics._core as c; print(c.__file__)"],
        check=True,
        env=env,
        cwd=site,
        capture_output=True,
        text=True,
    ).stdout
    assert str(venv) in where, where
    subprocess.run([python, "-m", "django", "migrate", "-v0"], check=True, env=env, cwd=site, timeout=120)
    port = free_port()
    log = open(tmp_path / "gunicorn.log", "wb")
    server = subprocess.Popen(
        [
            python,
            "-m",
            "gunicorn",
            "-w",
            "1",
            "-b",
            f"127.0.0.1:{port}",
            "django.core.wsgi:get_wsgi_application()",
        ],
        env=env,
        cwd=site,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                page = requests.get(f"{base_url}/hello/", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
                time.sleep(0.2)
        assert page.status_code == 200 and page.text == "hello"
        assert requests.get(f"{base_url}/metrics/", timeout=5).status_code == 401
        scrape = requests.get(f"{base_url}/metrics/", headers={"X-Metrics-Token": "dist-token"}, timeout=5)
        assert scrape.status_code == 200
        counted = [
            s
            for fam in text_string_to_metric_families(scrape.text)
            for s in fam.samples
            if s.name == "django_http_requests_total" and s.labels.get("view") == "hello/"
        ]
        assert [(s.labels["method"], s.labels["status"], s.value) for s in counted] == [("GET", "200", 1.0)]
    finally:
        server.terminate()
        server.wait(timeout=15)
        log.close()


def test_declared_ranges_match_the_matrix() -> None:
    """pyproject's requires-python, Django bound and classifiers say what `make matrix` proves."""
    import tomllib

    import noxfile

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pythons = sorted(
        {p for ps in noxfile.DJANGO_PYTHONS.values() for p in ps}, key=lambda v: tuple(map(int, v.split(".")))
    )
    djangos = sorted(noxfile.DJANGO_PYTHONS, key=lambda v: tuple(map(int, v.split("."))))
    assert project["requires-python"] == f">={pythons[0]}"
    assert f"Django>={djangos[0]}" in project["dependencies"]
    classifiers = project["classifiers"]
    assert sorted(
        c.rsplit(" ", 1)[1] for c in classifiers if c.startswith("Programming Language :: Python :: 3.")
    ) == sorted(pythons)
    assert sorted(
        c.rsplit(" ", 1)[1] for c in classifiers if c.startswith("Framework :: Django :: ")
    ) == sorted(djangos)
