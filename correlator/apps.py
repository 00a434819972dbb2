from django.apps import AppConfig


class CorrelatorConfig(AppConfig):
    name = "correlator"
    verbose_name = "llmrum correlator"

    def ready(self) -> None:
        from correlator.rum_metrics import RumCollector
        from correlator.telemetry import CorrelatorCollector
        from rumserver.ops.prometheus import collector_register

        collector_register(CorrelatorCollector)
        collector_register(RumCollector)
