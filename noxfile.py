"""`make matrix`: the compatibility part of the suite on every supported Python and Django.

Each session installs the wheel `make dist` built (one abi3 wheel serves every Python, see
docs/performance.md) into a fresh virtualenv with one Django series, and runs the tests of the
public surface on SQLite: the metric API and exposition, the middleware, the views and access
rules, the settings and their checks, and the management commands. `make test` runs the whole
suite (every backend and service) on the default interpreter.
"""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent

# Django series and the Pythons each supports (Django 6 needs Python 3.12+).
DJANGO_PYTHONS = {
    "5.2": ["3.10", "3.11", "3.12", "3.13"],
    "6.0": ["3.12", "3.13"],
    "6.1": ["3.12", "3.13"],
}
COMBINATIONS = [(python, django) for django, pythons in DJANGO_PYTHONS.items() for python in pythons]

COMPAT_TESTS = [
    "tests/core/test_api.py",
    "tests/core/test_exposition.py",
    "tests/test_middleware.py",
    "tests/test_views.py",
    "tests/test_negotiation.py",
    "tests/test_access.py",
    "tests/test_checks.py",
    "tests/test_conf.py",
    "tests/test_commands.py",
]
TEST_TOOLS = ["pytest>=8", "pytest-django>=4.8", "hypothesis>=6", "requests>=2.31"]

nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = False
nox.options.sessions = ["compat"]


def _wheel() -> str:
    wheels = sorted((ROOT / "dist").glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one wheel in dist/, found {[w.name for w in wheels]}: run `make dist`")
    return str(wheels[0])


@nox.session
@nox.parametrize(("python", "django"), COMBINATIONS, ids=[f"py{p}-django{d}" for p, d in COMBINATIONS])
def compat(session: nox.Session, django: str) -> None:
    """Run the compatibility tests against the built wheel with Django `django`."""
    session.install(_wheel(), f"Django~={django}.0", *TEST_TOOLS)
    # The package under test is the installed wheel, never the checkout's python/ directory.
    session.run(
        "python",
        "-c",
        "import django, metrics._core as c, sys; "
        "assert 'site-packages' in c.__file__, c.__file__; "
        "print(sys.version.split()[0], 'Django', django.get_version(), c.__file__)",
    )
    session.run("pytest", "-q", "-p", "no:cacheprovider", *COMPAT_TESTS, *session.posargs)
