"""Content negotiation of the metrics endpoints: OpenMetrics when acceptable, gzip when allowed."""

from __future__ import annotations

import pytest

from metrics.negotiation import accepts_gzip, wants_openmetrics


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("", False),
        ("text/plain", False),
        ("application/openmetrics-text", True),
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", True),
        ("APPLICATION/OPENMETRICS-TEXT;q=0.5", True),
        ("application/openmetrics-text;q=0", False),
        ("text/plain;q=1, application/openmetrics-text;q=0.1", True),
    ],
)
def test_accept_parsing(accept: str, expected: bool) -> None:
    """OpenMetrics is chosen whenever it is acceptable at all (q > 0)."""
    assert wants_openmetrics(accept) is expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [("", False), ("gzip", True), ("br, gzip;q=0.8", True), ("gzip;q=0", False), ("deflate", False)],
)
def test_accept_encoding_parsing(header: str, expected: bool) -> None:
    """gzip is used when listed with q > 0."""
    assert accepts_gzip(header) is expected
