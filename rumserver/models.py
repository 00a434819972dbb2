"""Raw rows written by ingest: applications and keys, browser sessions and
events from beacons, spans from OTLP, and the dirty-trace queue the correlator
sweeps (DESIGN.md §2-§5).

Client times (browser epoch milliseconds, on the browser's own clock) are kept
as floats exactly as sent; server times are timezone-aware datetimes. Span times
are integer nanoseconds as OTLP sends them.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import models


class Application(models.Model):
    """One chat product that sends beacons and spans, with its keys."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    # Public: sits in page source, identifies the application on the beacon endpoint.
    public_key = models.CharField(max_length=64, unique=True)
    # Secret: only its SHA-256 is stored; the token itself is shown once.
    ingest_token_hash = models.CharField(max_length=64, unique=True)
    ingest_token_prefix = models.CharField(
        max_length=16, help_text="The first characters of the token, to tell tokens apart."
    )
    allowed_origins = models.JSONField(
        default=list,
        blank=True,
        help_text='Origins allowed to send beacons, e.g. "https://chat.example.com"; '
        '"*" allows any, "https://*.example.com" any subdomain.',
    )
    sample_rate = models.FloatField(default=1.0)
    retention_days = models.PositiveIntegerField(default=30)
    store_content = models.BooleanField(
        default=False, help_text="Keep prompt and completion text from spans (opt-in)."
    )
    members: models.ManyToManyField[AbstractBaseUser, ApplicationMember] = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        through="ApplicationMember",
        related_name="llmrum_applications",
        blank=True,
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.slug


