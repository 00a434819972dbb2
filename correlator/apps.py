from django.apps import AppConfig


class CorrelatorConfig(AppConfig):
    name = "correlator"
    verbose_name = "llmrum correlator"
