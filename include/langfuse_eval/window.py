"""The evaluation window: a half-open interval ``[start, end)`` on trace start time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from include.langfuse_eval.errors import ConfigurationError


@dataclass(frozen=True)
class Window:
    """A half-open time interval with timezone-aware bounds, stored in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for label, value in (("start", self.start), ("end", self.end)):
            if value.tzinfo is None or value.utcoffset() is None:
                raise ConfigurationError(
                    f"Window {label} {value.isoformat()} has no timezone: give an offset "
                    "such as +00:00."
                )
        object.__setattr__(self, "start", self.start.astimezone(UTC))
        object.__setattr__(self, "end", self.end.astimezone(UTC))
        if self.start >= self.end:
            raise ConfigurationError(
                f"Window start {self.start.isoformat()} is not before its end "
                f"{self.end.isoformat()}."
            )

    def contains(self, moment: datetime) -> bool:
        """Tell whether a moment lies in ``[start, end)``."""
        return self.start <= moment < self.end

    def to_dict(self) -> dict[str, str]:
        """Serialize to ISO 8601 strings, the form that travels through XCom."""
        return {
            "start": isoformat_utc(self.start, "microseconds"),
            "end": isoformat_utc(self.end, "microseconds"),
        }

    @classmethod
    def from_dict(cls, value: dict[str, str]) -> Window:
        """Parse the form written by :meth:`to_dict`."""
        return cls(start=parse_timestamp(value["start"]), end=parse_timestamp(value["end"]))


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO 8601 timestamp with an offset or a ``Z`` suffix.

    Raises:
        ConfigurationError: The value is not ISO 8601 or has no timezone.
    """
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise ConfigurationError(
            f"Timestamp {value!r} is invalid: use ISO 8601 such as 2026-12-03T05:00:00+00:00."
        ) from error
    if parsed.tzinfo is None:
        raise ConfigurationError(
            f"Timestamp {value!r} has no timezone: add an offset such as +00:00 or Z."
        )
    return parsed.astimezone(UTC)


def isoformat_utc(value: datetime, timespec: str = "milliseconds") -> str:
    """Format a datetime in UTC with a ``Z`` suffix, to milliseconds by default."""
    return value.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")
