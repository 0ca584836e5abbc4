"""Print the exposition, or push it to a Prometheus Pushgateway.

What is exported is what `/metrics/` of *this process* would serve: the values held by the
process running the command, plus, in multiprocess mode (`PROMETHEUS_MULTIPROC_DIR` set), the
merged values of every worker that wrote to that directory. A `manage.py` process started by cron
has served no request, so without a multiprocess directory its HTTP counters are all zero: push
from a batch job the metrics that job produced, or point the command at the site's multiprocess
directory.
"""

from __future__ import annotations

import base64
import http.client
import math
import re
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlsplit

from django.core.management.base import BaseCommand, CommandError, CommandParser

from metrics.core import exposition

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
METHODS = {"put": "PUT", "post": "POST", "delete": "DELETE"}


def escape_grouping_pair(name: str, value: str) -> str:
    """Return `name/value` as a Pushgateway URL path segment pair.

    Values that contain `/` (or are empty) cannot be path segments, so they take the
    `name@base64/<urlsafe base64>` form the Pushgateway decodes (since 0.9.0).
    """
    if value == "":
        return f"{name}@base64/="
    if "/" in value:
        return f"{name}@base64/{base64.urlsafe_b64encode(value.encode()).decode()}"
    return f"{name}/{quote(value, safe='')}"


SCHEMES = frozenset({"http", "https"})


def gateway_base(address: str) -> str:
    """Return the base URL of the Pushgateway at `address` (`host:port` or an http(s) URL).

    Raise CommandError for any other scheme (`file://`, `ftp://` would read or write elsewhere
    than a Pushgateway), spaces or control characters, a missing host, or a port that is not a
    number from 0 to 65535.
    """
    base = address.strip()
    if any(char.isspace() or not char.isprintable() for char in base):
        # urlsplit silently drops tabs and newlines, urllib refuses them later: say so now.
        raise CommandError(f"--pushgateway {address!r} contains spaces or control characters")
    if "://" not in base:
        base = f"http://{base}"
    try:
        parts = urlsplit(base)
        # Read lazily by urlsplit: a bad port (`host:abc`, `host:99999`) raises here.
        _ = parts.port
    except ValueError as exc:
        raise CommandError(f"--pushgateway {address!r} is not a valid address: {exc}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise CommandError(f"--pushgateway {address!r}: only http:// and https:// are supported")
    if not parts.hostname:
        raise CommandError(f"--pushgateway {address!r} names no host")
    if parts.query or parts.fragment:
        raise CommandError(f"--pushgateway {address!r}: give the address without a query or fragment")
    # urllib finds its handler by the scheme as written: `HTTP://` would be an unknown type.
    return parts.scheme.lower() + base[len(parts.scheme) :]


def pushgateway_url(address: str, job: str, grouping_key: dict[str, str]) -> str:
    """Return the Pushgateway URL of one group: `/metrics/job/<job>{/<label>/<value>}`."""
    base = gateway_base(address)
    path = "/metrics/" + escape_grouping_pair("job", job)
    for name, value in grouping_key.items():
        path += "/" + escape_grouping_pair(name, value)
    return base.rstrip("/") + path


def parse_grouping_key(pairs: list[str]) -> dict[str, str]:
    """Turn `["k=v", ...]` into a dict, refusing bad label names and repeated names."""
    key: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise CommandError(f"--grouping-key {pair!r}: expected label=value")
        if not LABEL_NAME.match(name) or name.startswith("__"):
            raise CommandError(f"--grouping-key {pair!r}: {name!r} is not a valid label name")
        if name == "job":
            raise CommandError("--grouping-key job=...: give the job with --job")
        if name in key:
            raise CommandError(f"--grouping-key {name!r} is given twice")
        key[name] = value
    return key


class Command(BaseCommand):
    """Print the metrics exposition to stdout, or push it to a Pushgateway."""

    help = (
        "Print the Prometheus exposition of this process (the merged multiprocess directory when "
        "PROMETHEUS_MULTIPROC_DIR is set), or push it to a Pushgateway."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """Declare --print, --pushgateway and the push options."""
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--print", action="store_true", help="Write the text exposition to stdout.")
        target.add_argument(
            "--pushgateway",
            metavar="HOST:PORT",
            help="Push to this Pushgateway: host:port (http:// is assumed) or an http:// or https:// URL.",
        )
        parser.add_argument("--job", help="Job label of the pushed group (required with --pushgateway).")
        parser.add_argument(
            "--grouping-key",
            action="append",
            default=[],
            metavar="LABEL=VALUE",
            help="Extra grouping label, e.g. instance=web1 (repeatable).",
        )
        parser.add_argument(
            "--method",
            choices=sorted(METHODS),
            default="put",
            help="put: replace the whole group (default); post: replace only the pushed metric "
            "families; delete: remove the group.",
        )
        parser.add_argument(
            "--timeout", type=float, default=10.0, help="Seconds to wait for the Pushgateway (default 10)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Print or push."""
        if options["print"]:
            self.stdout.write(exposition().decode(), ending="")
            return
        self.push(options)

    def push(self, options: dict[str, Any]) -> None:
        """Send the exposition to the Pushgateway with the chosen method."""
        job = options["job"]
        if not job:
            raise CommandError("--pushgateway needs --job NAME")
        if not (math.isfinite(options["timeout"]) and options["timeout"] > 0):
            raise CommandError(f"--timeout must be a positive number of seconds, not {options['timeout']}")
        url = pushgateway_url(options["pushgateway"], job, parse_grouping_key(options["grouping_key"]))
        method = METHODS[options["method"]]
        body = None if method == "DELETE" else exposition()
        request = urllib.request.Request(url, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", TEXT_CONTENT_TYPE)
        try:
            with _OPENER.open(request, timeout=options["timeout"]) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            raise CommandError(
                f"Pushgateway refused {method} {url}: HTTP {exc.code} {_one_line(exc.reason)}" + _detail(exc)
            ) from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            # URLError (refused, unknown host, timeout while connecting), HTTPException
            # (BadStatusLine, RemoteDisconnected, InvalidURL, IncompleteRead: a server that does
            # not speak HTTP), OSError (reset, timeout while reading), ValueError (a URL urllib
            # cannot use): all mean the push did not happen.
            raise CommandError(f"Could not reach the Pushgateway for {method} {url}: {_reason(exc)}") from exc
        if options["verbosity"] >= 1:
            size = f"{len(body)} bytes" if body is not None else "group deleted"
            self.stdout.write(f"{method} {url}: HTTP {status} ({size})")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: a Pushgateway never sends one, and urllib would follow them to ftp://."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# Without the default handlers for file:, ftp: and data: URLs: only http(s) is ever opened.
_OPENER = urllib.request.OpenerDirector()
for _handler in (
    urllib.request.ProxyHandler(),
    urllib.request.HTTPHandler(),
    urllib.request.HTTPSHandler(),
    urllib.request.HTTPDefaultErrorHandler(),
    urllib.request.HTTPErrorProcessor(),
    _NoRedirect(),
):
    _OPENER.add_handler(_handler)


def _one_line(text: object, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, BaseException):
        text = _one_line(reason)
        # Some carry no message (RemoteDisconnected can, BadStatusLine shows only the bytes).
        return f"{type(reason).__name__}: {text}" if text else type(reason).__name__
    return _one_line(reason)


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        # The Pushgateway explains a refusal in the body (every clashing sample): keep it, bounded.
        detail = _one_line(exc.read(8192).decode(errors="replace"), limit=8192)
    except (http.client.HTTPException, OSError):
        return ""
    return f": {detail}" if detail else ""
