"""Model-server metrics for ``manage.py demo_traffic``: what an OpenTelemetry Collector
scraping the demo's vLLM servers and their GPUs' DCGM exporter would send to
``/v1/metrics``, so the model-server page has something to show on a new install.

Each self-hosted demo model runs on one vLLM server (the ``service.name`` and host of its
``llm_request`` spans). Its load over time is the shared server's own traffic (other
tenants, busier in the UTC working day, as the demo's sessions are) plus the demo's
stored ``llm_request`` spans: a request waits from its span's start for its time in queue,
then runs to the span's end. From that load, sampled every scrape step:
- ``vllm:num_requests_running`` / ``vllm:num_requests_waiting``: requests over the
  server's batch size wait;
- ``vllm:kv_cache_usage_perc``: the share of the batch in use, and preemptions when full;
- ``vllm:prompt_tokens_total`` / ``vllm:generation_tokens_total``: counters growing with
  the running requests at the model's decode speed;
- ``vllm:time_to_first_token_seconds``: a cumulative histogram with vLLM's buckets;
- DCGM ``DCGM_FI_DEV_GPU_UTIL`` and ``DCGM_FI_DEV_FB_USED`` of the server's GPU.

Everything goes in through ``otlp_metrics_ingest``, the endpoint's own path, as
protobuf ``ExportMetricsServiceRequest`` bodies of at most ``SAMPLES_PER_REQUEST``
scrapes of one server.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from demo.simulator import MODELS, Model
from rumserver.applications import ingest_app_by_public_key
from rumserver.ingest.services import otlp_metrics_ingest
from rumserver.models import Application, Span

# vLLM's own bucket bounds for time to first token (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS = tuple(
    float(bound)
    for bound in "0.001 0.005 0.01 0.02 0.04 0.06 0.08 0.1 0.25 0.5 0.75 1.0 2.5 5.0 7.5 10.0 "
    "20.0 40.0 80.0 160.0 640.0 2560.0".split()
)
# Scrapes kept for the whole range at most: a week at one scrape every 5 minutes. A
# real Collector scrapes every 15 s; the demo thins the history so that it loads in
# seconds (the page averages each of its steps anyway).
MAX_SAMPLES = 2016
SAMPLES_PER_REQUEST = 120
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
# Sessions per hour of the (UTC) day, as in demo.traffic: the other tenants' traffic
# follows the same working-day curve.
HOUR_WEIGHTS = [0.25 + 0.75 * math.exp(-(((h + 0.5 - 14) / 4.5) ** 2)) for h in range(24)]


@dataclass(frozen=True)
class Server:
    """One vLLM server of a self-hosted demo model, named as its spans name it."""

    model: Model
    service: str
    instance: str
    batch: int  # vLLM's max_num_seqs: requests over it wait
    gpu_memory_mib: int
    weights_mib: int


def demo_servers() -> list[Server]:
    servers = []
    for model in MODELS:
        if not model.self_hosted:
            continue
        large = model.tpot_s > 0.05  # the 70B model: a smaller batch fills the GPU
        host = f"gpu-{model.name[:5]}-{len(model.name) % 3 + 1}"  # as demo.traffic's spans
        servers.append(
            Server(
                model=model,
                service=f"vllm-{model.name.split('-instruct')[0]}",
                instance=f"{host}:8000",
                batch=16 if large else 48,
                gpu_memory_mib=81_559,
                weights_mib=70_000 if large else 18_000,
            )
        )
    return servers


@dataclass
class _Requests:
    """The demo's own requests to one server: when each waited and ran, its TTFT."""

    waits: list[tuple[int, int]] = field(default_factory=list)
    runs: list[tuple[int, int]] = field(default_factory=list)
    firsts: list[tuple[int, float]] = field(default_factory=list)  # (first token ns, ttft s)


def _stored_requests(app: Application, since_ns: int) -> dict[str, _Requests]:
    by_service: dict[str, _Requests] = {}
    rows = Span.objects.filter(app=app, name="llm_request", start_ns__gte=since_ns).values_list(
        "service", "start_ns", "end_ns", "queue_s", "ttft_s"
    )
    for service, start, end, queue_s, ttft_s in rows.iterator(chunk_size=5000):
        requests = by_service.setdefault(service, _Requests())
        scheduled = min(end, start + int((queue_s or 0) * 1e9))
        requests.waits.append((start, scheduled))
        requests.runs.append((scheduled, end))
        if ttft_s is not None:
            requests.firsts.append((start + int(ttft_s * 1e9), ttft_s))
    return by_service


