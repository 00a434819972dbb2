"""What the correlator derives from the raw rows: one stitched trace per trace id,
and one turn per browser chat request (DESIGN.md §6, §7).

Both are rebuilt from raw rows by every stitch, so they can be thrown away and
recomputed at any time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models
from django.db.models.lookups import Exact
from django.db.models.sql.where import AND, WhereNode

from rumserver.models import Application, BrowserSession
from rumserver.roles import StoredRoleFacts, role_in_trace


class Trace(models.Model):
    class State(models.TextChoices):
        OPEN = "open"
        FINAL = "final"

    class Propagation(models.TextChoices):
        OK = ""
        NO_SERVER_SPANS = "no_server_spans"
        NO_BROWSER_ROOT = "no_browser_root"

    app = models.ForeignKey(Application, on_delete=models.CASCADE, db_index=False)
    trace_id = models.CharField(max_length=32)
    state = models.CharField(max_length=8, choices=State.choices, default=State.OPEN)
    linked = models.BooleanField(default=False)
    clock_skew_ms = models.FloatField(default=0.0, help_text="Added to browser times.")
    skew_source = models.CharField(max_length=32, blank=True, default="")
    clock_skew_uncertainty_ms = models.FloatField(
        null=True,
        blank=True,
        help_text="Half the width of the interval the skew was taken from; null when "
        "unbounded (beacons only give an upper bound) or the trace has no browser span.",
    )
    start_ms = models.FloatField(help_text="Epoch ms, skew-corrected.")
    end_ms = models.FloatField()
    span_count = models.PositiveIntegerField(default=0)
    propagation = models.CharField(
        max_length=32, choices=Propagation.choices, blank=True, default=""
    )
    propagation_cause = models.CharField(max_length=64, blank=True, default="")
    last_received_at = models.DateTimeField(help_text="Newest raw data for this trace.")
    stitched_at = models.DateTimeField()
    # Decided per service within the trace (DESIGN.md §5) and kept here rather than
    # written back to the spans: rewriting every gateway span of every trace (ingest
    # rarely knows the browser span yet) was a quarter of the sweep's database work.
    roles = models.JSONField(
        default=dict, blank=True, help_text="service.name -> role, as the stitch decided."
    )

    class Meta:
        constraints = [
            # Led by the trace id so that it also serves the lookups by trace id alone
            # (the API and admin, before the app is known): one index keyed by a random
            # id, not two. Each is written at almost every stitch of a trace (its
            # indexed times change, so the update is not HOT) and read at random: at 12
            # million traces the second index was memory the stitch's reads missed.
            models.UniqueConstraint(fields=["trace_id", "app"], name="uniq_trace_per_app"),
        ]
        indexes = [
            # The trace list's order (newest first, then id) in full: without statistics
            # PostgreSQL takes an application for a handful of traces and would sort
            # them all rather than finish a sort the index left open on the id.
            models.Index(fields=["app", "start_ms", "id"], name="trace_app_start_id"),
            models.Index(fields=["state", "last_received_at"], name="trace_state_received"),
            # The unlinked traces of propagation health: a few among many.
            models.Index(
                fields=["app", "start_ms"],
                name="trace_unlinked_start",
                condition=models.Q(linked=False),
            ),
        ]

    def __str__(self) -> str:
        return self.trace_id

    @property
    def turn_or_none(self) -> Turn | None:
        """The trace's turn; None for a trace without a browser turn (server spans only)."""
        try:
            return self.turn
        except Turn.DoesNotExist:
            return None

    def role_of(self, span: StoredRoleFacts) -> str:
        """The span's role in this trace (rumserver.roles)."""
        return role_in_trace(span, self.roles)


if TYPE_CHECKING:
    _OneToOne = models.OneToOneField[Any, Any]
else:
    _OneToOne = models.OneToOneField


