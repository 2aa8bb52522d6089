"""Tracked viewers missing from a poll's list, asked for by id before they count as missed.

Offset paging over a live audience can skip a viewer that never left (the rows shift between
two pages), so the poller asks the batch endpoint about the absent ones. A deployment whose
batch endpoint cannot help (it refuses the request, or answers in another shape) is not asked
again; a lookup that fails for now means no absent viewer may count a miss this poll, since we
cannot tell who left. Both are said once, and so is the recovery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from notifier.errors import StormError, StormRequestError, StormSchemaError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from structlog.typing import FilteringBoundLogger

    from notifier.detect.rules import Track
    from notifier.storm import StormClient, Viewer

__all__ = ["MAX_LOOKUPS", "AbsentCheck"]

MAX_LOOKUPS = 2000  # absent viewers confirmed per poll; a larger exodus is real, not drift


class AbsentCheck:
    """Confirms absent viewers with one cluster's batch endpoint (module doc)."""

    def __init__(self, client: StormClient, *, enabled: bool, log: FilteringBoundLogger) -> None:
        self._client = client
        self._enabled = enabled
        self._ok = True
        self._log = log

    async def confirm(
        self, seen: Mapping[str, Viewer], tracked: Mapping[str, Track]
    ) -> tuple[Mapping[str, Viewer], bool]:
        """Tracked viewers the list skipped but the server still knows, and whether the
        others may count a miss (not when the lookup failed: then we cannot tell)."""
        if not self._enabled or tracked.keys() <= seen.keys():  # (in C: every poll)
            return {}, True
        absent = [vid for vid in tracked if vid not in seen]
        if not absent:
            return {}, True
        if len(absent) > MAX_LOOKUPS:
            absent.sort(key=lambda vid: tracked[vid].missed, reverse=True)
            absent = absent[:MAX_LOOKUPS]
        try:
            lookup = await self._client.lookup(absent)
        except (StormRequestError, StormSchemaError) as exc:
            self._enabled = False  # this deployment's batch endpoint cannot help
            self._log.warning("poller.lookup_unsupported", error=str(exc))
            return {}, True
        except StormError as exc:
            if self._ok:
                self._log.warning(
                    "poller.lookup_failed",
                    error=str(exc),
                    effect="missing viewers count no miss until lookups work",
                )
            self._ok = False
            return {}, False
        if not self._ok:
            self._log.info("poller.lookup_recovered")
        self._ok = True
        return lookup.found, True
