"""``/reports/model-servers/``: each model server's charts (requests, KV-cache and GPU
use, tokens/s, preemptions) under the client and model TTFT p95, on one time axis.
Service names and instances are senders' text: the charts and the template escape
them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.safestring import SafeString

from correlator.analytics.model_servers import model_server_series
from correlator.reports import charts, forms
from correlator.reports.pages.overview import _x_label
from rumserver.models import Application

Chart = tuple[str, SafeString]


@dataclass(frozen=True)
class ServerCharts:
    service: str
    instance: str
    charts: list[Chart]


@dataclass(frozen=True)
class ModelServersReport:
    ttft: Chart
    servers: list[ServerCharts]


# Each server's charts: (title, [(series name, figure of the answer, divided by)], unit).
SERVER_CHARTS = (
    (
        "Requests running and waiting",
        [("running", "requests_running", 1.0), ("waiting", "requests_waiting", 1.0)],
        "",
    ),
    (
        "KV-cache and GPU use",
        [("KV cache", "kv_cache_usage", 1.0), ("GPU", "gpu_utilization_percent", 100.0)],
        "%",
    ),
    (
        "Tokens per second",
        [
            ("prompt", "prompt_tokens_per_second", 1.0),
            ("generation", "generation_tokens_per_second", 1.0),
        ],
        "",
    ),
    ("Preemptions per second", [("preemptions", "preemptions_per_second", 1.0)], ""),
)


def _scaled(values: list[float | None], scale: float) -> list[float | None]:
    return [None if v is None else v / scale for v in values]


def model_servers_report(*, app: Application, window: forms.TimeRange) -> ModelServersReport:
    answer = model_server_series(app=app, since=window.since, until=window.until, step=window.step)
    steps: list[dict[str, Any]] = answer["steps"]
    labels = [_x_label(s["since"], window) for s in steps]

    def line(title: str, lines: list[charts.Series], unit: str = "") -> Chart:
        return title, charts.line_chart(title=title, x_labels=labels, series=lines, unit=unit)

    ttft_title = "Time to first token p95: client and model"
    ttft = line(
        ttft_title,
        [
            charts.Series("client", [s["client_ttft_p95_ms"] for s in steps]),
            charts.Series("model", [s["model_ttft_p95_ms"] for s in steps]),
        ],
        unit="ms",
    )
    servers = [
        ServerCharts(
            service=server["service"],
            instance=server["instance"],
            charts=[
                line(
                    title,
                    [
                        charts.Series(name, _scaled(server[key], scale))
                        for name, key, scale in lines
                    ],
                    unit,
                )
                for title, lines, unit in SERVER_CHARTS
                # Only what this server reports: a DCGM exporter has no requests.
                if any(v is not None for _, key, _ in lines for v in server[key])
            ],
        )
        for server in answer["servers"]
    ]
    return ModelServersReport(ttft=ttft, servers=servers)


@login_required
def model_servers(request: HttpRequest) -> HttpResponse:
    apps, app = forms.choose_app(user=request.user, slug=request.GET.get("app"))
    window, errors = forms.time_range(request.GET, now=timezone.now())
    report = model_servers_report(app=app, window=window) if app else None
    context = {
        "page": "model_servers",
        "apps": apps,
        "app": app,
        "presets": list(forms.PRESETS),
        "window": window,
        "errors": errors,
        "report": report,
    }
    return render(request, "reports/model_servers.html", context)
