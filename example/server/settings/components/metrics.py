"""Everything the metrics module needs: the app, its middleware, its settings.

Each setting below falls back to the environment variable of the same name; the values here
are the module's own defaults, written out so the file documents them.
See docs/configuration.md for the full table.
"""

import os

INSTALLED_APPS += ["metrics"]  # noqa: F821 (from base.py)

# First, so it measures the whole stack and sees every response, including those that other
# middleware return themselves (redirects, CSRF failures...).
MIDDLEWARE = ["metrics.middleware.MetricsMiddleware", *MIDDLEWARE]  # noqa: F821 (from base.py)

# Enable/disable metrics collection (False: nothing collected, /metrics/ answers 404).
METRICS_ENABLED = os.environ.get("METRICS_ENABLED", "True")

# Who may read /metrics/: addresses and CIDR networks, a token, or a logged-in superuser.
METRICS_ALLOWED_IPS = os.environ.get("METRICS_ALLOWED_IPS", "")
METRICS_AUTH_TOKEN = os.environ.get("METRICS_AUTH_TOKEN", "")
# Reverse proxies whose X-Forwarded-For is believed (none by default).
METRICS_TRUSTED_PROXIES = os.environ.get("METRICS_TRUSTED_PROXIES", "")

# For multiprocess deployments (Gunicorn): a directory shared by the workers.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    PROMETHEUS_MULTIPROC_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"]

# Optional: store metric snapshots in the database.
METRICS_STORE_IN_DB = os.environ.get("METRICS_STORE_IN_DB", "False")
METRICS_RETENTION_DAYS = os.environ.get("METRICS_RETENTION_DAYS", "7")
