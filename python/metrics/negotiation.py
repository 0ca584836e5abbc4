"""Content negotiation of the metrics endpoints: which format, name escaping and encoding a caller accepts.

Shared by the site's views and the standalone metrics servers (a Celery worker's port, gunicorn's
master), which must not import Django's view machinery.

The formats, in Prometheus's order of preference (its `scrape_protocols`): the protobuf
`MetricFamily` stream, OpenMetrics 1.0.0, OpenMetrics 0.0.1, text 1.0.0, text 0.0.4. The caller's
q-values decide; among equal q-values that order does. Names outside the classic character set
are escaped by the scheme the caller asks for with `escaping=` (Prometheus's `allow-utf-8`,
`underscores`, `dots`, `values`), as prometheus_client's `choose_encoder` reads it: only on
text 1.0.0 and OpenMetrics 1.0.0 (and here on protobuf) does it count; `underscores` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ESCAPING_HEADER_TAG = "escaping"
ALLOWUTF8 = "allow-utf-8"
"""Names as they are; the text formats quote those outside the classic character set."""
UNDERSCORES = "underscores"
"""Every character outside the classic set becomes `_` (the default)."""
DOTS = "dots"
"""`.` becomes `_dot_`, `_` becomes `__`, any other character outside the set `__`."""
VALUES = "values"
"""`U__`, then `_` doubled and other characters as `_<hex code point>_`."""
ESCAPING_SCHEMES = (ALLOWUTF8, UNDERSCORES, DOTS, VALUES)

CONTENT_TYPE_PLAIN_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"
"""Content type of the Prometheus text format 0.0.4."""
CONTENT_TYPE_PLAIN_1_0_0 = "text/plain; version=1.0.0; charset=utf-8"
"""Content type of the Prometheus text format 1.0.0 (0.0.4 with quoted UTF-8 names)."""
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
"""Content type of OpenMetrics 1.0 text."""
PROTOBUF_CONTENT_TYPE = (
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
)
"""Content type of the protobuf format: length-delimited `io.prometheus.client.MetricFamily`."""

_PROTO_TYPE = "application/vnd.google.protobuf"
_PROTO_MESSAGE = "io.prometheus.client.MetricFamily"

Format = Literal["protobuf", "openmetrics", "text"]


@dataclass(frozen=True)
class Exposition:
    """What to answer: the format, how names are escaped, and the Content-Type saying both."""

    format: Format
    escaping: str
    content_type: str

    def encoder_options(self) -> dict[str, Any]:
        """Return the keyword arguments of `metrics.core.exposition` that produce this answer."""
        return {
            "openmetrics": self.format == "openmetrics",
            "protobuf": self.format == "protobuf",
            "escaping": self.escaping,
        }


TEXT_0_0_4 = Exposition("text", UNDERSCORES, CONTENT_TYPE_PLAIN_0_0_4)
"""The answer to a caller that states no preference we serve."""


def _parse(part: str) -> tuple[str, dict[str, str]]:
    """Split one Accept entry into its lower-case media type and its parameters."""
    token, *raw = part.split(";")
    params: dict[str, str] = {}
    for param in raw:
        key, _, value = param.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    return token.strip().lower(), params


def _quality(params: dict[str, str]) -> float:
    try:
        return float(params.get("q", "1"))
    except ValueError:
        return 0.0


def _version(params: dict[str, str]) -> tuple[int, ...] | None:
    try:
        return tuple(int(n) for n in params["version"].split("."))
    except (KeyError, ValueError):
        return None


def _escaping(params: dict[str, str]) -> str:
    value = params.get(ESCAPING_HEADER_TAG, UNDERSCORES)
    return value if value in ESCAPING_SCHEMES else UNDERSCORES


def _candidate(media: str, params: dict[str, str]) -> tuple[int, Exposition] | None:
    """Return (preference rank, answer) for one Accept entry, or None when not served."""
    version = _version(params)
    modern = version is not None and version >= (1, 0, 0)
    if media == _PROTO_TYPE:
        if params.get("proto", _PROTO_MESSAGE) != _PROTO_MESSAGE:
            return None
        if params.get("encoding", "delimited") != "delimited":
            return None
        if ESCAPING_HEADER_TAG in params:
            escaping = _escaping(params)
            return 0, Exposition("protobuf", escaping, f"{PROTOBUF_CONTENT_TYPE}; escaping={escaping}")
        return 0, Exposition("protobuf", UNDERSCORES, PROTOBUF_CONTENT_TYPE)
    if media == "application/openmetrics-text":
        if modern:
            escaping = _escaping(params)
            return 1, Exposition("openmetrics", escaping, f"{OPENMETRICS_CONTENT_TYPE}; escaping={escaping}")
        # No version, or 0.0.1: the same text, with the classic names it promises.
        return (1 if version is None else 2), Exposition("openmetrics", UNDERSCORES, OPENMETRICS_CONTENT_TYPE)
    if media == "text/plain":
        if modern:
            escaping = _escaping(params)
            return 3, Exposition("text", escaping, f"{CONTENT_TYPE_PLAIN_1_0_0}; escaping={escaping}")
        return 4, TEXT_0_0_4
    if media in ("*/*", "text/*"):
        return 5, TEXT_0_0_4
    return None


def negotiate(accept: str) -> Exposition:
    """Return the exposition to answer an Accept header with.

    The acceptable entry (q > 0) with the highest q wins; ties go to Prometheus's order of
    preference. A header naming nothing served here gets text 0.0.4.
    """
    best: tuple[float, int, Exposition] | None = None
    for part in accept.split(","):
        if not part.strip():
            continue
        media, params = _parse(part)
        quality = _quality(params)
        found = _candidate(media, params)
        if found is None or quality <= 0:
            continue
        rank, answer = found
        if best is None or (quality, -rank) > (best[0], -best[1]):
            best = (quality, rank, answer)
    return TEXT_0_0_4 if best is None else best[2]


def accepted(header: str, wanted: str) -> bool:
    """Return True when `wanted` appears in a comma-separated Accept-style header with q > 0."""
    for part in header.split(","):
        media, params = _parse(part)
        if media == wanted:
            return _quality(params) > 0
    return False


def wants_openmetrics(accept: str) -> bool:
    """Return True when the Accept header is answered with OpenMetrics text."""
    return negotiate(accept).format == "openmetrics"


def accepts_gzip(accept_encoding: str) -> bool:
    """Return True when the Accept-Encoding header allows gzip."""
    return accepted(accept_encoding, "gzip")


def prefers_html(accept: str) -> bool:
    """Return True when the Accept header lists HTML (a browser)."""
    return accepted(accept, "text/html")
