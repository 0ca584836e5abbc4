"""Settings of the example site, assembled from components with django-split-settings.

`components/metrics.py` holds everything this module needs; the rest is an ordinary site.
A `local.py` next to this file, if present, is included last (not committed).
"""

from split_settings.tools import include, optional

include(
    "components/base.py",
    "components/database.py",
    "components/caches.py",
    "components/metrics.py",
    "components/celery.py",
    optional("local.py"),
)
