from django.contrib.auth import views as auth_views
from django.urls import path

from correlator.alerts import views as alerts_views
from correlator.model_servers import views as model_servers_views
from correlator.reports import views

app_name = "reports"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("traces", views.traces, name="traces"),
    path("traces/<str:trace_id>", views.trace, name="trace"),
    path("sessions/", views.sessions, name="sessions"),
    path("sessions/<str:key>", views.session, name="session"),
    path("propagation", views.propagation, name="propagation"),
    path("vitals/", views.vitals, name="vitals"),
    path("errors/", views.errors, name="errors"),
    path("model-servers/", model_servers_views.model_servers, name="model_servers"),
    path("alerts/", alerts_views.alerts, name="alerts"),
]

# Mounted at /accounts/ (LOGIN_URL): the report pages' own login, without the admin.
account_urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="reports/login.html"),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]
