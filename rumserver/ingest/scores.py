"""Evaluation scores (hallucination, relevance, user-defined) for a trace."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated

import msgspec
from django.db import connection, transaction

from rumserver.applications import IngestApp
from rumserver.ingest.beacon.parse import split_validation_error
from rumserver.ingest.beacon.schema import TraceId
from rumserver.ingest.dirty import mark_dirty
from rumserver.ingest.errors import IngestError
from rumserver.ingest.text import storable_text
from rumserver.models import Score

COMMENT_LIMIT = 1024

ScoreName = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$(?!\n)",
        description="Score name, e.g. `hallucination`.",
    ),
]


class ScoreIn(msgspec.Struct, forbid_unknown_fields=True):
    """An evaluation score for a trace (the body of POST /api/v1/scores)."""

    trace_id: TraceId
    name: ScoreName
    value: Annotated[float, msgspec.Meta(description="A finite number.")]
    comment: Annotated[
        str,
        msgspec.Meta(
            description=f"Optional; NUL characters are removed, kept to {COMMENT_LIMIT} characters."
        ),
    ] = ""


class RecordedScore(msgspec.Struct):
    """The score as stored (the answer of POST /api/v1/scores)."""

    id: int
    trace_id: str
    name: str
    value: float


_decoder = msgspec.json.Decoder(ScoreIn)


def score_record(*, app: IngestApp, body: bytes, now: datetime) -> RecordedScore:
    """Store one score and mark its trace dirty (the correlator recomputes rates)."""
    try:
        data = _decoder.decode(body)
    except msgspec.ValidationError as exc:
        message, path = split_validation_error(exc)
        raise IngestError(400, f"invalid score: {message}", field=path) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise IngestError(400, "body is not valid UTF-8 JSON") from None
    if not math.isfinite(data.value):
        raise IngestError(400, "invalid score: value must be a finite number", field="value")
    comment, _ = storable_text(data.comment, COMMENT_LIMIT)
    with transaction.atomic():
        score = Score.objects.create(
            app_id=app.id,
            trace_id=data.trace_id,
            name=data.name,
            value=data.value,
            comment=comment,
            received_at=now,
        )
        with connection.cursor() as cursor:
            mark_dirty(cursor, app_id=app.id, trace_ids=[data.trace_id], now=now)
    return RecordedScore(id=score.pk, trace_id=score.trace_id, name=score.name, value=score.value)
