"""What a simulated viewer record is made of (the list item of storm-api.md).

The documented vocabulary (harness types, health grades, the `ViewerQuery` filter rules), the
tables a new viewer's fields are drawn from (`viewer` draws them), and the layout of streams an
audience is spread over (`stream_layout`). No randomness of its own and no I/O.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "ADDRESS_PREFIXES",
    "COUNTRIES",
    "DEVICES",
    "DEVICE_CUM",
    "HARNESS_CUM",
    "HARNESS_NAMES",
    "HARNESS_TYPES",
    "ID_ALPHABET",
    "ID_TABLE",
    "NO_DATA",
    "REGIONS",
    "STREAM_KEYS",
    "SYSTEM_HARNESS_TYPES",
    "VIEWER_HARNESS_CUM",
    "VIEWER_HARNESS_NAMES",
    "StreamLayout",
    "ViewerQuery",
    "between",
    "haystack",
    "health_grade",
    "pick",
    "stream_layout",
]

NO_DATA: Final = "No Data"

#: The nine documented `harnessType` values, with the weight the model draws them by.
_HARNESS_WEIGHTS: Final = (
    ("STORM_MSE_VIEWER", 52.0),
    ("STORM_HLS_VIEWER", 30.0),
    ("GENERIC_HLS_VIEWER", 5.0),
    ("GENERIC_DASH_VIEWER", 3.0),
    ("RTMP_VIEWER", 3.0),
    ("CLUSTER_DATA_CLIENT", 2.5),
    ("TRANSCODER", 1.5),
    ("FILE_WRITER", 1.0),
    ("RTMP_PUSH", 2.0),
)
HARNESS_TYPES: Final = frozenset(name for name, _ in _HARNESS_WEIGHTS)
SYSTEM_HARNESS_TYPES: Final = frozenset(
    {"CLUSTER_DATA_CLIENT", "TRANSCODER", "FILE_WRITER", "RTMP_PUSH"}
)
HARNESS_NAMES: Final = tuple(name for name, _ in _HARNESS_WEIGHTS)
HARNESS_CUM: Final = tuple(accumulate(weight for _, weight in _HARNESS_WEIGHTS))
#: The same draw restricted to viewers (what a scripted audience is made of).
VIEWER_HARNESS_NAMES: Final = tuple(n for n in HARNESS_NAMES if n not in SYSTEM_HARNESS_TYPES)
VIEWER_HARNESS_CUM: Final = tuple(
    accumulate(w for n, w in _HARNESS_WEIGHTS if n not in SYSTEM_HARNESS_TYPES)
)

ID_ALPHABET: Final = string.ascii_lowercase + string.digits
ID_TABLE: Final = bytes((ID_ALPHABET * 8)[:256], "ascii")  # byte -> [a-z0-9], slightly biased
#: The default streams: the keys of each of three applications, drawn uniformly per level.
STREAM_KEYS: Final = (
    ("123", "main", "backstage"),
    ("news", "weather"),
    ("sports-hd", "sports-sd"),
)
COUNTRIES: Final = (
    ("PL", "Poland"),
    ("DE", "Germany"),
    ("US", "United States"),
    ("GB", "United Kingdom"),
    ("FR", "France"),
    ("ES", "Spain"),
    ("IT", "Italy"),
    ("NL", "Netherlands"),
    ("BR", "Brazil"),
    ("JP", "Japan"),
    ("IN", "India"),
    ("CA", "Canada"),
)
REGIONS: Final = ("eu-central", "eu-west", "us-east", "us-west", "ap-south")
DEVICES: Final = (
    ("DESKTOP", ("Windows 10/11", "macOS", "Linux"), ("Chrome", "Firefox", "Edge", "Safari")),
    ("MOBILE", ("Android", "iOS"), ("Chrome Mobile", "Mobile Safari", "Samsung Internet")),
    ("TABLET", ("iPadOS", "Android"), ("Mobile Safari", "Chrome Mobile")),
)
DEVICE_CUM: Final = (55.0, 92.0, 100.0)
ADDRESS_PREFIXES: Final = ("203.0.113.", "198.51.100.")

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ViewerQuery:
    """The filters of `GET /api/cluster/viewers`; `None` means "not filtered"."""

    search: str | None = None
    harness_type: str | None = None
    system_clients: bool | None = None

    def matches(self, record: dict[str, Any]) -> bool:
        """Whether a record passes this query (the server applies the same rules)."""
        harness = record["harnessType"]
        if self.harness_type is not None and harness != self.harness_type:
            return False
        if self.system_clients is not None and (
            (harness in SYSTEM_HARNESS_TYPES) != self.system_clients
        ):
            return False
        if self.search:
            return self.search.lower() in haystack(record)
        return True


def health_grade(score: int) -> str:
    """The grade Storm shows for a (non-"No Data") health score."""
    if score >= 80:
        return "Very Good"
    if score >= 60:
        return "Good"
    if score >= 40:
        return "Average"
    if score >= 20:
        return "Bad"
    return "Very Bad"


@dataclass(frozen=True, slots=True)
class StreamLayout:
    """The streams an audience is spread over: (application index, streamKey) and the
    cumulative weights a new viewer picks one by (empty: the default two-level draw)."""

    streams: tuple[tuple[int, str], ...]
    cumulative: tuple[float, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        """Every streamKey, the most watched first when weighted."""
        return tuple(key for _, key in self.streams)


def stream_layout(count: int | None) -> StreamLayout:
    """The default seven streams, or `count` streams `live-1` ... `live-<count>`.

    Counted streams are spread round-robin over the applications and watched Zipf-like:
    stream k in proportion to 1/k, so `live-1` holds the largest audience.
    """
    if count is None:
        return StreamLayout(
            tuple((app, key) for app, keys in enumerate(STREAM_KEYS) for key in keys)
        )
    if count < 1:
        raise ValueError(f"streams must be 1 or more, not {count}")
    streams = tuple(((k - 1) % len(STREAM_KEYS), f"live-{k}") for k in range(1, count + 1))
    return StreamLayout(streams, tuple(accumulate(1.0 / k for k in range(1, count + 1))))


def pick(r: Callable[[], float], items: Sequence[_T]) -> _T:
    """One of `items`, chosen with one draw of `r` (cheaper than `random.choice`)."""
    return items[int(r() * len(items))]


def between(r: Callable[[], float], low: int, high: int) -> int:
    """An int in `[low, high]`, with one draw of `r` (cheaper than `random.randint`)."""
    return low + int(r() * (high - low + 1))


def haystack(record: dict[str, Any]) -> str:
    """The lower-cased text a `search` filter matches against."""
    fields = ("id", "streamKey", "remoteAddress", "countryName", "browserName")
    return "\x00".join(str(record[name]) for name in fields).lower()
