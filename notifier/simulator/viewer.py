"""One simulated viewer: how a new one is drawn, its health samples, its state and record.

`draw_viewer` draws a new viewer's fields from the tables in `records`, one `random()` per
field in a fixed order (a seed gives the same viewers); `draw_health` draws one health sample;
`ViewerState` holds what changes (health, bandwidth, byte totals, a score a scenario shows
instead of the modelled one) and derives the list record at a tick. Per-tick growth (duration,
byte totals) is computed from the tick a value was last set at. No I/O.
"""

from __future__ import annotations

import math
from bisect import bisect
from typing import TYPE_CHECKING, Any

from notifier.simulator.records import (
    ADDRESS_PREFIXES,
    COUNTRIES,
    DEVICE_CUM,
    DEVICES,
    HARNESS_CUM,
    HARNESS_NAMES,
    NO_DATA,
    REGIONS,
    STREAM_KEYS,
    SYSTEM_HARNESS_TYPES,
    VIEWER_HARNESS_CUM,
    VIEWER_HARNESS_NAMES,
    between,
    health_grade,
    pick,
)

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Sequence

    from notifier.simulator.records import StreamLayout

__all__ = ["ViewerState", "draw_health", "draw_viewer"]

_PUBLISHERS = frozenset({"TRANSCODER", "FILE_WRITER", "RTMP_PUSH"})


def draw_viewer(
    rng: random.Random,
    new_id: Callable[[random.Random], str],
    *,
    app_ids: Sequence[str],
    layout: StreamLayout,
    stream: tuple[int, str] | None,
    tick: int,
    now_ms: int,
    tick_ms: int,
    base_duration: int | None,
    extra_fields: bool,
    no_data_rate: float,
) -> ViewerState:
    """A new viewer joining at `tick`; with `stream` (application index, key), a non-system
    viewer of that stream, else one of a stream drawn from `layout`."""
    # random() with index arithmetic rather than choice()/randint(): joins are the hot
    # path of step() and this keeps a 100k-viewer tick well under 100 ms.
    r = rng.random
    if base_duration is None:
        base_duration = int(r() * tick_ms)
    if stream is None:
        harness = HARNESS_NAMES[bisect(HARNESS_CUM, r() * HARNESS_CUM[-1])]
    else:
        harness = VIEWER_HARNESS_NAMES[bisect(VIEWER_HARNESS_CUM, r() * VIEWER_HARNESS_CUM[-1])]
    key: str | None = None  # the default layout draws the key below, per application
    if stream is not None:
        app, key = stream
    elif layout.cumulative:
        app, key = layout.streams[bisect(layout.cumulative, r() * layout.cumulative[-1])]
    else:
        app = int(r() * len(app_ids))
    country_code, country_name = pick(r, COUNTRIES)
    if harness in SYSTEM_HARNESS_TYPES:
        device, os_name, browser = "DESKTOP", "Linux", "Unknown"
        address = f"198.51.100.{1 + int(r() * 20)}"
    else:
        device, os_names, browsers = DEVICES[bisect(DEVICE_CUM, r() * DEVICE_CUM[-1])]
        os_name, browser = pick(r, os_names), pick(r, browsers)
        address = f"{pick(r, ADDRESS_PREFIXES)}{1 + int(r() * 254)}"
    static = {
        "id": new_id(rng),
        "state": "PUBLISHED" if r() < 0.97 else "CONNECTED",
        "harnessType": harness,
        "applicationId": app_ids[app],
        "streamKey": pick(r, STREAM_KEYS[app]) if key is None else key,
        "remoteAddress": address,
        "deviceType": device,
        "osName": os_name,
        "browserName": browser,
        "countryCode": country_code,
        "countryName": country_name,
        "startTime": now_ms - base_duration,
    }
    viewer = ViewerState(static, tick, base_duration)
    if harness in _PUBLISHERS:
        viewer.in_bw = between(r, 300_000, 1_500_000)
        viewer.nominal_out = 0 if harness == "FILE_WRITER" else between(r, 1_000, 900_000)
    elif harness == "CLUSTER_DATA_CLIENT":
        viewer.in_bw, viewer.nominal_out = between(r, 50, 2_000), between(r, 500, 20_000)
    else:
        viewer.in_bw, viewer.nominal_out = between(r, 20, 200), between(r, 80_000, 800_000)
    if extra_fields:
        viewer.extra = {"region": pick(r, REGIONS)}
    viewer.score, viewer.grade, viewer.omit_grade = draw_health(r, None, no_data_rate)
    viewer.refresh_bandwidth()
    viewer.in_bytes = viewer.in_bw * base_duration // 1000
    viewer.out_bytes = viewer.out_bw * base_duration // 1000
    return viewer


