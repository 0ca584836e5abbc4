"""`metrics.instrument.install()`: the hooks wired at start-up, once, and only while metrics are on."""

from __future__ import annotations

import pytest
from django.test import override_settings


def test_install_does_nothing_while_metrics_are_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """install() with METRICS_ENABLED=False wires nothing and can wire everything later."""
    import metrics.instrument as instrument
    from metrics.conf import app_settings

    monkeypatch.setattr(instrument, "_installed", False)
    with override_settings(METRICS_ENABLED=False):
        app_settings.clear_cache()
        instrument.install()
        assert instrument._installed is False
    app_settings.clear_cache()
    instrument.install()  # every part is idempotent: wiring again adds nothing
    assert instrument._installed is True
