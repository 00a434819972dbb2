from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "demo"
    verbose_name = "llmrum demo"

    def ready(self) -> None:
        from demo.token import demo_token_on_serve
        from rumserver.signals import serve_starting

        serve_starting.connect(demo_token_on_serve, dispatch_uid="llmrum-demo-token")
