from django.apps import AppConfig


class RumserverConfig(AppConfig):
    name = "rumserver"
    verbose_name = "llmrum ingest"

    def ready(self) -> None:
        from rumserver import cors  # noqa: F401  (connects the CORS signal)
