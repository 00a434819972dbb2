from django.apps import AppConfig


class RumserverConfig(AppConfig):
    name = "rumserver"
    verbose_name = "llmrum ingest"

    def ready(self) -> None:
        # Connect their signals: CORS, and no JIT on new PostgreSQL connections.
        from rumserver import sql  # noqa: F401
        from rumserver.ingest import cors  # noqa: F401
