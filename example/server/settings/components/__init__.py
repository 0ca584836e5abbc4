"""Settings components, included in order by `server/settings/__init__.py`."""
