"""The error every ingest step raises; views turn it into a JSON answer."""

from __future__ import annotations


class IngestError(Exception):
    """A request ingest refuses, with the HTTP status and the field at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        retry_after: int | None = None,
        allow: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.retry_after = retry_after
        self.allow = allow  # the methods a 405 names

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.message}
        if self.field:
            body["field"] = self.field
        return body
