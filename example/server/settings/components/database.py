"""The database: SQLite next to manage.py, or whatever `DATABASE_URL` names.

`DATABASE_URL` forms: `postgres://user:password@host:5432/name`, `mysql://user@host:3306/name`
(also `mariadb://`), `sqlite:////absolute/path.sqlite3`. Query parameters become OPTIONS.
"""

import os
from urllib.parse import parse_qsl, unquote, urlsplit

_ENGINES = {
    "postgres": "django.db.backends.postgresql",
    "postgresql": "django.db.backends.postgresql",
    "pgsql": "django.db.backends.postgresql",
    "mysql": "django.db.backends.mysql",
    "mariadb": "django.db.backends.mysql",
    "sqlite": "django.db.backends.sqlite3",
}


def _database_from_url(url: str) -> dict:
    parts = urlsplit(url)
    if parts.scheme not in _ENGINES:
        raise ValueError(f"DATABASE_URL scheme {parts.scheme!r} is not one of {sorted(_ENGINES)}")
    engine = _ENGINES[parts.scheme]
    if engine.endswith("sqlite3"):
        # sqlite:////abs/path -> /abs/path; sqlite:///rel/path -> rel/path
        return {"ENGINE": engine, "NAME": unquote(parts.path[1:]) or ":memory:"}
    database = {
        "ENGINE": engine,
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": dict(parse_qsl(parts.query)),
    }
    if engine.endswith("mysql"):
        database["OPTIONS"].setdefault("charset", "utf8mb4")
    return database


if os.environ.get("DATABASE_URL"):
    DATABASES = {"default": _database_from_url(os.environ["DATABASE_URL"])}
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}  # noqa: F821 (from base.py)
