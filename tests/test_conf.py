"""Settings: Django settings first, then the environment, then defaults; bad values never raise."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from ipaddress import ip_network

import pytest
from django.test import override_settings

from metrics.conf import (
    SettingError,
    app_settings,
    parse_bool,
    parse_networks,
    parse_non_negative_int,
    parse_paths,
    parse_timeout,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        ("True", True),
        ("true", True),
        (" 1 ", True),
        ("yes", True),
        ("on", True),
        ("False", False),
        ("false", False),
        ("0", False),
        ("no", False),
        ("OFF", False),
    ],
)
def test_parse_bool_reads_python_and_environment_spellings(raw: object, expected: bool) -> None:
    """Booleans, 0/1 and the usual words parse to the boolean they mean."""
    assert parse_bool(raw) is expected


@pytest.mark.parametrize("raw", ["maybe", "2", 2, None, "", [True]])
def test_parse_bool_rejects_anything_else(raw: object) -> None:
    """Anything else is an error naming the value."""
    with pytest.raises(SettingError, match="not a boolean"):
        parse_bool(raw)


def test_parse_networks_reads_strings_and_lists() -> None:
    """Comma-separated strings and lists give the same networks, IPv4, IPv6 and CIDR alike."""
    expected = (ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8"), ip_network("::1/128"))
    assert parse_networks("127.0.0.1, 10.0.0.0/8,::1,") == expected
    assert parse_networks(["127.0.0.1", "10.0.0.0/8", "::1"]) == expected
    assert parse_networks("") == ()


@pytest.mark.parametrize("raw", ["10.0.0.0/33", "localhost", "1.2.3", "::g", 42, ["10.0.0.1", 7]])
def test_parse_networks_rejects_bad_entries(raw: object) -> None:
    """A host name, a bad prefix or a non-string is an error."""
    with pytest.raises(SettingError):
        parse_networks(raw)


def test_numbers_and_paths_are_validated() -> None:
    """Retention must be a whole number >= 0, timeouts in (0, 60], paths must start with '/'."""
    assert parse_non_negative_int("7") == 7
    assert parse_non_negative_int(0) == 0
    for bad in (-1, "-3", "seven", 1.5, True):
        with pytest.raises(SettingError):
            parse_non_negative_int(bad)
    assert parse_timeout("0.5") == 0.5
    for bad in (0, -1, 61, "nan", "soon"):
        with pytest.raises(SettingError):
            parse_timeout(bad)
    assert parse_paths("/metrics/, /static/") == ("/metrics/", "/static/")
    with pytest.raises(SettingError):
        parse_paths("metrics/")


def test_defaults_apply_when_nothing_is_set(env, settings) -> None:
    """With neither setting nor variable, the documented defaults apply (closed access)."""
    for name in ("METRICS_ALLOWED_IPS", "METRICS_AUTH_TOKEN"):
        delattr(settings, name)
    env(
        METRICS_ENABLED=None,
        METRICS_ALLOWED_IPS=None,
        METRICS_AUTH_TOKEN=None,
        PROMETHEUS_MULTIPROC_DIR=None,
        METRICS_STORE_IN_DB=None,
        METRICS_RETENTION_DAYS=None,
        METRICS_TRUSTED_PROXIES=None,
    )
    assert app_settings.ENABLED is True
    assert app_settings.ALLOWED_IPS == ()
    assert app_settings.AUTH_TOKEN == ""
    assert app_settings.MULTIPROC_DIR is None
    assert app_settings.STORE_IN_DB is False
    assert app_settings.RETENTION_DAYS == 7
    assert app_settings.TRUSTED_PROXIES == ()
    assert app_settings.HEALTH_TIMEOUT == 0.8


def test_environment_is_read_when_django_settings_are_silent(env, settings) -> None:
    """The spec's environment variables are parsed, strings included."""
    del settings.METRICS_ALLOWED_IPS
    env(
        METRICS_ENABLED="False",
        METRICS_ALLOWED_IPS="127.0.0.1,10.0.0.0/8",
        METRICS_STORE_IN_DB="1",
        METRICS_RETENTION_DAYS="30",
    )
    assert app_settings.ENABLED is False
    assert app_settings.ALLOWED_IPS == (ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8"))
    assert app_settings.STORE_IN_DB is True
    assert app_settings.RETENTION_DAYS == 30


def test_django_settings_win_over_the_environment(env) -> None:
    """A value in settings.py beats the variable of the same name."""
    env(METRICS_AUTH_TOKEN="from-env", METRICS_ENABLED="0")
    with override_settings(METRICS_AUTH_TOKEN="from-settings", METRICS_ENABLED=True):
        assert app_settings.AUTH_TOKEN == "from-settings"
        assert app_settings.ENABLED is True


def test_an_empty_variable_means_unset(env) -> None:
    """`METRICS_ENABLED=` (as env files write it) keeps the default."""
    env(METRICS_ENABLED="")
    assert app_settings.ENABLED is True


def test_override_settings_is_seen_immediately() -> None:
    """Parsed values are cached, and dropped when a setting changes."""
    assert app_settings.AUTH_TOKEN == "test-token"
    with override_settings(METRICS_AUTH_TOKEN="other"):
        assert app_settings.AUTH_TOKEN == "other"
    assert app_settings.AUTH_TOKEN == "test-token"


def test_bad_values_fall_back_safely_and_are_logged(caplog) -> None:
    """A bad address is skipped (the good ones stay), a bad boolean takes the default."""
    with (
        caplog.at_level(logging.WARNING, logger="metrics"),
        override_settings(METRICS_ALLOWED_IPS="127.0.0.1,not-an-ip", METRICS_ENABLED="perhaps"),
    ):
        assert app_settings.ALLOWED_IPS == (ip_network("127.0.0.1/32"),)
        assert app_settings.ENABLED is True
    assert "METRICS_ALLOWED_IPS" in caplog.text
    assert "METRICS_ENABLED" in caplog.text


def test_excluded_paths_default_to_where_metrics_urls_are_included() -> None:
    """Unset, the metrics endpoints themselves are excluded; set, the setting wins."""
    assert app_settings.excluded_paths() == ("/metrics/",)
    with override_settings(METRICS_EXCLUDE_PATHS=["/static/"]):
        assert app_settings.excluded_paths() == ("/static/",)
    with override_settings(METRICS_EXCLUDE_PATHS=""):
        assert app_settings.excluded_paths() == ()


def test_none_in_settings_means_not_set(env) -> None:
    """`METRICS_X = None` in settings.py defers to the environment, then the default."""
    env(METRICS_ENABLED="0")
    with override_settings(METRICS_ENABLED=None, METRICS_EXCLUDE_PATHS=None):
        assert app_settings.ENABLED is False
        assert app_settings.excluded_paths() == ("/metrics/",)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("METRICS_LATENCY_BUCKETS=0.05,0.2,1", [0.05, 0.2, 1.0, float("inf")]),
        ("METRICS_LATENCY_BUCKETS=not,numbers", None),
    ],
)
def test_latency_buckets_come_from_the_setting(source: str, expected: list[float] | None) -> None:
    """The request-latency histogram takes METRICS_LATENCY_BUCKETS; a bad value keeps the default."""
    import json
    import os
    import subprocess
    import sys

    from metrics.conf import DEFAULT_LATENCY_BUCKETS

    name, value = source.split("=", 1)
    code = (
        "import json, metrics.collectors as c; "
        "print(json.dumps(c.http_request_duration_seconds._upper_bounds))"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env[name] = value
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    bounds = json.loads(out.stdout)
    if expected is None:
        expected = [*DEFAULT_LATENCY_BUCKETS, float("inf")]
        assert "Ignoring bad METRICS_LATENCY_BUCKETS" in out.stderr
    assert bounds == expected


def _bucket(le: str, view: str = "ok") -> float | None:
    from metrics.core import REGISTRY

    labels = {"method": "GET", "view": view, "le": le}
    return REGISTRY.get_sample_value("django_http_request_duration_seconds_bucket", labels)


def test_override_settings_reaches_the_latency_buckets() -> None:
    """A middleware built under override_settings uses its buckets; the old family comes back after it."""
    from django.test import Client

    from metrics import collectors
    from metrics.conf import DEFAULT_LATENCY_BUCKETS

    Client().get("/ok/")
    default_family = collectors.http_request_duration_seconds
    recorded = _bucket("+Inf")
    assert recorded is not None and recorded >= 1
    with override_settings(METRICS_LATENCY_BUCKETS=[0.5, 2]):
        # Swapped as the setting changes: the family exposed now has no series yet.
        assert _bucket("+Inf") is None
        assert collectors.LATENCY_BUCKETS == (0.5, 2.0)
        assert collectors.http_request_duration_seconds._upper_bounds == [0.5, 2.0, float("inf")]
        assert Client().get("/ok/").status_code == 200
        # Only the family of the current buckets is exposed: this request, on these bounds.
        assert _bucket("2.0") == 1
        assert _bucket("+Inf") == 1
        assert _bucket("0.005") is None
    # The family of the default buckets is back, with the series it had.
    assert _bucket("2.0") is None
    assert _bucket("+Inf") == recorded
    assert collectors.http_request_duration_seconds is default_family
    assert default_family._upper_bounds == [*DEFAULT_LATENCY_BUCKETS, float("inf")]


def _python(code: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter without Django settings, with these environment variables."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "METRICS_LATENCY_BUCKETS")
    }
    env.update(variables)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)


