"""Generated documents: benchmark pages from result JSON (``render``), the Grafana dashboards
(``dashboards``) and the configuration reference in docs/operations.md (``config_reference``)."""