class TraceOfTurn(_OneToOne):
    """``Turn.trace``, joined on the whole key of the turns' day partitions.

    On PostgreSQL turns are day partitions by ``t_send_ms`` (rumserver.partitions), so
    their unique key is ``(trace_id, t_send_ms)`` and a probe by trace id alone reads
    every day's index; without statistics the planner also no longer knows a trace has
    one turn (it hashed every turn for the trace list). A trace with a turn starts at
    that turn's send time: the stitch writes both from one value
    (``correlator.stitch.sweep._stitch_one``). So every join between them, either way,
    and ``trace.turn`` name ``turn.t_send_ms = trace.start_ms`` too: the whole unique
    key, one partition, one row. Not a database constraint (it cannot span partitions):
    a trace's turn is written under the trace's row lock, and a turn that moves to
    another time replaces its old row in the same transaction (``correlator.stitch.store``).

    The model state is a plain OneToOneField (``deconstruct``): what this adds is
    query-time only, so migrations and SQLite see nothing new."""

    def get_extra_restriction(self, alias: str | None, related_alias: str | None) -> Any:
        # ``alias`` is the trace's table, ``related_alias`` the turn's, for a join either
        # way. None: a subquery pushed down for an exclude(), where both cannot be named.
        if alias is None or related_alias is None:
            return None
        send: Any = self.model._meta.get_field("t_send_ms")
        start: Any = self.remote_field.model._meta.get_field("start_ms")
        same: Any = Exact(send.get_col(related_alias), start.get_col(alias))
        return WhereNode([same], AND)

    def get_forward_related_filter(self, obj: Any) -> dict[str, Any]:
        # ``trace.turn``: the turn of the trace's start, not every day's index probed.
        return {**super().get_forward_related_filter(obj), "t_send_ms": obj.start_ms}

    def deconstruct(self) -> Any:
        name, _, args, kwargs = super().deconstruct()
        return name, "django.db.models.OneToOneField", args, kwargs


class Turn(models.Model):
    """One chat request as the user saw it, with the wait split into its parts (ms)."""

    # How a turn ended (DESIGN.md §4): what ``outcome`` holds, and what readers filter by.
    OUTCOMES = ["completed", "stopped", "abandoned", "error"]

    app = models.ForeignKey(Application, on_delete=models.CASCADE, db_index=False)
    # No database-level constraints on these two: the sweep writes a turn with its trace
    # in one transaction, Django still cascades deletes, and PostgreSQL's per-row key
    # check kept a plan made while the table was empty (a full scan per insert once it
    # had grown: bench/stitch, 100,000 turns, 5 billion rows read).
    trace = TraceOfTurn(Trace, on_delete=models.CASCADE, related_name="turn", db_constraint=False)
    session = models.ForeignKey(BrowserSession, on_delete=models.CASCADE, db_constraint=False)
    span_id = models.CharField(max_length=16, help_text="The browser span (traceparent parent-id).")
    conversation_id = models.CharField(max_length=128, blank=True, default="")
    turn_index = models.PositiveIntegerField(null=True, blank=True)
    t_send_ms = models.FloatField(help_text="Epoch ms, skew-corrected.")
    outcome = models.CharField(max_length=16)
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    regenerated = models.BooleanField(default=False)
    regenerate_of = models.CharField(max_length=16, blank=True, default="")
    intent_correction = models.BooleanField(default=False)
    client_ttft_ms = models.FloatField(null=True, blank=True)
    server_ttft_ms = models.FloatField(null=True, blank=True)
    server_ttft_source = models.CharField(max_length=64, blank=True, default="")
    model_ttft_ms = models.FloatField(null=True, blank=True)
    queue_ms = models.FloatField(null=True, blank=True)
    network_overhead_ms = models.FloatField(null=True, blank=True)
    tbt_p50_ms = models.FloatField(null=True, blank=True)
    tbt_p95_ms = models.FloatField(null=True, blank=True)
    tbt_max_ms = models.FloatField(null=True, blank=True)
    tpot_ms = models.FloatField(null=True, blank=True)
    output_tokens = models.IntegerField(null=True, blank=True)
    input_tokens = models.IntegerField(null=True, blank=True)
    tokens_source = models.CharField(max_length=16, blank=True, default="")
    model = models.CharField(max_length=128, blank=True, default="")
    model_calls = models.PositiveIntegerField(default=0)
    cost_nano_usd = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="USD x 1e9 at the model's price at t_send; empty: the model had no price.",
    )

    class Meta:
        indexes = [
            models.Index(fields=["app", "t_send_ms"], name="turn_app_send"),
            models.Index(fields=["app", "span_id"], name="turn_app_span"),
            # A conversation's turns (first-response accuracy, the session page, the
            # search by conversation id). Led by the conversation, not the application:
            # the opening turns are read by conversation and send time alone
            # (selectors.conversation_openers), where the (app, send) index cannot
            # serve, whatever the statistics say.
            models.Index(fields=["conversation_id", "app", "t_send_ms"], name="turn_conversation"),
            # Partial: only the few turns that regenerate another are looked up by it,
            # and leading with the span id lets a batch's IN list use the index.
            models.Index(
                fields=["regenerate_of"],
                name="turn_regen_of",
                condition=~models.Q(regenerate_of=""),
            ),
        ]

    def __str__(self) -> str:
        return f"turn {self.span_id} ({self.outcome})"


