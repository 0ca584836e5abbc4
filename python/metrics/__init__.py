"""Prometheus monitoring for Django, with its hot core in Rust.

Importing this package needs no Django settings: the metric classes and the default registry
are plain objects, usable from any Python code.
"""

from metrics.core import (
    CONTENT_TYPE_LATEST,
    OPENMETRICS_CONTENT_TYPE,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
    generate_latest_openmetrics,
)

__all__ = [
    "CONTENT_TYPE_LATEST",
    "OPENMETRICS_CONTENT_TYPE",
    "REGISTRY",
    "CollectorRegistry",
    "Counter",
    "Enum",
    "Gauge",
    "Histogram",
    "Info",
    "Summary",
    "disable_created_metrics",
    "enable_created_metrics",
    "generate_latest",
    "generate_latest_openmetrics",
]
