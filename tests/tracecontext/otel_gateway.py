"""``wsgi.py`` of a gateway instrumented as the README says: OpenTelemetry's Django
instrumentation, ``DjangoInstrumentor().instrument()``, and the OpenAI SDK's
(``OpenAIInstrumentor().instrument()``), with the SDK exporting OTLP/HTTP
to llmrum. Configured by the standard variables only: ``OTEL_SERVICE_NAME``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` and ``OTEL_EXPORTER_OTLP_TRACES_HEADERS``
(``Authorization=Bearer%20it_...``). The batch processor exports on a timer and when
the worker exits, which gunicorn's graceful stop (SIGTERM) reaches.

Run it as ``gunicorn tests.tracecontext.otel_gateway:application``.
"""

import os

from django.core.wsgi import get_wsgi_application
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.tracecontext.gateway_settings")

provider = TracerProvider(resource=Resource.create())  # service.name: OTEL_SERVICE_NAME
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
# Before the WSGI handler loads the middleware: this puts the instrumentation's first.
DjangoInstrumentor().instrument()
OpenAIInstrumentor().instrument()
application = get_wsgi_application()