class Conversation(models.Model):
    """The send times a conversation's stitched turns span, so that reading its
    opening turns touches only the day partitions of turns it has rows in.

    Turns are day partitions by send time, and a conversation is looked up by its id,
    which is not that key: "its first two turns" read every day partition's
    (app, conversation, send) index, about 35 index descents a conversation a month in
    (bench/scale). The stitch writes this row with the turns in one statement, only
    ever widening ``[first_send_ms, last_send_ms]`` (a turn stitched again at another
    send time keeps its old time inside), so every stored turn of the conversation
    lies within it, and a conversation without a row has no turns. Retention deletes
    a row once its last send is past the application's cut, with its turns."""

    app = models.ForeignKey(Application, on_delete=models.CASCADE, db_index=False)
    conversation_id = models.CharField(max_length=128, blank=True, default="")
    first_send_ms = models.FloatField(help_text="Epoch ms: no stored turn was sent before.")
    last_send_ms = models.FloatField(help_text="Epoch ms: no stored turn was sent after.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["app", "conversation_id"], name="conversation_app_id")
        ]
        indexes = [
            # Retention: the application's conversations whose last send is past the cut.
            models.Index(fields=["app", "last_send_ms"], name="conversation_app_last"),
        ]

    def __str__(self) -> str:
        return self.conversation_id


class Restitch(models.Model):
    """A trace to stitch again: a batch stitched a turn regenerating one of its turns
    (``correlator.stitch.store``). Marking the trace dirty right there would wait for
    whichever sweep has claimed it, and two sweeps doing that to each other deadlock;
    the sweep moves these to the dirty traces after its batch commits."""

    app = models.ForeignKey(Application, on_delete=models.CASCADE, db_index=False)
    trace_id = models.CharField(max_length=32)
    marked_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.trace_id


class SweepRun(models.Model):
    """The last sweeps, for /metrics (a worker may run on another machine than web)."""

    started_at = models.DateTimeField()
    seconds = models.FloatField()
    stitched = models.PositiveIntegerField()
    finalized = models.PositiveIntegerField()

    class Meta:
        indexes = [models.Index(fields=["started_at"], name="sweeprun_started")]

    def __str__(self) -> str:
        return f"sweep at {self.started_at}: {self.stitched} stitched"