def test_a_late_settings_configure_reaches_the_latency_buckets() -> None:
    """Settings configured after metrics.collectors is imported, and after a first look, set the buckets."""
    code = """if True:
        import json
        import metrics.collectors as c
        from django.conf import settings
        from metrics.core import REGISTRY
        before = c.http_request_duration_seconds._upper_bounds
        settings.configure(METRICS_LATENCY_BUCKETS="0.1,1")
        c.http_request_duration_seconds.labels("GET", "v").observe(0.05)
        text = REGISTRY.encode().decode()
        lines = [l for l in text.splitlines() if l.startswith("django_http_request_duration_seconds_b")]
        print(json.dumps([before, c.http_request_duration_seconds._upper_bounds, lines]))
    """
    before, after, lines = json.loads(_python(code).stdout)
    assert before[0] == 0.005
    assert after == [0.1, 1.0, float("inf")]
    assert lines == [
        'django_http_request_duration_seconds_bucket{le="0.1",method="GET",view="v"} 1.0',
        'django_http_request_duration_seconds_bucket{le="1.0",method="GET",view="v"} 1.0',
        'django_http_request_duration_seconds_bucket{le="+Inf",method="GET",view="v"} 1.0',
    ]


def test_importing_the_catalogue_reads_no_setting() -> None:
    """A bad METRICS_LATENCY_BUCKETS is read (and warned about) when the histogram is used, not at import."""
    code = """if True:
        import sys
        import metrics.collectors as c
        print("imported", file=sys.stderr, flush=True)
        c.http_request_duration_seconds
    """
    err = _python(code, METRICS_LATENCY_BUCKETS="0.5,0.1").stderr
    imported, _, used = err.partition("imported\n")
    assert "Ignoring bad METRICS_LATENCY_BUCKETS" not in imported
    assert "Ignoring bad METRICS_LATENCY_BUCKETS" in used


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", None),
        (0, None),
        (9100, ("0.0.0.0", 9100)),
        ("9100", ("0.0.0.0", 9100)),
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("[::1]:9100", ("::1", 9100)),
    ],
)
def test_export_port_forms(value: object, expected: object) -> None:
    """A port alone listens everywhere; host:port and [v6]:port bind one address; 0/empty is off."""
    from metrics.conf import parse_export_address

    assert parse_export_address(value) == expected


