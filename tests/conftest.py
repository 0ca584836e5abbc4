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


def read_sample(name: str, **labels: str) -> float | None:
    """Return the value of one series of the default registry, None when it does not exist."""
    return REGISTRY.get_sample_value(name, labels)


def read_sample_or_zero(name: str, **labels: str) -> float:
    """Return the value of one series of the default registry, 0.0 when it does not exist yet.

    For readings taken before the action a test measures: a counter that was never created has
    counted nothing. Readings after the action use `read_sample`, so a missing series fails.
    """
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


@pytest.fixture
def sample() -> Callable[..., float | None]:
    """Return a reader of the default registry: `sample(name, **labels)`, None for an absent series.

    Series are shared by the whole run, so tests compare values before and after.
    """
    return read_sample


@pytest.fixture
def sample_or_zero() -> Callable[..., float]:
    """Return `sample_or_zero(name, **labels)`: 0.0 for an absent series, for "before" readings."""
    return read_sample_or_zero
