"""A commit in chunks: which events and state writes go into each script (``store`` says why
each chunk holds every write of its viewers, and why that keeps a commit exactly once when it
stops half-way)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from notifier.detect.rules import Detection
    from notifier.detect.store import Checkpoint

__all__ = ["Chunk", "plan"]


@dataclass(slots=True)
class Chunk:
    """One script's share of a commit: events ``[start, end)`` and the viewers' writes."""

    start: int
    end: int
    upserts: list[str]
    deletes: list[str]
    streams: bool = False  # the last chunk: it writes the stream states too


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
