"""Instructions per request added by the middleware, counted by callgrind: no clock, no noise.

Each stack (bare Django, ours default, compat on, exemplars on with a `traceparent`) serves
requests through a `WSGIHandler` (CommonMiddleware and a one-line view) in a child interpreter
under `valgrind --tool=callgrind`, with `PYTHONHASHSEED=0` and address randomisation off
(`setarch -R`). A child serving 1,200 requests minus one serving 200 leaves the instructions of
1,000 requests, without start-up; divided by 1,000, less bare Django's, what the middleware adds.
Two builds give the same counts when they run the same machine code.

Run: `.venv/bin/python bench/instructions.py [--python OTHER_PYTHON]` (a few minutes; needs
valgrind). `--python` counts with another interpreter, for one, a virtualenv the wheel is
installed in.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys

STACKS = ["bare", "default", "compat", "exemplars"]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
FEW, MANY = 200, 1200


def child(stack: str, requests: int) -> None:
    """Serve `requests` requests through a WSGIHandler with `stack`'s middleware."""
    import django
    from django.conf import settings

    middleware = ["django.middleware.common.CommonMiddleware"]
    if stack != "bare":
        middleware.insert(0, "metrics.middleware.MetricsMiddleware")
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=middleware,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "metrics"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        METRICS_COMPAT_DJANGO_PROMETHEUS=stack == "compat",
        METRICS_EXEMPLARS=stack == "exemplars",
    )
    django.setup()
    from django.core.handlers.wsgi import WSGIHandler
    from django.http import HttpResponse
    from django.urls import path

    globals()["urlpatterns"] = [path("ok/", lambda request: HttpResponse(b"ok"), name="ok")]
    handler = WSGIHandler()

    def environ() -> dict[str, object]:
        return {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/ok/",
            "SERVER_NAME": "bench",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_TRACEPARENT": TRACEPARENT,
            "wsgi.input": io.BytesIO(b""),
            "wsgi.url_scheme": "http",
        }

    def start_response(*args: object) -> None:
        return None

    for _ in range(50):  # warm-up: imports, caches, label children, the first tick
        handler(environ(), start_response)
    for _ in range(requests):
        handler(environ(), start_response)


def count(python: str, stack: str, requests: int) -> int:
    """Return the instructions callgrind counts in a child serving `requests` requests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METRICS_", "PROMETHEUS_"))}
    env["PYTHONHASHSEED"] = "0"
    command = ["setarch", "-R", "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [python, os.path.abspath(__file__), "--child", stack, str(requests)]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stderr
    match = re.search(r"Collected : (\d+)", output)
    if match is None:
        raise RuntimeError(f"no instruction count in callgrind's output:\n{output}")
    return int(match.group(1))


def main() -> None:
    """Print the instructions per request of each stack, and what the middleware adds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="the interpreter to count with")
    parser.add_argument("--child", nargs=2, metavar=("STACK", "REQUESTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        # This file's directory (bench/) must not shadow anything the site imports.
        sys.path.pop(0)
        child(args.child[0], int(args.child[1]))
        return
    per_request = {
        stack: (count(args.python, stack, MANY) - count(args.python, stack, FEW)) / (MANY - FEW)
        for stack in STACKS
    }
    print(f"instructions per request ({args.python})")
    for stack in STACKS:
        added = "" if stack == "bare" else f"  +{per_request[stack] - per_request['bare']:,.0f}"
        print(f"{stack:10} {per_request[stack]:12,.0f}{added}")


if __name__ == "__main__":
    main()
