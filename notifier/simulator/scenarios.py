"""Scripted scenarios of a simulated audience: stream-wide incidents and rising audiences.

    Incident  STREAM_KEY:START:DURATION[:SHARE]   from START for DURATION, SHARE (default 0.5)
                                                  of the stream's viewers show a bad health
                                                  score (10-40, graded); when it ends they show
                                                  a recovered one (70-100) until their health
                                                  next moves
    Ramp      STREAM_KEY:VIEWERS:DURATION[:HOLD]  the stream gains 0 -> VIEWERS viewers over
                                                  DURATION; with HOLD they stay HOLD longer,
                                                  then leave over DURATION (the audience ends)

Times are virtual: ms since the population's tick 0 (`tick * tick_ms`). This module decides
what a scenario wants at a moment (`Incident.active`, `Ramp.target`) and parses and checks
the text forms; `Population` applies them at every `step()` with a `random.Random` of their
own, apart from the one that moves the rest of the audience, so a scenario changes nothing
outside its stream. "Viewers" are the stream's non-system clients (`SYSTEM_HARNESS_TYPES`
are not an audience). No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final

from notifier.durations import parse_duration
from notifier.simulator.records import between, stream_layout

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["Incident", "Ramp", "bad_score", "check_scenarios", "recovered_score"]

_BAD: Final = (10, 40)
_RECOVERED: Final = (70, 100)


def bad_score(r: Callable[[], float]) -> int:
    """A health score an incident shows (below any sensible drop threshold)."""
    return between(r, *_BAD)


def recovered_score(r: Callable[[], float]) -> int:
    """A health score a viewer shows once its incident is over."""
    return between(r, *_RECOVERED)


def _fields(text: str, form: str, example: str, counts: tuple[int, ...]) -> list[str]:
    fields = text.split(":")
    if len(fields) not in counts or not all(field.strip() for field in fields):
        raise ValueError(f"expected {form}, e.g. {example}")
    return [field.strip() for field in fields]


def _ms(text: str, what: str, *, positive: bool = False) -> int:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"{what} {text!r}: {exc}") from None
    ms = round(seconds * 1000)
    if positive and ms <= 0:
        raise ValueError(f"{what} {text!r}: must be above 0")
    return ms


@dataclass(frozen=True, slots=True)
class Incident:
    """From `start_ms` for `duration_ms`, `share` of a stream's viewers show bad health."""

    stream_key: str
    start_ms: int
    duration_ms: int
    share: float = 0.5

    FORM: ClassVar[str] = "STREAM_KEY:START:DURATION[:SHARE]"
    EXAMPLE: ClassVar[str] = "live-1:30s:2m:0.5"

    @classmethod
    def parse(cls, text: str) -> Incident:
        """`STREAM_KEY:START:DURATION[:SHARE]`; ValueError with a one-line reason."""
        key, start, length, *rest = _fields(text, cls.FORM, cls.EXAMPLE, (3, 4))
        share = 0.5
        if rest:
            try:
                share = float(rest[0])
            except ValueError:
                raise ValueError(f"share {rest[0]!r}: expected a number in (0, 1]") from None
            if not 0.0 < share <= 1.0:
                raise ValueError(f"share {rest[0]!r}: must be above 0 and at most 1")
        return cls(key, _ms(start, "start"), _ms(length, "duration", positive=True), share)

    @property
    def end_ms(self) -> int:
        """When the incident is over (exclusive)."""
        return self.start_ms + self.duration_ms

    def active(self, elapsed_ms: int) -> bool:
        """Whether the incident holds its viewers at this virtual time."""
        return self.start_ms <= elapsed_ms < self.end_ms

    def wanted(self, audience: int) -> int:
        """How many of `audience` viewers it holds while active (rounded half up)."""
        return int(self.share * audience + 0.5)


@dataclass(frozen=True, slots=True)
class Ramp:
    """A stream gains `viewers` over `duration_ms`; with `hold_ms`, they leave again."""

    stream_key: str
    viewers: int
    duration_ms: int
    hold_ms: int | None = None

    FORM: ClassVar[str] = "STREAM_KEY:VIEWERS:DURATION[:HOLD]"
    EXAMPLE: ClassVar[str] = "launch:1500:2m:1m"

    @classmethod
    def parse(cls, text: str) -> Ramp:
        """`STREAM_KEY:VIEWERS:DURATION[:HOLD]`; ValueError with a one-line reason."""
        key, count, length, *rest = _fields(text, cls.FORM, cls.EXAMPLE, (3, 4))
        try:
            viewers = int(count)
        except ValueError:
            raise ValueError(f"viewers {count!r}: expected a whole number, 1 or more") from None
        if viewers < 1:
            raise ValueError(f"viewers {count!r}: expected a whole number, 1 or more")
        hold = _ms(rest[0], "hold") if rest else None
        return cls(key, viewers, _ms(length, "duration", positive=True), hold)

    @property
    def end_ms(self) -> int | None:
        """When the last ramp viewer has left, or None if they stay."""
        return None if self.hold_ms is None else 2 * self.duration_ms + self.hold_ms

    def target(self, elapsed_ms: int) -> int:
        """The ramp's viewers at this virtual time: up linearly, held, down linearly."""
        up = self.viewers * min(max(elapsed_ms, 0), self.duration_ms) // self.duration_ms
        if self.hold_ms is None:
            return up
        falling = min(max(elapsed_ms - self.duration_ms - self.hold_ms, 0), self.duration_ms)
        return up - self.viewers * falling // self.duration_ms


def check_scenarios(
    streams: int | None, incidents: Sequence[Incident], ramps: Sequence[Ramp]
) -> None:
    """Raise ValueError (one line) when an incident names a stream nobody watches."""
    keys = stream_layout(streams).keys
    known = set(keys) | {ramp.stream_key for ramp in ramps}
    for incident in incidents:
        if incident.stream_key not in known:
            shown = ", ".join(keys) if len(keys) <= 8 else f"{keys[0]} ... {keys[-1]}"
            raise ValueError(
                f"stream {incident.stream_key!r} is neither one of the streams ({shown})"
                " nor a ramp's"
            )
