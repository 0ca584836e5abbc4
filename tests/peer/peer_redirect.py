"""pytest plugin: prometheus_client's own test suite, run against this package's metric classes.

`make peer-tests` downloads the prometheus_client sdist of the version pinned in
requirements-dev.txt (its `tests/` ship with it), and runs its core and exposition tests with
this plugin loaded (`-p peer_redirect`). Before any test module is imported, the seven classes
a user imports from prometheus_client are replaced, in `prometheus_client` and
`prometheus_client.core`, by this package's: every test that constructs a metric or a registry
exercises ours. Nothing of prometheus_client's is copied here.

Tests that check prometheus_client's internals, with no meaning for another implementation, are
deselected by name in DESELECTED, each with its reason; the list is printed with the results.
"""

from __future__ import annotations

from typing import Any

import prometheus_client
import prometheus_client.core

import metrics.core as ours

REDIRECTED = ("CollectorRegistry", "Counter", "Gauge", "Histogram", "Summary", "Info", "Enum")

for _module in (prometheus_client, prometheus_client.core):
    for _name in REDIRECTED:
        setattr(_module, _name, getattr(ours, _name))

# test id (as pytest prints it, without the file) -> why it has no meaning here.
_REPR = "repr() names our class (`metrics._core.Gauge(g)`), not prometheus_client's."
DESELECTED: dict[str, str] = {
    "TestWsgiTLS::test_mtls_untrusted_client_cert_raises": (
        "prometheus_client's TLS server, untouched by the redirect; flaky on this OpenSSL without it too "
        "(the refused handshake surfaces as SSLEOFError in 2 runs of 3)"
    ),
    "TestCounter::test_repr": _REPR,
    "TestGauge::test_repr": _REPR,
    "TestSummary::test_repr": _REPR,
    "TestHistogram::test_repr": _REPR,
    "TestInfo::test_repr": _REPR,
}


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Deselect the tests of DESELECTED."""
    keep, drop = [], []
    for item in items:
        (drop if item.nodeid.split("::", 1)[-1] in DESELECTED else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the deselected tests and why."""
    terminalreporter.section("deselected: prometheus_client internals")
    for test, reason in DESELECTED.items():
        terminalreporter.write_line(f"{test}: {reason}")