class ApplicationMember(models.Model):
    """A user who may see an application's data (staff see every application)."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["application", "user"], name="uniq_app_member"),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.application}"


class BrowserSession(models.Model):
    """A browser session as the SDK names it, with its parsed user agent."""

    class Device(models.TextChoices):
        DESKTOP = "desktop"
        MOBILE = "mobile"
        TABLET = "tablet"
        BOT = "bot"
        OTHER = "other"

    app = models.ForeignKey(Application, on_delete=models.CASCADE, db_index=False)
    session_id = models.CharField(max_length=64)
    started_at_ms = models.FloatField(null=True, blank=True)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    user_id = models.CharField(max_length=128, blank=True, default="")
    sdk_version = models.CharField(max_length=32, blank=True, default="")
    user_agent = models.CharField(max_length=512, blank=True, default="")
    browser = models.CharField(max_length=64, blank=True, default="")
    browser_version = models.CharField(max_length=32, blank=True, default="")
    os = models.CharField(max_length=64, blank=True, default="")
    os_version = models.CharField(max_length=32, blank=True, default="")
    device_class = models.CharField(max_length=16, choices=Device.choices, default=Device.OTHER)
    is_bot = models.BooleanField(default=False)
    client_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["app", "session_id"], name="uniq_session_per_app"),
        ]
        indexes = [
            # The sessions index's order (most recently seen first, then id) in full,
            # so a page is read backwards from it rather than every session sorted;
            # and retention's cut by last seen.
            models.Index(fields=["app", "last_seen_at", "id"], name="session_app_seen_id"),
            # The trace search by user id (DESIGN.md §10.5); most sessions name none.
            models.Index(
                fields=["app", "user_id"],
                name="session_app_user",
                condition=~models.Q(user_id=""),
            ),
        ]

    def __str__(self) -> str:
        return self.session_id


class BrowserEvent(models.Model):
    """One event of a beacon batch (turn, action, feedback, vital, error, page_view)."""

    class Type(models.TextChoices):
        TURN = "turn"
        ACTION = "action"
        FEEDBACK = "feedback"
        VITAL = "vital"
        ERROR = "error"
        PAGE_VIEW = "page_view"

    app = models.ForeignKey(Application, on_delete=models.CASCADE, db_index=False)
    session = models.ForeignKey(BrowserSession, on_delete=models.CASCADE)
    # Client-made id; a retried beacon lands once thanks to the unique constraint.
    event_id = models.CharField(max_length=64)
    type = models.CharField(max_length=16, choices=Type.choices)
    # Action name, vital metric name; blank for other types.
    name = models.CharField(max_length=64, blank=True, default="")
    ts_ms = models.FloatField(help_text="Client epoch ms on the browser's clock.")
    sent_at_ms = models.FloatField(help_text="The batch's client send time (browser clock).")
    received_at = models.DateTimeField(help_text="Server receive time of the batch.")
    trace_id = models.CharField(max_length=32, blank=True, default="")
    span_id = models.CharField(max_length=16, blank=True, default="")
    turn_span_id = models.CharField(max_length=16, blank=True, default="")
    truncated = models.BooleanField(default=False, help_text="A string or list was cut.")
    data = models.JSONField(help_text="The validated event as sent (strings cut).")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["app", "event_id"], name="uniq_event_per_app"),
        ]
        indexes = [
            models.Index(fields=["trace_id"], name="event_trace"),
            models.Index(fields=["app", "received_at"], name="event_app_received"),
            # Feedback and actions by the turn they are about (metrics, rollups).
            models.Index(
                fields=["app", "turn_span_id"],
                name="event_app_turn_span",
                condition=~models.Q(turn_span_id=""),
            ),
            # A turn event by its browser span: the sweep finds the trace of a turn
            # that another regenerates, to stitch it again (correlator.stitch.store).
            models.Index(
                fields=["app", "span_id"],
                name="event_turn_by_span",
                condition=models.Q(type="turn"),
            ),
            # The vitals and errors report pages: one type of one application over a
            # time range (correlator.reports.pages.vitals, .errors). Partial, so the
            # turns and actions of the ingest path do not pay for it.
            models.Index(
                fields=["app", "type", "received_at"],
                name="event_vital_error_received",
                condition=models.Q(type__in=["vital", "error"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class Span(models.Model):
    """One span in the shared store: from OTLP, or a browser turn made by the correlator."""

    class Role(models.TextChoices):
        BROWSER = "browser"
        GATEWAY = "gateway"
        MODEL = "model"
        SERVICE = "service"

    app = models.ForeignKey(Application, on_delete=models.CASCADE, db_index=False)
    trace_id = models.CharField(max_length=32)
    span_id = models.CharField(max_length=16)
    parent_span_id = models.CharField(max_length=16, blank=True, default="")
    trace_state = models.CharField(max_length=512, blank=True, default="")
    # "browser" marks the browser span the correlator makes. A received span's role
    # is its service's in the trace, which the stitch decides and keeps on the trace
    # (Trace.roles, rumserver.roles): ingest writes none, so the column's default.
    role = models.CharField(
        max_length=16, choices=Role.choices, default=Role.SERVICE, db_default=Role.SERVICE
    )
    service = models.CharField(max_length=128, blank=True, default="")
    name = models.CharField(max_length=256)
    kind = models.PositiveSmallIntegerField(default=0, help_text="OTLP SpanKind number.")
    start_ns = models.BigIntegerField()
    end_ns = models.BigIntegerField()
    status_code = models.PositiveSmallIntegerField(default=0, help_text="OTLP StatusCode.")
    status_message = models.CharField(max_length=1024, blank=True, default="")
    attributes = models.JSONField(default=dict)
    resource = models.JSONField(default=dict)
    scope = models.JSONField(default=dict)
    events = models.JSONField(default=list)
    links = models.JSONField(default=list)
    received_at = models.DateTimeField()
    dropped_attributes = models.PositiveIntegerField(
        default=0, help_text="Attributes over the per-span limit, not kept."
    )
    truncated = models.BooleanField(default=False, help_text="A value or list was cut.")
    # Typed GenAI columns, filled at ingest so nobody parses JSON for them later.
    gen_ai_operation = models.CharField(max_length=64, blank=True, default="")
    gen_ai_provider = models.CharField(max_length=64, blank=True, default="")
    request_model = models.CharField(max_length=128, blank=True, default="")
    response_model = models.CharField(max_length=128, blank=True, default="")
    conversation_id = models.CharField(max_length=128, blank=True, default="")
    input_tokens = models.IntegerField(null=True, blank=True)
    output_tokens = models.IntegerField(null=True, blank=True)
    ttft_s = models.FloatField(null=True, blank=True, help_text="Time to first token/chunk.")
    ttft_source = models.CharField(max_length=64, blank=True, default="")
    queue_s = models.FloatField(null=True, blank=True, help_text="vLLM time in queue.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["app", "trace_id", "span_id"], name="uniq_span_per_trace"
            ),
        ]
        indexes = [
            models.Index(fields=["trace_id"], name="span_trace"),
            models.Index(fields=["app", "start_ns"], name="span_app_start"),
        ]
        # On PostgreSQL only, outside the model state: a GIN (jsonb_path_ops) index on
        # ``attributes`` for the trace list's `attr` filter (migration 0008), which
        # SQLite cannot build.

    def __str__(self) -> str:
        return f"{self.trace_id}/{self.span_id}"


class DirtyTrace(models.Model):
    """A trace that got new data and waits for the correlator.

    Ingest upserts a row here in the same transaction as the raw rows; the
    correlator claims rows with ``SELECT … FOR UPDATE SKIP LOCKED``. A lost
    Celery hint therefore delays a trace by one sweep and loses nothing.
    """

    app = models.ForeignKey(Application, on_delete=models.CASCADE, db_index=False)
    trace_id = models.CharField(max_length=32)
    first_marked_at = models.DateTimeField()
    last_marked_at = models.DateTimeField(help_text="Server receive time of the newest data.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["app", "trace_id"], name="uniq_dirty_trace"),
        ]
        indexes = [models.Index(fields=["last_marked_at"], name="dirty_marked")]

    def __str__(self) -> str:
        return self.trace_id


class DirtyEventRollup(models.Model):
    """A period of an application's vital and error reports whose event rollups
    (``correlator.models.EventRollup``) must be rebuilt. Ingest marks the minute a
    batch's vitals and errors are received in, and the minute a vital reported again
    leaves, in the batch's own statement; rebuilding a minute marks its hour, an hour
    its day. Claimed with ``FOR UPDATE SKIP LOCKED`` like dirty traces."""

    app = models.ForeignKey(Application, on_delete=models.CASCADE, db_index=False)
    period = models.CharField(max_length=8)  # minute, hour or day (correlator Rollup.Period)
    start = models.DateTimeField()
    first_marked_at = models.DateTimeField()
    last_marked_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["app", "period", "start"], name="uniq_dirty_event_rollup"
            ),
        ]
        indexes = [
            models.Index(fields=["period", "last_marked_at"], name="dirty_event_rollup_marked")
        ]

    def __str__(self) -> str:
        return f"{self.period} {self.start}"


class Score(models.Model):
    """An evaluation result for a trace (hallucination, relevance, user-defined)."""

    app = models.ForeignKey(Application, on_delete=models.CASCADE, db_index=False)
    trace_id = models.CharField(max_length=32)
    name = models.CharField(max_length=64)
    value = models.FloatField()
    comment = models.CharField(max_length=1024, blank=True, default="")
    received_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["trace_id"], name="score_trace"),
            models.Index(fields=["app", "received_at"], name="score_app_received"),
            # The trace list's `score` filter: the traces of one application carrying a name.
            models.Index(fields=["app", "name", "trace_id"], name="score_app_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name}={self.value} on {self.trace_id}"


class MetricSeries(models.Model):
    """One series of OTLP metric data points: a metric of one service instance with one
    set of attributes (DESIGN.md §10.6). Made once, when its first point arrives;
    ``key`` hashes its identity (rumserver.ingest.otlp.metrics), so every web process
    finds the same row and a retried export the same series."""

    class Kind(models.IntegerChoices):
        GAUGE = 1
        SUM = 2
        HISTOGRAM = 3

    app = models.ForeignKey(Application, on_delete=models.CASCADE, db_index=False)
    key = models.CharField(max_length=32, help_text="Hash of the series identity.")
    service = models.CharField(max_length=128, help_text="Resource service.name.")
    instance = models.CharField(
        max_length=256, blank=True, default="", help_text="Resource service.instance.id."
    )
    name = models.CharField(max_length=256)
    unit = models.CharField(max_length=64, blank=True, default="")
    kind = models.PositiveSmallIntegerField(choices=Kind.choices)
    monotonic = models.BooleanField(default=False)
    temporality = models.PositiveSmallIntegerField(
        default=0, help_text="OTLP AggregationTemporality: 1 delta, 2 cumulative."
    )
    attributes = models.JSONField(default=dict)
    resource = models.JSONField(default=dict, help_text="As sent with the first point.")
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["app", "key"], name="uniq_metric_series"),
        ]
        indexes = [
            # The model-server page: the series of some metrics of an application.
            models.Index(fields=["app", "name"], name="metric_series_app_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.service}/{self.instance}"


class MetricPoint(models.Model):
    """One OTLP metric data point (gauge, sum or histogram) as received on ``/v1/metrics``,
    a thin row of its series: its time and series are its key, so an exporter's retry
    of the same point lands once. Time first: the points of one request (one scrape
    time) go into a few neighbouring index pages instead of one page a series, and
    every read is a time range (rollups of a minute or an hour, a range of points).

    Values of Prometheus counters and histograms stay as sent (cumulative): rates are
    taken when read. ``value`` is the float every read uses; a point sent ``as_int``
    also keeps the exact integer in ``int_value`` (a float holds integers exactly only
    up to 2**53).
    """

    # Kept here too: the kinds belong to the points' readers as much as to the series.
    Kind = MetricSeries.Kind

    pk = models.CompositePrimaryKey("time_ns", "series")
    # No database foreign key nor index of its own: the key's check is a trigger per
    # inserted row and an index one more page a row, the largest shares of a thin
    # row's cost. Series are only deleted with their application, and Django's
    # cascade deletes the points first.
    series = models.ForeignKey(
        MetricSeries,
        on_delete=models.CASCADE,
        db_constraint=False,
        db_index=False,
        related_name="points",
    )
    time_ns = models.BigIntegerField()
    start_ns = models.BigIntegerField(default=0, help_text="Start of a sum or histogram.")
    value = models.FloatField(null=True, blank=True, help_text="Gauge or sum value.")
    int_value = models.BigIntegerField(
        null=True, blank=True, help_text="The value when sent as an integer."
    )
    count = models.BigIntegerField(null=True, blank=True, help_text="Histogram count.")
    sum = models.FloatField(null=True, blank=True)
    min = models.FloatField(null=True, blank=True)
    max = models.FloatField(null=True, blank=True)
    bounds = models.JSONField(null=True, blank=True, help_text="Histogram explicit bounds.")
    bucket_counts = models.JSONField(
        null=True, blank=True, help_text="Histogram, per bucket, not cumulative."
    )
    flags = models.PositiveIntegerField(default=0, help_text="1 = no recorded value (stale).")

    def __str__(self) -> str:
        return f"{self.series_id}@{self.time_ns}"


class MetricRollup(models.Model):
    """The points of one series in one period, summed for long ranges (DESIGN.md
    §10.6): a 7-day chart of 15-second samples reads a few of these a series, not
    40,000 points. Minutes and hours are made by rumserver.metric_rollups from the
    points of a period marked in ``MetricDirty``; five minutes from the minutes, three
    and six hours and days from the hours, when those are made. Only points with a
    value count. ``increase`` and ``increase_seconds`` cover consecutive points both in
    the period (a counter reset counts the later value); ``prior_ns`` and
    ``prior_increase`` the pair from the series' last point before the period to its
    first one in it, so a reader sums a counter's rate without a window over periods.
    """

    pk = models.CompositePrimaryKey("series", "seconds", "start_ns")
    series = models.ForeignKey(  # the key leads with the series: no index of its own
        MetricSeries,
        on_delete=models.CASCADE,
        db_constraint=False,
        db_index=False,
        related_name="rollups",
    )
    # The series' application, so that a chart reads one index range a level for all
    # its series (metric_rollup_app_level), not one a series and level.
    app = models.ForeignKey(
        Application, on_delete=models.CASCADE, db_constraint=False, db_index=False,
        related_name="+",
    )  # fmt: skip
    seconds = models.PositiveIntegerField(help_text="60, 300, 3600, 10800, 21600 or 86400.")
    start_ns = models.BigIntegerField()
    samples = models.IntegerField()
    total = models.FloatField()
    increase = models.FloatField()
    increase_seconds = models.FloatField()
    first_ns = models.BigIntegerField()
    first_value = models.FloatField()
    last_ns = models.BigIntegerField()
    last_value = models.FloatField()
    prior_ns = models.BigIntegerField(
        null=True, blank=True, help_text="The series' last point before the period, if any."
    )
    prior_increase = models.FloatField(
        default=0.0,
        db_default=0.0,
        help_text="From that point to the first of the period (0 without one).",
    )

    class Meta:
        indexes = [
            # The model-server charts: per level, a range of periods of all the
            # application's series, read from the index alone (what a step sums).
            models.Index(
                fields=["app", "seconds", "start_ns", "series"],
                include=[
                    "samples",
                    "total",
                    "increase",
                    "increase_seconds",
                    "first_ns",
                    "prior_ns",
                    "prior_increase",
                ],
                name="metric_rollup_app_level",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.series_id}@{self.start_ns}/{self.seconds}s"


class MetricDirty(models.Model):
    """A minute or hour of an application whose metric points changed since its
    rollups were made; ingest marks it in the statement that stores the points."""

    pk = models.CompositePrimaryKey("app", "seconds", "start_ns")
    # A database foreign key, unlike the points': the mark is the part of an ingest
    # statement that notices a deleted application (series ids are kept in memory).
    app = models.ForeignKey(Application, on_delete=models.CASCADE, db_index=False)
    seconds = models.PositiveSmallIntegerField()
    start_ns = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.app_id}@{self.start_ns}/{self.seconds}s"


class ModelPrice(models.Model):
    """What a model's tokens cost an application, in USD per million tokens, from
    ``in_force_from`` until the next price of the same model. Never updated: a new
    price is a new row, so turns keep the price of their own time."""

    app = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="prices")
    model = models.CharField(max_length=128, help_text="The turn's model, as stitched.")
    input_usd_per_mtok = models.DecimalField(max_digits=14, decimal_places=6)
    output_usd_per_mtok = models.DecimalField(max_digits=14, decimal_places=6)
    cached_input_usd_per_mtok = models.DecimalField(
        max_digits=14,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="Cache-read input tokens; empty: they cost the input price.",
    )
    in_force_from = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["app", "model", "in_force_from"], name="price_app_model_from")
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.in_force_from:%Y-%m-%d %H:%M}"
