"""A pure, seeded model of the audience of a Storm cluster.

Everything here is a function of the settings and of the calls made: one `random.Random(seed)`
for the audience, another for the scripted scenarios (`scenarios`: incidents and ramps, which
therefore change nothing outside their stream), a virtual clock that advances `tick_ms` per
`step()` from `epoch_ms`, no wall clock and no I/O. Records have the shape of a
`GET /api/cluster/viewers` list item (see storm-api.md). Record times follow the virtual
clock: the initial audience started a minute to three hours before tick 0, a viewer who joins
later started within the tick it joined, so `startTime + duration` is always `now_ms`. A
`Simulator` sets `epoch_ms` from its clock's now and nothing else from it: one seed played at
two moments gives the same audience, every time shifted by the difference.

Per-tick growth (duration, byte totals) is computed lazily from the tick a value was last
set at, so `step()` costs O(joins + leaves + health changes), not O(viewers) (an active
incident adds one pass over the viewers per tick). Each viewer's encoded JSON is cached until
its next change or the next tick. What a record is made of lives in `records` (the vocabulary,
re-exported here, and the tables) and `viewer` (drawing one, its state and record).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from notifier.simulator.records import (
    HARNESS_TYPES,
    ID_ALPHABET,
    ID_TABLE,
    NO_DATA,
    STREAM_KEYS,
    SYSTEM_HARNESS_TYPES,
    ViewerQuery,
    haystack,
    health_grade,
    stream_layout,
)
from notifier.simulator.scenarios import (
    Incident,
    Ramp,
    bad_score,
    check_scenarios,
    recovered_score,
)
from notifier.simulator.viewer import ViewerState, draw_health, draw_viewer

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "FIXED_EPOCH_MS",
    "HARNESS_TYPES",
    "INITIAL_MAX_MS",
    "INITIAL_MIN_MS",
    "NO_DATA",
    "SYSTEM_HARNESS_TYPES",
    "Change",
    "Population",
    "PopulationSettings",
    "ViewerQuery",
    "health_grade",
]

_encode = msgspec.json.Encoder().encode

#: Virtual time of tick 0 for a `Population` whose settings leave `epoch_ms` unset.
FIXED_EPOCH_MS = 1_770_000_000_000
#: How long the initial audience has been watching at tick 0: `INITIAL_MIN_MS` to
#: `INITIAL_MAX_MS`, spread evenly (viewers who join later start within the tick they join).
INITIAL_MIN_MS = 60_000
INITIAL_MAX_MS = INITIAL_MIN_MS + 3 * 3_599_000


@dataclass(frozen=True, slots=True)
class PopulationSettings:
    """How the audience is drawn, how it moves per tick, and what is scripted over it.

    `streams`: None for the seven default streams of three applications, else that many
    streams watched Zipf-like (`records.stream_layout`). `epoch_ms`: the virtual Unix time of
    tick 0; None lets a `Simulator` start it at its clock's now (a bare `Population` then
    starts at `FIXED_EPOCH_MS`, staying a function of its settings). Invalid values raise
    ValueError with a one-line reason.
    """

    seed: int = 0
    viewers: int = 1000
    join_rate: float = 0.02
    leave_rate: float = 0.02
    health_change_rate: float = 0.05
    no_data_rate: float = 0.03
    tick_ms: int = 1000
    epoch_ms: int | None = None
    extra_fields: bool = False
    streams: int | None = None
    incidents: tuple[Incident, ...] = ()
    ramps: tuple[Ramp, ...] = ()

    def __post_init__(self) -> None:
        check_scenarios(self.streams, self.incidents, self.ramps)


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
        self._epoch_ms = FIXED_EPOCH_MS if settings.epoch_ms is None else settings.epoch_ms
        self._rng = random.Random(settings.seed)
        self._viewers: dict[str, ViewerState] = {}
        self._order: list[ViewerState] | None = None
        self._selections: dict[ViewerQuery, list[ViewerState]] = {}
        self._apps = tuple(
            "c_" + "".join(self._rng.choices(ID_ALPHABET, k=16)) for _ in STREAM_KEYS
        )
        self._layout = stream_layout(settings.streams)
        self._scripts = random.Random(f"{settings.seed}:scenarios")
        #: Per ramp, the viewers it added; per incident, the viewers it holds.
        self._ramped: tuple[dict[str, ViewerState], ...] = tuple({} for _ in settings.ramps)
        self._held: tuple[dict[str, ViewerState], ...] = tuple({} for _ in settings.incidents)
        for _ in range(settings.viewers):  # watching for a minute to three hours already
            self._add(INITIAL_MIN_MS + (self._rng.randint(1_000, 3_600_000) - 1_000) * 3)
        self._play()

    # -- reading -------------------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        """Virtual Unix time in ms: `epoch_ms + tick * tick_ms`."""
        return self._epoch_ms + self.elapsed_ms

    @property
    def elapsed_ms(self) -> int:
        """Virtual time since tick 0, the clock scenarios are scripted in."""
        return self.tick * self.settings.tick_ms

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

    def incident_viewers(self) -> set[str]:
        """The viewers an incident holds at a bad health score now (the ground truth)."""
        return {
            viewer_id for held in self._held for viewer_id in held if viewer_id in self._viewers
        }

    def page(
        self, offset: int, limit: int, query: ViewerQuery | None = None
    ) -> tuple[int, list[bytes]]:
        """The number of matching viewers and the JSON of those in `[offset, offset+limit)`."""
        selected = self._select(query) if query is not None else self._ordered()
        return len(selected), [self._encoded(v) for v in selected[offset : offset + limit]]

    # -- moving --------------------------------------------------------------------------

    def step(self) -> list[Change]:
        """Advance one tick: some viewers leave, some change health, some join; then the
        scenarios play (ramp viewers join or leave, incidents hold or release viewers)."""
        self.tick += 1
        rng, settings = self._rng, self.settings
        modelled = self._modelled()
        size = len(modelled)
        leaving = min(size, self._count(settings.leave_rate * size, rng))
        changing = min(size - leaving, self._count(settings.health_change_rate * size, rng))
        joining = self._count(settings.join_rate * max(size, 1), rng)
        chosen = rng.sample(modelled, leaving + changing) if size else []
        changes = self._remove(chosen[:leaving])
        changes.extend(self._move_health(chosen[leaving:], rng))
        changes.extend(self._change("joined", self._add()) for _ in range(joining))
        changes.extend(self._play())
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
        """Set a health sample; `omit_grade` drops the `healthGrade` key from the record.

        A viewer an incident holds keeps showing the incident's score until it is released.
        """
        viewer = self._viewers[viewer_id]
        self._set_health(viewer, score, grade, omit_grade=omit_grade)

    def shuffle(self) -> None:
        """Reorder the viewers (the server order is otherwise stable)."""
        viewers = list(self._viewers.values())
        self._rng.shuffle(viewers)
        self._viewers = {viewer.id: viewer for viewer in viewers}
        self._relayout()

    # -- scenarios -----------------------------------------------------------------------

    def _play(self) -> list[Change]:
        """Bring every ramp and incident to what it wants at this tick."""
        settings, elapsed, r = self.settings, self.elapsed_ms, self._scripts
        changes: list[Change] = []
        for ramp, members in zip(settings.ramps, self._ramped, strict=True):
            changes.extend(self._ramp(ramp, members, elapsed))
        scripted = [viewer_id for members in self._ramped for viewer_id in members]
        if scripted and self.tick:  # ramp viewers' health moves like everyone's
            count = self._count(settings.health_change_rate * len(scripted), r)
            changes.extend(self._move_health(r.sample(scripted, min(count, len(scripted))), r))
        active = [incident.active(elapsed) for incident in settings.incidents]
        audiences = self._audiences() if any(active) else {}
        for incident, held, on in zip(settings.incidents, self._held, active, strict=True):
            for viewer_id in [i for i in held if i not in self._viewers]:
                del held[viewer_id]
            if on:
                changes.extend(self._hold(incident, held, audiences[incident.stream_key]))
            elif held:  # over: the held viewers show a recovered score
                for viewer in held.values():
                    viewer.held = False
                    changes.extend(self._force(viewer, recovered_score(r.random)))
                held.clear()
        return changes

    def _ramp(self, ramp: Ramp, members: dict[str, ViewerState], elapsed: int) -> list[Change]:
        for viewer_id in [i for i in members if i not in self._viewers]:
            del members[viewer_id]
        wanted = ramp.target(elapsed)
        if wanted < len(members):
            leaving = self._scripts.sample(list(members), len(members) - wanted)
            for viewer_id in leaving:
                del members[viewer_id]
            return self._remove(leaving)
        app = next((a for a, key in self._layout.streams if key == ramp.stream_key), 0)
        joined = []
        for _ in range(wanted - len(members)):
            viewer = self._add(rng=self._scripts, stream=(app, ramp.stream_key))
            viewer.scripted = True
            members[viewer.id] = viewer
            joined.append(self._change("joined", viewer))
        return joined

    def _hold(
        self, incident: Incident, held: dict[str, ViewerState], audience: list[ViewerState]
    ) -> list[Change]:
        """Hold `incident.share` of the stream's audience at a bad score."""
        r, wanted, changes = self._scripts, incident.wanted(len(audience)), []
        if len(held) > wanted:  # the audience shrank: some go back to their modelled health
            for viewer_id in r.sample(list(held), len(held) - wanted):
                viewer = held.pop(viewer_id)
                viewer.held = False
                changes.extend(self._force(viewer, None))
        elif len(held) < wanted:
            free = [viewer for viewer in audience if not viewer.held]
            for viewer in r.sample(free, min(wanted - len(held), len(free))):
                viewer.held = True
                held[viewer.id] = viewer
                changes.extend(self._force(viewer, bad_score(r.random)))
        return changes

    def _audiences(self) -> defaultdict[str, list[ViewerState]]:
        """The non-system viewers of each streamKey, in server order."""
        audiences: defaultdict[str, list[ViewerState]] = defaultdict(list)
        for viewer in self._ordered():
            if viewer.harness not in SYSTEM_HARNESS_TYPES:
                audiences[viewer.static["streamKey"]].append(viewer)
        return audiences

    def _modelled(self) -> list[str]:
        """The viewers the random model moves (ramp viewers move with their ramp)."""
        if any(self._ramped):
            return [viewer_id for viewer_id, v in self._viewers.items() if not v.scripted]
        return list(self._viewers)

    def _force(self, viewer: ViewerState, score: int | None) -> list[Change]:
        """Show `score` instead of the modelled sample (None: show the model again)."""
        before = viewer.shown
        viewer.accrue(self.tick, self.settings.tick_ms)
        viewer.forced = score
        viewer.refresh_bandwidth()
        return [] if viewer.shown == before else [self._change("health", viewer)]

    # -- internals -----------------------------------------------------------------------

    @staticmethod
    def _count(expected: float, rng: random.Random) -> int:
        whole = int(expected)
        return whole + (1 if rng.random() < expected - whole else 0)

    def _change(self, kind: Literal["joined", "health"], viewer: ViewerState) -> Change:
        score, grade, _ = viewer.shown
        return Change(self.tick, kind, viewer.id, score, grade)

    def _move_health(self, viewer_ids: Iterable[str], rng: random.Random) -> list[Change]:
        changes = []
        for viewer_id in viewer_ids:
            viewer = self._viewers[viewer_id]
            self._resample_health(viewer, rng)
            if not viewer.held:  # a held viewer still shows the incident's score
                changes.append(self._change("health", viewer))
        return changes

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

    def _new_id(self, rng: random.Random) -> str:
        while True:
            viewer_id = "v_" + rng.randbytes(16).translate(ID_TABLE).decode("ascii")
            if viewer_id not in self._viewers:
                return viewer_id

    def _add(
        self,
        base_duration: int | None = None,
        *,
        rng: random.Random | None = None,
        stream: tuple[int, str] | None = None,
    ) -> ViewerState:
        """A new viewer, at the end of the server order; with `stream`, a viewer of it."""
        settings = self.settings
        viewer = draw_viewer(
            self._rng if rng is None else rng,
            self._new_id,
            app_ids=self._apps,
            layout=self._layout,
            stream=stream,
            tick=self.tick,
            now_ms=self.now_ms,
            tick_ms=settings.tick_ms,
            base_duration=base_duration,
            extra_fields=settings.extra_fields,
            no_data_rate=settings.no_data_rate,
        )
        self._viewers[viewer.id] = viewer
        if self._order is not None:
            self._order.append(viewer)
        self._selections.clear()
        return viewer

    def _resample_health(self, viewer: ViewerState, rng: random.Random) -> None:
        current = (viewer.score, viewer.grade, viewer.omit_grade)
        sample = current
        for _ in range(8):
            sample = draw_health(rng.random, viewer.score, self.settings.no_data_rate)
            if sample != current:
                break
        score, grade, omit = sample
        self._set_health(viewer, score, grade, omit_grade=omit)

    def _set_health(
        self, viewer: ViewerState, score: int, grade: str | None, *, omit_grade: bool
    ) -> None:
        """Set the modelled sample; it ends a recovered score a past incident left shown."""
        viewer.accrue(self.tick, self.settings.tick_ms)
        viewer.score, viewer.grade, viewer.omit_grade = score, grade, omit_grade
        if not viewer.held:
            viewer.forced = None
        viewer.refresh_bandwidth()

    def _record(self, viewer: ViewerState) -> dict[str, Any]:
        return viewer.record(self.tick, self.settings.tick_ms)

    def _encoded(self, viewer: ViewerState) -> bytes:
        if viewer.encoded is None or viewer.encoded_tick != self.tick:
            viewer.encoded = _encode(self._record(viewer))
            viewer.encoded_tick = self.tick
        return viewer.encoded