class _Active:
    """How many of a set of intervals hold an instant: those started by then less those
    ended by then (every interval ends at or after its start)."""

    def __init__(self, intervals: list[tuple[int, int]]) -> None:
        self.starts = sorted(start for start, _ in intervals)
        self.ends = sorted(end for _, end in intervals)

    def at(self, instant: int) -> int:
        return bisect_right(self.starts, instant) - bisect_right(self.ends, instant)


@dataclass
class _Counters:
    preemptions: float = 0.0
    prompt_tokens: float = 0.0
    generation_tokens: float = 0.0
    ttft_counts: list[int] = field(default_factory=lambda: [0] * (len(TTFT_BUCKETS) + 1))
    ttft_sum: float = 0.0

    def observe_ttft(self, seconds: float, times: int = 1) -> None:
        self.ttft_counts[bisect_left(TTFT_BUCKETS, seconds)] += times
        self.ttft_sum += seconds * times


@dataclass(frozen=True)
class Sample:
    """One scrape of one server."""

    time_ns: int
    running: int
    waiting: int
    kv_cache: float
    gpu_util: float
    fb_used_mib: float
    preemptions: float
    prompt_tokens: float
    generation_tokens: float
    ttft_counts: tuple[int, ...]
    ttft_sum: float


def server_samples(
    server: Server, own: _Requests, *, start_ns: int, step_ns: int, count: int, rng: random.Random
) -> Iterator[Sample]:
    """The server's scrapes at ``start_ns + k * step_ns``; its counters start at zero
    (the server started with the range)."""
    counters = _Counters()
    step_s = step_ns / 1e9
    firsts = sorted(own.firsts)
    next_first = 0
    prefill_s = server.model.prefill_s_per_1k * 1.5  # a typical 1,500-token prompt
    waits, runs = _Active(own.waits), _Active(own.runs)
    for k in range(count):
        at = start_ns + k * step_ns
        hour = datetime.fromtimestamp(at / 1e9, tz=UTC).hour
        busy = HOUR_WEIGHTS[hour] * rng.lognormvariate(0, 0.25)
        demand = round(server.batch * 0.9 * busy) + runs.at(at) + waits.at(at)
        running = min(demand, server.batch)
        waiting = demand - running
        kv_cache = min(1.0, 0.04 + 0.92 * running / server.batch * rng.uniform(0.85, 1.1))
        if kv_cache > 0.92:  # a full cache evicts running requests to make room
            counters.preemptions += rng.randint(1, 3 + waiting)
        generated = running * step_s / server.model.tpot_s
        counters.generation_tokens += generated
        counters.prompt_tokens += generated * rng.uniform(2.5, 4)
        # The other tenants' first tokens: about one request a running slot a minute,
        # each after prefill and a queue that grows with the requests waiting.
        started = int(running * step_s / 60)
        queue_s = waiting / max(1, server.batch) * 2.0
        for _ in range(min(started, 50)):
            counters.observe_ttft(prefill_s * rng.uniform(0.5, 2) + queue_s * rng.random())
        if started > 50:
            counters.observe_ttft(prefill_s + queue_s / 2, started - 50)
        while next_first < len(firsts) and firsts[next_first][0] <= at:
            counters.observe_ttft(firsts[next_first][1])
            next_first += 1
        gpu_util = min(100.0, 3 + 95 * running / server.batch * rng.uniform(0.9, 1.05))
        spare = server.gpu_memory_mib - server.weights_mib
        yield Sample(
            time_ns=at,
            running=running,
            waiting=waiting,
            kv_cache=round(kv_cache, 4),
            gpu_util=round(gpu_util, 1),
            fb_used_mib=round(server.weights_mib + spare * kv_cache),
            preemptions=counters.preemptions,
            prompt_tokens=round(counters.prompt_tokens),
            generation_tokens=round(counters.generation_tokens),
            ttft_counts=tuple(counters.ttft_counts),
            ttft_sum=counters.ttft_sum,
        )


def _labels(target: Any, values: dict[str, str]) -> None:
    for key, value in values.items():
        target.add(key=key, value={"string_value": value})


def _gauge(
    request_metrics: Any,
    name: str,
    unit: str,
    labels: dict[str, str],
    points: list[tuple[int, float]],
) -> None:
    metric: Metric = request_metrics.add(name=name, unit=unit)
    for time_ns, value in points:
        point = metric.gauge.data_points.add(time_unix_nano=time_ns, as_double=value)
        _labels(point.attributes, labels)