class Rollup(models.Model):
    """Turn figures for one application, period and dimension value, built from the
    stitched turns and merged upwards: minutes into hours, hours into days.

    Counts are exact; ``sketches`` holds mergeable sketches (``correlator.analytics.sketches``)
    as flat integer lists: a histogram per duration, HyperLogLogs for sessions and
    conversations, and unlinked-turn counts by cause.
    """

    class Period(models.TextChoices):
        MINUTE = "minute"
        HOUR = "hour"
        DAY = "day"

    app = models.ForeignKey(Application, on_delete=models.CASCADE, db_index=False)
    period = models.CharField(max_length=8, choices=Period.choices)
    dimension = models.CharField(max_length=16, blank=True, default="", help_text="'' is all.")
    start = models.DateTimeField()
    key = models.CharField(max_length=128, blank=True, default="")
    turns = models.PositiveIntegerField(default=0)
    stopped = models.PositiveIntegerField(default=0)
    abandoned = models.PositiveIntegerField(default=0)
    abandoned_before_first_token = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    regenerations = models.PositiveIntegerField(default=0, help_text="Turns with regenerate_of.")
    intent_corrections = models.PositiveIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    conversations_started = models.PositiveIntegerField(default=0)
    first_responses_good = models.PositiveIntegerField(default=0)
    scored_turns = models.PositiveIntegerField(default=0)
    hallucinated_turns = models.PositiveIntegerField(default=0)
    linked_turns = models.PositiveIntegerField(default=0)
    server_only_traces = models.PositiveIntegerField(default=0)
    cost_nano_usd = models.BigIntegerField(default=0, help_text="USD x 1e9 of the priced turns.")
    unpriced_turns = models.PositiveIntegerField(default=0, help_text="Turns with no price.")
    sketches = models.JSONField(default=dict)
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["app", "dimension", "period", "start", "key"], name="uniq_rollup"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.period} {self.start:%Y-%m-%d %H:%M} {self.dimension}={self.key}"


class EventRollup(models.Model):
    """The vitals and errors pages' figures for one application, period, kind, name,
    place and device class, built from the raw browser events by their receive time
    and merged upwards like ``Rollup`` (``correlator.analytics.event_rollups``).

    A vital's row: ``name`` the metric, ``place`` the page path (blank: every page's
    together), ``count`` the reports, ``sketch`` ``{"h": histogram}`` of their values
    (``LogHistogram.to_packed``). An error's row: ``name`` the message, ``place`` the
    top stack frame, ``count`` the errors, ``sketch``
    ``{"f", "t": first and last seen (µs since the epoch), "s": HyperLogLog of the
    sessions, "l": [[session pk, last seen µs], …] the latest sessions}``.
    """

    class Kind(models.TextChoices):
        VITAL = "vital"
        ERROR = "error"

    app = models.ForeignKey(Application, on_delete=models.CASCADE, db_index=False)
    period = models.CharField(max_length=8, choices=Rollup.Period.choices)
    start = models.DateTimeField()
    kind = models.CharField(max_length=8, choices=Kind.choices)
    device = models.CharField(max_length=16, blank=True, default="")
    name = models.TextField(blank=True, default="")
    place = models.TextField(blank=True, default="")
    count = models.PositiveIntegerField(default=0)
    sketch = models.JSONField(default=dict)
    computed_at = models.DateTimeField()

    class Meta:
        # No unique key (messages and paths are long): a rebuild deletes a period's
        # rows and inserts them again under its dirty mark's lock.
        indexes = [
            models.Index(fields=["app", "kind", "period", "start"], name="event_rollup_window")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.period} {self.start:%Y-%m-%d %H:%M} {self.name}"


class DirtyRollup(models.Model):
    """A period whose rollup rows must be rebuilt: the sweep marks the minutes of
    the turns it wrote; rebuilding a minute marks its hour, an hour its day.
    Claimed with ``FOR UPDATE SKIP LOCKED`` like dirty traces."""

    app = models.ForeignKey(Application, on_delete=models.CASCADE, db_index=False)
    period = models.CharField(max_length=8, choices=Rollup.Period.choices)
    start = models.DateTimeField()
    first_marked_at = models.DateTimeField()
    last_marked_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["app", "period", "start"], name="uniq_dirty_rollup"),
        ]
        indexes = [models.Index(fields=["period", "last_marked_at"], name="dirty_rollup_marked")]

    def __str__(self) -> str:
        return f"{self.period} {self.start}"
