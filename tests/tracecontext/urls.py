"""URLconf of the helper's tests and of the gunicorn test gateway."""

from django.urls import path

from llmrum_django.conformance import tracecontext
from tests.tracecontext import views

urlpatterns = [
    path("api/chat", views.chat),
    path("api/chat-own-headers", views.chat_with_own_headers),
    path("api/stream", views.stream),
    path("api/chat-stream", views.chat_stream),
    path("api/astream", views.astream),
    path("api/openai-stream", views.openai_stream),
    path("api/stream-empty-first", views.stream_empty_first),
    path("api/stream-failing", views.stream_failing),
    path("elsewhere", views.elsewhere),
    path("_w3c/tracecontext", tracecontext),
]
