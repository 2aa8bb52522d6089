"""A pure, seeded model of the audience of a Storm cluster.

Everything here is a function of the seed and of the calls made: one `random.Random(seed)`,
a virtual clock that advances `tick_ms` per `step()`, no wall clock and no I/O. Records have
the shape of a `GET /api/cluster/viewers` list item (see storm-api.md).

Per-tick growth (duration, byte totals) is computed lazily from the tick a value was last
set at, so `step()` costs O(joins + leaves + health changes), not O(viewers). Each viewer's
encoded JSON is cached until its next change or the next tick. What a record is made of (the
vocabulary, the tables fields are drawn from, the per-viewer state) lives in `records`; the
vocabulary is re-exported here.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from notifier.simulator.records import (
    ADDRESS_PREFIXES,
    COUNTRIES,
    DEVICE_CUM,
    DEVICES,
    HARNESS_CUM,
    HARNESS_NAMES,
    HARNESS_TYPES,
    ID_ALPHABET,
    ID_TABLE,
    NO_DATA,
    REGIONS,
    STREAM_KEYS,
    SYSTEM_HARNESS_TYPES,
    ViewerQuery,
    ViewerState,
    between,
    haystack,
    health_grade,
    pick,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "HARNESS_TYPES",
    "NO_DATA",
    "SYSTEM_HARNESS_TYPES",
    "Change",
    "Population",
    "PopulationSettings",
    "ViewerQuery",
    "health_grade",
]

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class PopulationSettings:
    """How the audience is drawn and how it moves per tick."""

    seed: int = 0
    viewers: int = 1000
    join_rate: float = 0.02
    leave_rate: float = 0.02
    health_change_rate: float = 0.05
    no_data_rate: float = 0.03
    tick_ms: int = 1000
    epoch_ms: int = 1_770_000_000_000
    extra_fields: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    """What one step did to one viewer: the ground truth for detection tests."""

    tick: int
    kind: Literal["joined", "left", "health"]
    viewer_id: str
    health_score: int | None
    health_grade: str | None


class Population:
    """The viewers of a simulated cluster, advanced one virtual tick at a time."""

    def __init__(self, settings: PopulationSettings) -> None:
        self.settings = settings
        self.tick = 0
        self._rng = random.Random(settings.seed)
        self._viewers: dict[str, ViewerState] = {}
        self._order: list[ViewerState] | None = None
        self._selections: dict[ViewerQuery, list[ViewerState]] = {}
        self._apps = tuple(
            "c_" + "".join(self._rng.choices(ID_ALPHABET, k=16)) for _ in STREAM_KEYS
        )
        for _ in range(settings.viewers):
            self._add(self._rng.randint(1_000, 3_600_000))

    # -- reading -------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        """Virtual Unix time in ms: `epoch_ms + tick * tick_ms`."""
        return self.settings.epoch_ms + self.tick * self.settings.tick_ms

    def __len__(self) -> int:
        return len(self._viewers)

    def records(self) -> list[dict[str, Any]]:
        """Every current viewer as a list record, in server order."""
        return [self._record(viewer) for viewer in self._ordered()]

    def get(self, viewer_id: str) -> dict[str, Any] | None:
        """One viewer's list record, or None if it is not connected."""
        viewer = self._viewers.get(viewer_id)
        return None if viewer is None else self._record(viewer)

    def ids(self) -> set[str]:
        """The ids of the current viewers."""
        return set(self._viewers)

    def page(
        self, offset: int, limit: int, query: ViewerQuery | None = None
    ) -> tuple[int, list[bytes]]:
        """The number of matching viewers and the JSON of those in `[offset, offset+limit)`."""
        selected = self._select(query) if query is not None else self._ordered()
        return len(selected), [self._encoded(v) for v in selected[offset : offset + limit]]

    # -- moving --------------------------------------------------------------------------

    def step(self) -> list[Change]:
        """Advance one tick: some viewers leave, some change health, some join."""
        self.tick += 1
        rng, settings, size = self._rng, self.settings, len(self._viewers)
        leaving = min(size, self._count(settings.leave_rate * size))
        changing = min(size - leaving, self._count(settings.health_change_rate * size))
        joining = self._count(settings.join_rate * max(size, 1))
        chosen = rng.sample(list(self._viewers), leaving + changing) if size else []
        changes = self._remove(chosen[:leaving])
        for viewer_id in chosen[leaving:]:
            viewer = self._viewers[viewer_id]
            self._resample_health(viewer)
            changes.append(self._change("health", viewer))
        changes.extend(self._change("joined", self._add()) for _ in range(joining))
        return changes

    def churn(self, n: int) -> list[Change]:
        """`n` random viewers leave and `n` new ones join, without advancing the clock."""
        chosen = self._rng.sample(list(self._viewers), min(n, len(self._viewers)))
        changes = self._remove(chosen)
        changes.extend(self._change("joined", self._add()) for _ in range(n))
        return changes

    def join(self, n: int = 1) -> list[str]:
        """Add `n` new viewers at the end of the server order; return their ids."""
        return [self._add().id for _ in range(n)]

    def leave(self, viewer_ids: Iterable[str]) -> None:
        """Remove these viewers; unknown ids are ignored."""
        self._remove(list(viewer_ids))

    def set_health(
        self, viewer_id: str, score: int, grade: str | None, *, omit_grade: bool = False
    ) -> None:
        """Set a health sample; `omit_grade` drops the `healthGrade` key from the record."""
        viewer = self._viewers[viewer_id]
        self._set_health(viewer, score, grade, omit_grade=omit_grade)

    def shuffle(self) -> None:
        """Reorder the viewers (the server order is otherwise stable)."""
        viewers = list(self._viewers.values())
        self._rng.shuffle(viewers)
        self._viewers = {viewer.id: viewer for viewer in viewers}
        self._relayout()

    # -- internals -----------------------------------------------------------------------

    def _count(self, expected: float) -> int:
        whole = int(expected)
        return whole + (1 if self._rng.random() < expected - whole else 0)

    def _change(self, kind: Literal["joined", "health"], viewer: ViewerState) -> Change:
        return Change(self.tick, kind, viewer.id, viewer.score, viewer.grade)

    def _ordered(self) -> list[ViewerState]:
        if self._order is None:
            self._order = list(self._viewers.values())
        return self._order

    def _select(self, query: ViewerQuery) -> list[ViewerState]:
        selected = self._selections.get(query)
        if selected is None:
            if len(self._selections) >= 64:
                self._selections.clear()
            needle = (query.search or "").lower()
            selected = [
                viewer
                for viewer in self._ordered()
                if (query.harness_type is None or viewer.harness == query.harness_type)
                and (
                    query.system_clients is None
                    or (viewer.harness in SYSTEM_HARNESS_TYPES) == query.system_clients
                )
                and needle in (viewer.haystack or self._index(viewer))
            ]
            self._selections[query] = selected
        return selected

    @staticmethod
    def _index(viewer: ViewerState) -> str:
        viewer.haystack = haystack(viewer.static)
        return viewer.haystack

    def _relayout(self) -> None:
        self._order = None
        self._selections.clear()

    def _remove(self, viewer_ids: Sequence[str]) -> list[Change]:
        changes = [
            Change(self.tick, "left", viewer_id, None, None)
            for viewer_id in viewer_ids
            if self._viewers.pop(viewer_id, None) is not None
        ]
        if changes:
            self._relayout()
        return changes

    def _new_id(self) -> str:
        while True:
            viewer_id = "v_" + self._rng.randbytes(16).translate(ID_TABLE).decode("ascii")
            if viewer_id not in self._viewers:
                return viewer_id

    def _add(self, base_duration: int | None = None) -> ViewerState:
        # random() with index arithmetic rather than choice()/randint(): joins are the hot
        # path of step() and this keeps a 100k-viewer tick well under 100 ms.
        rng, settings = self._rng, self.settings
        r = rng.random
        if base_duration is None:
            base_duration = int(r() * settings.tick_ms)
        harness = HARNESS_NAMES[bisect(HARNESS_CUM, r() * HARNESS_CUM[-1])]
        app = int(r() * len(self._apps))
        country_code, country_name = pick(r, COUNTRIES)
        if harness in SYSTEM_HARNESS_TYPES:
            device, os_name, browser = "DESKTOP", "Linux", "Unknown"
            address = f"198.51.100.{1 + int(r() * 20)}"
        else:
            device, os_names, browsers = DEVICES[bisect(DEVICE_CUM, r() * DEVICE_CUM[-1])]
            os_name, browser = pick(r, os_names), pick(r, browsers)
            address = f"{pick(r, ADDRESS_PREFIXES)}{1 + int(r() * 254)}"
        static = {
            "id": self._new_id(),
            "state": "PUBLISHED" if r() < 0.97 else "CONNECTED",
            "harnessType": harness,
            "applicationId": self._apps[app],
            "streamKey": pick(r, STREAM_KEYS[app]),
            "remoteAddress": address,
            "deviceType": device,
            "osName": os_name,
            "browserName": browser,
            "countryCode": country_code,
            "countryName": country_name,
            "startTime": self.now_ms - base_duration,
        }
        viewer = ViewerState(static, self.tick, base_duration)
        if harness in {"TRANSCODER", "FILE_WRITER", "RTMP_PUSH"}:
            viewer.in_bw = between(r, 300_000, 1_500_000)
            viewer.nominal_out = 0 if harness == "FILE_WRITER" else between(r, 1_000, 900_000)
        elif harness == "CLUSTER_DATA_CLIENT":
            viewer.in_bw, viewer.nominal_out = between(r, 50, 2_000), between(r, 500, 20_000)
        else:
            viewer.in_bw, viewer.nominal_out = between(r, 20, 200), between(r, 80_000, 800_000)
        if settings.extra_fields:
            viewer.extra = {"region": pick(r, REGIONS)}
        score, grade, omit = self._draw_health(None)
        viewer.score, viewer.grade, viewer.omit_grade = score, grade, omit
        viewer.out_bw = self._out_bandwidth(viewer)
        viewer.in_bytes = viewer.in_bw * base_duration // 1000
        viewer.out_bytes = viewer.out_bw * base_duration // 1000
        self._viewers[viewer.id] = viewer
        if self._order is not None:
            self._order.append(viewer)
        self._selections.clear()
        return viewer

    def _draw_health(self, previous: int | None) -> tuple[int, str | None, bool]:
        r = self._rng.random
        if r() < self.settings.no_data_rate:
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

    def _resample_health(self, viewer: ViewerState) -> None:
        current = (viewer.score, viewer.grade, viewer.omit_grade)
        sample = current
        for _ in range(8):
            sample = self._draw_health(viewer.score)
            if sample != current:
                break
        score, grade, omit = sample
        self._set_health(viewer, score, grade, omit_grade=omit)

    def _set_health(
        self, viewer: ViewerState, score: int, grade: str | None, *, omit_grade: bool
    ) -> None:
        elapsed = (self.tick - viewer.bytes_tick) * self.settings.tick_ms
        viewer.in_bytes += viewer.in_bw * elapsed // 1000
        viewer.out_bytes += viewer.out_bw * elapsed // 1000
        viewer.bytes_tick = self.tick
        viewer.score, viewer.grade, viewer.omit_grade = score, grade, omit_grade
        viewer.out_bw = self._out_bandwidth(viewer)
        viewer.encoded = None

    @staticmethod
    def _out_bandwidth(viewer: ViewerState) -> int:
        if viewer.score == 0:
            return viewer.nominal_out
        return viewer.nominal_out * (35 + 65 * viewer.score // 100) // 100

    def _record(self, viewer: ViewerState) -> dict[str, Any]:
        tick, tick_ms = self.tick, self.settings.tick_ms
        elapsed = (tick - viewer.bytes_tick) * tick_ms
        record = dict(viewer.static)
        record["duration"] = viewer.base_duration + (tick - viewer.join_tick) * tick_ms
        record["inBandwidth"] = viewer.in_bw
        record["outBandwidth"] = viewer.out_bw
        record["inTotalBytes"] = viewer.in_bytes + viewer.in_bw * elapsed // 1000
        record["outTotalBytes"] = viewer.out_bytes + viewer.out_bw * elapsed // 1000
        record["healthScore"] = viewer.score
        if not viewer.omit_grade:
            record["healthGrade"] = viewer.grade
        if viewer.extra is not None:
            record.update(viewer.extra)
        return record

    def _encoded(self, viewer: ViewerState) -> bytes:
        if viewer.encoded is None or viewer.encoded_tick != self.tick:
            viewer.encoded = _encode(self._record(viewer))
            viewer.encoded_tick = self.tick
        return viewer.encoded
