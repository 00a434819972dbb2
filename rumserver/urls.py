from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from correlator import api
from correlator.alerts import api as alerts_api
from correlator.model_servers import api as model_servers_api
from correlator.reports import urls as report_urls
from rumserver.ingest import views as ingest_views
from rumserver.ops import views as ops_views

urlpatterns = [
    # The site's front door (and the admin's "View site") is the reports.
    path("", RedirectView.as_view(pattern_name="reports:overview"), name="home"),
    path("rum/v1/beacon", ingest_views.beacon, name="beacon"),
    path("healthz", ops_views.healthz, name="healthz"),
    path("metrics", ops_views.metrics, name="prometheus-metrics"),
    path("v1/traces", ingest_views.otlp_traces, name="otlp-traces"),
    path("v1/metrics", ingest_views.otlp_metrics, name="otlp-metrics"),
    path("api/v1/scores", ingest_views.scores, name="scores"),
    path("api/v1/traces", api.TraceListApi.as_view(), name="trace-list"),
    path("api/v1/traces/<str:trace_id>", api.TraceDetailApi.as_view(), name="trace-detail"),
    path("api/v1/metrics", api.MetricsApi.as_view(), name="metrics"),
    path("api/v1/alert-rules", alerts_api.AlertRulesApi.as_view(), name="alert-rules"),
    path(
        "api/v1/model-servers",
        model_servers_api.ModelServersApi.as_view(),
        name="model-servers",
    ),
    path("api/schema/", SpectacularAPIView.as_view(), name="openapi-schema"),
    path("admin/", admin.site.urls),
    path("reports/", include("correlator.reports.urls")),
    path("accounts/", include(report_urls.account_urlpatterns)),
    path("demo/", include("demo.urls")),
]

if settings.LLMRUM_TRACECONTEXT_TEST_ENDPOINT:
    # Test-only (DESIGN.md §7): the W3C trace-context harness drives the backend helper.
    from llmrum_django.conformance import tracecontext

    urlpatterns.append(path("_w3c/tracecontext", tracecontext, name="w3c-tracecontext"))
