"""Fixtures shared by the tests of the Django app."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from metrics.conf import app_settings
from metrics.core import REGISTRY


@pytest.fixture(autouse=True)
def _fresh_app_settings() -> Iterator[None]:
    """Start and end every test with settings read afresh (tests change the environment)."""
    app_settings.clear_cache()
    yield
    app_settings.clear_cache()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set environment variables (None removes one) and make the app read them."""

    def set_env(**variables: str | None) -> None:
        for name, value in variables.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        app_settings.clear_cache()

    return set_env


def _sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.fixture
def sample() -> Callable[..., float]:
    """Return a reader of the default registry: `sample(name, **labels)`, 0.0 for absent series.

    Series are shared by the whole run, so tests compare values before and after.
    """
    return _sample