def _counter(
    request_metrics: Any,
    name: str,
    labels: dict[str, str],
    start_ns: int,
    points: list[tuple[int, float]],
) -> None:
    metric: Metric = request_metrics.add(name=name)
    metric.sum.is_monotonic = True
    metric.sum.aggregation_temporality = CUMULATIVE
    for time_ns, value in points:
        point = metric.sum.data_points.add(
            start_time_unix_nano=start_ns, time_unix_nano=time_ns, as_double=value
        )
        _labels(point.attributes, labels)


def export_request(server: Server, samples: list[Sample], start_ns: int) -> bytes:
    """One Collector export: the server's vLLM and DCGM metrics for these scrapes."""
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.extend(
        [
            KeyValue(key="service.name", value={"string_value": server.service}),
            KeyValue(key="service.instance.id", value={"string_value": server.instance}),
            KeyValue(key="server.address", value={"string_value": server.instance.split(":")[0]}),
        ]
    )
    scope = resource_metrics.scope_metrics.add()
    scope.scope.name = "otelcol/prometheusreceiver"
    metrics = scope.metrics
    vllm = {"model_name": server.model.name, "engine": "0"}
    gpu = {
        "gpu": "0",
        "modelName": "NVIDIA H100 80GB HBM3",
        "Hostname": server.instance.split(":")[0],
    }

    def at(attr: str) -> list[tuple[int, float]]:
        return [(s.time_ns, float(getattr(s, attr))) for s in samples]

    _gauge(metrics, "vllm:num_requests_running", "", vllm, at("running"))
    _gauge(metrics, "vllm:num_requests_waiting", "", vllm, at("waiting"))
    _gauge(metrics, "vllm:kv_cache_usage_perc", "", vllm, at("kv_cache"))
    _counter(metrics, "vllm:num_preemptions_total", vllm, start_ns, at("preemptions"))
    _counter(metrics, "vllm:prompt_tokens_total", vllm, start_ns, at("prompt_tokens"))
    _counter(metrics, "vllm:generation_tokens_total", vllm, start_ns, at("generation_tokens"))
    ttft: Metric = metrics.add(name="vllm:time_to_first_token_seconds", unit="s")
    ttft.histogram.aggregation_temporality = CUMULATIVE
    for sample in samples:
        point = ttft.histogram.data_points.add(
            start_time_unix_nano=start_ns,
            time_unix_nano=sample.time_ns,
            count=sum(sample.ttft_counts),
            sum=sample.ttft_sum,
            bucket_counts=sample.ttft_counts,
            explicit_bounds=TTFT_BUCKETS,
        )
        _labels(point.attributes, vllm)
    _gauge(metrics, "DCGM_FI_DEV_GPU_UTIL", "", gpu, at("gpu_util"))
    _gauge(metrics, "DCGM_FI_DEV_FB_USED", "", gpu, at("fb_used_mib"))
    return request.SerializeToString()


def send_model_server_metrics(
    app: Application, *, days: float, now: datetime, seed: int | None = None
) -> int:
    """Send ``days`` of the demo servers' scrapes up to ``now`` through the metrics
    ingest; the data points accepted."""
    ingest_app = ingest_app_by_public_key(app.public_key)
    assert ingest_app is not None
    rng = random.Random(seed)
    end_ns = int(now.timestamp() * 1e9)
    span_ns = int(days * 86_400e9)
    step_ns = max(15, math.ceil(span_ns / 1e9 / MAX_SAMPLES / 15) * 15) * 1_000_000_000
    count = span_ns // step_ns
    start_ns = end_ns - count * step_ns
    own = _stored_requests(app, start_ns - 60_000_000_000)
    accepted = 0
    for server in demo_servers():
        samples = list(
            server_samples(
                server,
                own.get(server.service, _Requests()),
                start_ns=start_ns + step_ns,
                step_ns=step_ns,
                count=count,
                rng=rng,
            )
        )
        for i in range(0, len(samples), SAMPLES_PER_REQUEST):
            body = export_request(server, samples[i : i + SAMPLES_PER_REQUEST], start_ns)
            result = otlp_metrics_ingest(
                app=ingest_app, body=body, media_type="application/x-protobuf", now=now
            )
            accepted += result.accepted_data_points
    return accepted
