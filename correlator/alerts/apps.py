from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "correlator.alerts"
    label = "alerts"
    verbose_name = "llmrum alerts"
