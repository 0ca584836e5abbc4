"""Fixtures of the instrumentation tests: the instrumentation installed, and a metric reader."""

from __future__ import annotations

from typing import Any

import pytest

from metrics.instrument import install


@pytest.fixture(scope="session", autouse=True)
def _instrumented() -> None:
    # The app's ready() calls install() too; it is idempotent, so both orders work.
    install()


def read_samples(metric: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of `metric`, keyed by sample name and sorted labels."""
    out = {}
    for family in metric.collect():
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out
