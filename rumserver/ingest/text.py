"""Free text from a request, as the database can store it."""

from __future__ import annotations


def storable_text(value: str, limit: int) -> tuple[str, bool]:
    """``value`` without NUL characters (PostgreSQL text and jsonb cannot hold one, and
    a body with one must not fail forever) and cut to ``limit`` characters; and
    whether that changed it."""
    changed = False
    if "\x00" in value:
        value, changed = value.replace("\x00", ""), True
    if len(value) > limit:
        return value[:limit], True
    return value, changed
