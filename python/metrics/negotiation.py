"""Content negotiation of the metrics endpoints: which format and encoding a caller accepts.

Shared by the site's views and the standalone metrics servers (a Celery worker's port, gunicorn's
master), which must not import Django's view machinery.
"""

from __future__ import annotations


def accepted(header: str, wanted: str) -> bool:
    """Return True when `wanted` appears in a comma-separated Accept-style header with q > 0."""
    for part in header.split(","):
        token, *params = part.split(";")
        if token.strip().lower() != wanted:
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def wants_openmetrics(accept: str) -> bool:
    """Return True when the Accept header asks for OpenMetrics text (as Prometheus does)."""
    return accepted(accept, "application/openmetrics-text")


def accepts_gzip(accept_encoding: str) -> bool:
    """Return True when the Accept-Encoding header allows gzip."""
    return accepted(accept_encoding, "gzip")


def prefers_html(accept: str) -> bool:
    """Return True when the Accept header lists HTML (a browser)."""
    return accepted(accept, "text/html")
