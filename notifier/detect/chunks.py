"""A commit in chunks: which events and state writes go into each script (``store`` says why
each chunk holds every write of its viewers, and why that keeps a commit exactly once when it
stops half-way)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from notifier.detect.rules import Detection
    from notifier.detect.store import Checkpoint
    from notifier.events import EncodedEvent

__all__ = ["Chunk", "ChunkWrite", "KeepStreams", "keep_flag", "plan"]


@dataclass(slots=True)
class Chunk:
    """One script's share of a commit: events ``[start, end)`` and the viewers' writes."""

    start: int
    end: int
    upserts: list[str]
    deletes: list[str]
    streams: bool = False  # the last chunk: it writes the stream states too


@dataclass(slots=True)
class ChunkWrite:
    """One chunk as it is sent: what it is checked against and what it writes."""

    generation: int  # the generation Redis must be at (the chunk before left it)
    lease: str  # the lease the commit is written under
    commit: str  # the chunk's id (``meta.commit`` once it is applied)
    sequence: int  # the last event's sequence after the chunk
    polled_at: int | None  # the poll's start (ms), on a poll's first chunk; else None
    keep: str  # the stream states: "1" kept from now on, "-1" no longer, "" as they were
    upserts: list[str | bytes]  # viewer id, stored state, ...
    deletes: list[str]  # viewer ids
    events: Sequence[EncodedEvent]  # the commit's events; the chunk's are [start, end)
    start: int
    end: int
    stream_upserts: list[str | bytes]  # stream name, stored state, ... (the last chunk)
    stream_deletes: list[str | bytes]


class KeepStreams(enum.Enum):
    """Whether a commit's stream states are kept from now on, and from which chunk.

    A cluster's meta says whether its stream states are kept (``audiences``); a load that
    finds none kept takes the audiences as they are (no events), while one that finds them
    kept and an audience without a state knows its start was lost with a last chunk.
    """

    KEPT = "kept"  # kept already: nothing to mark
    FIRST = "first"  # kept from the first chunk on: the first poll from no state
    LAST = "last"  # with the states of the last chunk: audiences taken over as they are
    OFF = "off"  # stream events are off: forget the states (they would go stale)


def keep_flag(keep: KeepStreams | None, number: int, chunks: int) -> str:
    """``ChunkWrite.keep`` of chunk ``number`` of ``chunks``."""
    if keep is KeepStreams.FIRST and number == 1:
        return "1"
    if keep is KeepStreams.LAST and number == chunks:
        return "1"
    if keep is KeepStreams.OFF and number == 1:
        return "-1"
    return ""


def plan(
    detection: Detection | Checkpoint, events: int, limit: int, stream_writes: int = 0
) -> list[Chunk]:
    """The commit in chunks of at most ``limit`` operations (one larger only when one viewer's
    writes alone exceed it), each holding every write of its viewers: events in stream order,
    a viewer's state change in the chunk of its events, then the state changes without one;
    the events after ``detection.emissions`` (the stream events) and the stream writes last."""
    upserts, deletes = detection.upserts, detection.deletes
    emissions = detection.emissions
    viewer_events = len(emissions)
    if viewer_events > events:
        raise ValueError(f"{events} events for {viewer_events} emissions")
    if events + len(upserts) + len(deletes) + stream_writes <= limit:
        return [Chunk(0, events, list(upserts), list(deletes), streams=True)]
    removed = set(deletes)
    placed: set[str] = set()
    chunks: list[Chunk] = []
    current = Chunk(0, 0, [], [])
    ops = 0
    subjects = [emission.viewer_id for emission in emissions]
    index = 0
    while index < viewer_events:  # a viewer's events (``take`` inline: a first poll's hot loop)
        subject = subjects[index]
        end = index + 1
        while end < viewer_events and subjects[end] == subject:
            end += 1
        upserted = subject in upserts
        deleted = not upserted and subject in removed
        cost = end - index + (upserted or deleted)
        if ops and ops + cost > limit:
            chunks.append(current)
            current, ops = Chunk(index, index, [], []), 0
        ops += cost
        current.end = end
        if upserted:
            current.upserts.append(subject)
        elif deleted:
            current.deletes.append(subject)
        placed.add(subject)
        index = end

    def take(cost: int, start: int) -> None:
        nonlocal current, ops
        if ops and ops + cost > limit:
            chunks.append(current)
            current, ops = Chunk(start, start, [], []), 0
        ops += cost

    for viewer_id in upserts:
        if viewer_id not in placed:
            take(1, viewer_events)
            current.upserts.append(viewer_id)
    for viewer_id in deletes:
        if viewer_id not in placed:
            take(1, viewer_events)
            current.deletes.append(viewer_id)
    if events > viewer_events or stream_writes:
        take(events - viewer_events + stream_writes, viewer_events)
        current.end = events
    current.streams = True
    chunks.append(current)
    return chunks
