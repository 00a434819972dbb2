"""A metric data point as one row of PostgreSQL's binary COPY format, and back.

The mapping packs each point straight into the bytes the metric store COPYs into
``MetricPoint``: one ``struct`` call a point, no tuple of Python values in between,
and PostgreSQL reads numbers without parsing text. A row is a field count, then
each column (``COLUMNS`` order) as its length and big-endian value, -1 for NULL.
The key leads (time, then series), so sorting the rows as bytes sorts them by key:
both are positive, and a big-endian integer compares as its bytes do. SQLite and
tests read rows back with ``decode``.
"""

from __future__ import annotations

import struct
from typing import Any

# (column, PostgreSQL type), in row order: the key in its index order first.
COLUMNS = (
    ("time_ns", "bigint"), ("series_id", "bigint"), ("start_ns", "bigint"),
    ("value", "float8"), ("int_value", "bigint"), ("count", "bigint"), ("sum", "float8"),
    ("min", "float8"), ("max", "float8"), ("bounds", "jsonb"), ("bucket_counts", "jsonb"),
    ("flags", "integer"),
)  # fmt: skip

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
SERIES_AT = slice(18, 26)  # the series id's bytes: after the field count and the time

_NULL = b"\xff\xff\xff\xff"
_HEAD = ">hiqiqiq"  # field count, time, series, start
# Arguments: 12, 8, time, 8, series, 8, start, then the value's.
_DOUBLE = struct.Struct(_HEAD + "id").pack  # 8, value
_INT = struct.Struct(_HEAD + "idiq").pack  # 8, float(value), 8, value
_NO_VALUE = struct.Struct(_HEAD).pack
_HISTOGRAM = struct.Struct(_HEAD + "iiiq").pack  # -1, -1 (value, int_value), 8, count
_DOUBLE_OR_NULL = struct.Struct(">id").pack
_JSONB = struct.Struct(">ib").pack  # length, jsonb version 1 (then the JSON text)
_FLAGS = struct.Struct(">ii").pack


def _flags(flags: int) -> bytes:
    return _FLAGS(4, flags)


# What follows the value in a row, by how the value was sent, for the usual flags 0.
_AFTER_DOUBLE = _NULL * 7 + _flags(0)  # int_value .. bucket_counts
_AFTER_INT = _NULL * 6 + _flags(0)  # count .. bucket_counts
_AFTER_NO_VALUE = _NULL * 8  # value .. bucket_counts (then the flags)


def double_row(time_ns: int, series_id: int, start_ns: int, value: float, flags: int) -> bytes:
    head = _DOUBLE(12, 8, time_ns, 8, series_id, 8, start_ns, 8, value)
    return head + (_AFTER_DOUBLE if not flags else _NULL * 7 + _flags(flags))


def int_row(time_ns: int, series_id: int, start_ns: int, value: int, flags: int) -> bytes:
    head = _INT(12, 8, time_ns, 8, series_id, 8, start_ns, 8, float(value), 8, value)
    return head + (_AFTER_INT if not flags else _NULL * 6 + _flags(flags))


def no_value_row(time_ns: int, series_id: int, start_ns: int, flags: int) -> bytes:
    return _NO_VALUE(12, 8, time_ns, 8, series_id, 8, start_ns) + _AFTER_NO_VALUE + _flags(flags)


def jsonb(text: bytes) -> bytes:
    """A JSON text as a jsonb field."""
    return _JSONB(len(text) + 1, 1) + text


def histogram_row(
    time_ns: int,
    series_id: int,
    start_ns: int,
    count: int,
    total: float | None,
    low: float | None,
    high: float | None,
    bounds: bytes,
    counts: bytes,
    flags: int,
) -> bytes:
    """``bounds`` and ``counts``: jsonb fields (``jsonb``)."""
    return b"".join(
        (
            _HISTOGRAM(12, 8, time_ns, 8, series_id, 8, start_ns, -1, -1, 8, count),
            _NULL if total is None else _DOUBLE_OR_NULL(8, total),
            _NULL if low is None else _DOUBLE_OR_NULL(8, low),
            _NULL if high is None else _DOUBLE_OR_NULL(8, high),
            bounds,
            counts,
            _flags(flags),
        )
    )


def with_series(row: bytes, series_id: int) -> bytes:
    """``row`` with its series id replaced."""
    return row[: SERIES_AT.start] + series_id.to_bytes(8, "big") + row[SERIES_AT.stop :]


def copy_data(rows: list[bytes]) -> bytes:
    """The rows as one binary COPY stream."""
    return b"".join((SIGNATURE, *rows, TRAILER))


def decode(row: bytes) -> tuple[Any, ...]:
    """A row's values (jsonb as its JSON text), for SQLite and tests."""
    (fields,) = struct.unpack_from(">h", row)
    if fields != len(COLUMNS):
        raise ValueError(f"a point row has {len(COLUMNS)} fields, not {fields}")
    values: list[Any] = []
    at = 2
    for _, kind in COLUMNS:
        (size,) = struct.unpack_from(">i", row, at)
        at += 4
        if size < 0:
            values.append(None)
            continue
        raw = row[at : at + size]
        at += size
        if kind == "float8":
            values.append(struct.unpack(">d", raw)[0])
        elif kind == "jsonb":
            values.append(raw[1:].decode())
        else:
            values.append(int.from_bytes(raw, "big", signed=True))
    if at != len(row):
        raise ValueError(f"a point row of {len(row)} bytes has {len(row) - at} more")
    return tuple(values)
