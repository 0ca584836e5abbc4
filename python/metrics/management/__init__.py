"""Management commands of the metrics app: export_metrics, snapshot_metrics, cleanup_metrics."""