def test_middleware_settings_slot_is_cleared_when_settings_change() -> None:
    """The slot the middleware keeps its rules in is emptied, not replaced, when a setting changes."""
    cache, key = app_settings.middleware_settings_slot()
    cache[key] = marker = object()
    assert app_settings.middleware_settings_slot()[0][key] is marker
    with override_settings(METRICS_ENABLED=False):
        # The same dict, cleared: the pair the middleware holds stays valid.
        assert app_settings.middleware_settings_slot()[0] is cache
        assert key not in cache
        assert app_settings.middleware_settings()[0] is False
    assert key not in cache
    assert app_settings.middleware_settings()[0] is True


def test_the_docs_table_is_the_one_the_declarations_make() -> None:
    """The docs table is `settings_table()`: no row without a setting, no setting without its row."""
    from pathlib import Path

    from metrics.conf import settings_table

    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    begin = "<!-- settings table: generated from python/metrics/conf.py by scripts/settings_table.py -->\n"
    _, found, rest = doc.partition(begin)
    assert found, "the table's opening marker is missing"
    table, found, _ = rest.partition("<!-- end of the settings table -->\n")
    assert found, "the table's closing marker is missing"
    # On a failure: run `.venv/bin/python scripts/settings_table.py`.
    assert table == settings_table()


def test_every_setting_has_its_own_check_id_and_row() -> None:
    """Check ids are distinct, and each setting and environment-only variable has one row."""
    from metrics.conf import ENVIRONMENT_ONLY, SETTINGS, AppSettings, settings_table

    ids = [setting.check for setting in SETTINGS.values()]
    assert len(ids) == len(set(ids)) == 26
    rows = [line.split("`")[1] for line in settings_table().splitlines()[2:]]
    assert rows == [*SETTINGS, *(variable.name for variable in ENVIRONMENT_ONLY)]
    # Read on the class, a setting is its declaration; on the instance, its parsed value.
    assert AppSettings.ENABLED is SETTINGS["METRICS_ENABLED"]
    assert app_settings.ENABLED is True


def test_settings_are_read_only_on_the_instance() -> None:
    """Assigning a setting raises, as the properties it replaced did, instead of shadowing it."""
    with pytest.raises(AttributeError, match="METRICS_ENABLED is read-only"):
        app_settings.ENABLED = False  # type: ignore[assignment]
    assert app_settings.ENABLED is True


def test_every_environment_variable_the_package_reads_is_declared() -> None:
    """Each variable python/metrics reads from os.environ is a declared setting or environment-only one."""
    import re
    from pathlib import Path

    import metrics
    from metrics.conf import ENVIRONMENT_ONLY, SETTINGS

    read = set()
    for path in Path(metrics.__file__).parent.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        read.update(
            re.findall(r"""(?:environ(?:\.get)?\(|environ\[|getenv\()\s*["']([A-Z][A-Z0-9_]*)["']""", text)
        )
    # Django's own, read to know whether settings can be loaded.
    read.discard("DJANGO_SETTINGS_MODULE")
    assert "PROMETHEUS_DISABLE_CREATED_SERIES" in read
    assert read <= set(SETTINGS) | {variable.name for variable in ENVIRONMENT_ONLY}
