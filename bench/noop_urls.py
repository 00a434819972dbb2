"""The app's URLs plus ``POST /bench/noop``: a view that only answers 204.

It is the baseline of bench/ingest: what Django, the middleware and gunicorn
cost per request before any ingest work.
"""

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from rumserver.urls import urlpatterns as app_urlpatterns


@csrf_exempt  # like the beacon view: a cross-origin POST carries no CSRF token
def noop(request: HttpRequest) -> HttpResponse:
    return HttpResponse(status=204)


urlpatterns = [*app_urlpatterns, path("bench/noop", noop)]
