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
import math
import re
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

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


def pushgateway_url(address: str, job: str, grouping_key: dict[str, str]) -> str:
    """Return the Pushgateway URL of one group: `/metrics/job/<job>{/<label>/<value>}`."""
    base = address if "://" in address else f"http://{address}"
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
            "--pushgateway", metavar="HOST:PORT", help="Push to this Pushgateway (http:// is assumed)."
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
            with urllib.request.urlopen(request, timeout=options["timeout"]) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()
            raise CommandError(
                f"Pushgateway refused {method} {url}: HTTP {exc.code} {exc.reason}"
                + (f": {detail}" if detail else "")
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CommandError(f"Could not reach the Pushgateway for {method} {url}: {reason}") from exc
        if options["verbosity"] >= 1:
            size = f"{len(body)} bytes" if body is not None else "group deleted"
            self.stdout.write(f"{method} {url}: HTTP {status} ({size})")
