from django.contrib import admin
from django.urls import path

from rumserver import views

urlpatterns = [
    path("rum/v1/beacon", views.beacon, name="beacon"),
    path("healthz", views.healthz, name="healthz"),
    path("v1/traces", views.otlp_traces, name="otlp-traces"),
    path("api/v1/scores", views.scores, name="scores"),
    path("admin/", admin.site.urls),
]
