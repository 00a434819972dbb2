"""The model-server view: ``GET /api/v1/model-servers`` and ``/reports/model-servers/``."""
