//! PyO3 bindings: `metrics._core`.
