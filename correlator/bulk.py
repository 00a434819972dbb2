"""Model rows as one jsonb document, to write many in one PostgreSQL statement
through ``jsonb_to_recordset`` (the stitch's batch write and the rollup rebuild's
insert): one parameter to adapt instead of an array per column.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec
from django.db import connection
from django.db.models import Field, Model


def _enc_hook(value: Any) -> Any:
    if isinstance(value, enum.Enum):  # Django's TextChoices members
        return value.value
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


encode_json = msgspec.json.Encoder(enc_hook=_enc_hook).encode


def columns_of(model: type[Model], *, skip: tuple[str, ...] = ("id",)) -> list[Field[Any, Any]]:
    return [f for f in model._meta.concrete_fields if f.column not in skip]


def record_of(obj: Model, fields: list[Field[Any, Any]]) -> dict[str, Any]:
    return {f.column: getattr(obj, f.attname) for f in fields}


def recordset_of(fields: list[Field[Any, Any]], extra: str = "") -> str:
    """The column definitions of ``jsonb_to_recordset(…) AS r(…)`` for these fields."""
    typed = ", ".join(f"{f.column} {f.db_type(connection)}" for f in fields)
    return f"{typed}, {extra}" if extra else typed
