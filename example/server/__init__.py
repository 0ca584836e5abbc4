"""The example site: settings, URLs and the WSGI/ASGI entry points."""