def draw_health(
    r: Callable[[], float], previous: int | None, no_data_rate: float
) -> tuple[int, str | None, bool]:
    """One health sample: (healthScore, healthGrade, whether the grade key is omitted)."""
    if r() < no_data_rate:
        form = r()
        if form < 0.8:
            return 0, NO_DATA, False
        return 0, None, form >= 0.9  # score 0 with a null, or a missing, grade
    if previous and r() < 0.5:  # drift from the last sample
        score = previous + int(r() * 41) - 20
    else:  # a fresh sample: mostly healthy, with a long tail of bad ones
        score = 100 - int(-22.0 * math.log(1.0 - r()))  # exponential, mean 22
    score = max(1, min(100, score))
    return score, health_grade(score), False


class ViewerState:
    """Mutable state of one viewer; the record is derived from it at a given tick."""

    __slots__ = (
        "base_duration",
        "bytes_tick",
        "encoded",
        "encoded_tick",
        "extra",
        "forced",
        "grade",
        "harness",
        "haystack",
        "held",
        "id",
        "in_bw",
        "in_bytes",
        "join_tick",
        "nominal_out",
        "omit_grade",
        "out_bw",
        "out_bytes",
        "score",
        "scripted",
        "static",
    )

    def __init__(self, static: dict[str, Any], join_tick: int, base_duration: int) -> None:
        self.static = static
        self.id: str = static["id"]
        self.harness: str = static["harnessType"]
        self.haystack: str | None = None  # built on the first search
        self.join_tick = join_tick
        self.base_duration = base_duration
        self.bytes_tick = join_tick
        self.in_bw = 0
        self.out_bw = 0
        self.nominal_out = 0
        self.in_bytes = 0
        self.out_bytes = 0
        self.score = 0
        self.grade: str | None = NO_DATA
        self.omit_grade = False
        self.extra: dict[str, Any] | None = None
        self.encoded: bytes | None = None
        self.encoded_tick = -1
        #: A score a scenario shows instead of the modelled sample (always with its grade).
        self.forced: int | None = None
        #: Whether an active incident holds `forced`; otherwise the next modelled health
        #: change ends it (a recovered viewer stays recovered until its health moves).
        self.held = False
        #: Whether a ramp owns this viewer (it joins and leaves with the ramp, not at random).
        self.scripted = False

    @property
    def shown(self) -> tuple[int, str | None, bool]:
        """The health the record shows: (healthScore, healthGrade, whether it omits the grade)."""
        if self.forced is not None:
            return self.forced, health_grade(self.forced), False
        return self.score, self.grade, self.omit_grade

    def accrue(self, tick: int, tick_ms: int) -> None:
        """Fold the bytes sent up to `tick` into the totals (before a bandwidth change)."""
        elapsed = (tick - self.bytes_tick) * tick_ms
        self.in_bytes += self.in_bw * elapsed // 1000
        self.out_bytes += self.out_bw * elapsed // 1000
        self.bytes_tick = tick

    def refresh_bandwidth(self) -> None:
        """Derive the outgoing bandwidth from the health shown (worse health, less sent)."""
        score = self.shown[0]
        self.out_bw = (
            self.nominal_out if score == 0 else self.nominal_out * (35 + 65 * score // 100) // 100
        )
        self.encoded = None

    def record(self, tick: int, tick_ms: int) -> dict[str, Any]:
        """The list record of this viewer at `tick`."""
        elapsed = (tick - self.bytes_tick) * tick_ms
        record = dict(self.static)
        record["duration"] = self.base_duration + (tick - self.join_tick) * tick_ms
        record["inBandwidth"] = self.in_bw
        record["outBandwidth"] = self.out_bw
        record["inTotalBytes"] = self.in_bytes + self.in_bw * elapsed // 1000
        record["outTotalBytes"] = self.out_bytes + self.out_bw * elapsed // 1000
        score, grade, omit_grade = self.shown
        record["healthScore"] = score
        if not omit_grade:
            record["healthGrade"] = grade
        if self.extra is not None:
            record.update(self.extra)
        return record
