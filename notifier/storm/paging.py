"""What the pages of one poll add up to: pure checks of the paging facts a server reports.

The client fetches; this module decides. A page is checked against the request that fetched it
(``check_page``: an answer for another page, or an empty page its own totals say is not empty),
the last page is worked out from whatever totals the server gives (``last_page``), and a pass
is checked against the totals at its end (``Tally.check_pass``). Offset paging over a live
audience drifts a little (see storm-api.md), so only a shortfall beyond that is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from notifier.errors import StormSchemaError

if TYPE_CHECKING:
    from .decode import Page, Viewer

__all__ = ["MAX_PAGES", "Tally", "check_page", "last_page", "shortfall_allowed"]

MAX_PAGES = 1_000_000  # a runaway server that always says there is more stops here
SHORTFALL_MIN = 5  # viewers a pass may miss to paging drift before it is incomplete ...
SHORTFALL_SHARE = 0.02  # ... or this share of the reported total, whichever is larger


def last_page(page: Page, per_page: int | None) -> int | None:
    """The last page number ``page`` implies, or None if it reports no usable totals.

    The larger of ``totalPages`` and ``ceil(totalItems / rows a page)`` (some servers round
    totalPages down or report 0), where rows a page is ``itemsPerPage``, else ``per_page``
    (what page 1 held). At least 1, at most ``MAX_PAGES``.
    """
    candidates: list[int] = []
    if page.total_pages is not None:
        candidates.append(page.total_pages)
    size = page.items_per_page or per_page
    if page.total_items is not None and size:
        candidates.append(-(-page.total_items // size))
    if not candidates:
        return None
    return min(max(*candidates, 1), MAX_PAGES)


def check_page(page: Page, asked: int, per_page: int | None) -> None:
    """Raise ``StormSchemaError`` if the answer to page ``asked`` contradicts the request or itself.

    Two contradictions are caught: a ``currentPage`` other than the one asked for while that
    page is within the answer's own totals (a proxy dropped ``page``, or pages count from 0),
    and an empty page at an offset the answer's own totals say holds viewers.
    """
    last = last_page(page, per_page)
    current = page.current_page
    if current is not None and current != asked and last is not None and asked <= last:
        raise StormSchemaError(f"asked for page {asked}, the server answered page {current}")
    if not page.viewers and _rows_expected(page, asked, per_page):
        raise StormSchemaError(
            f"page {asked} came back empty, but the same answer reports {_totals(page)}"
        )


def shortfall_allowed(total: int) -> int:
    """How many of ``total`` reported viewers one pass may miss to drift and still be complete."""
    return max(SHORTFALL_MIN, int(total * SHORTFALL_SHARE))


def _rows_expected(page: Page, asked: int, per_page: int | None) -> bool:
    if page.total_items is not None:
        size = page.items_per_page or per_page
        if size is None:
            return asked == 1 and page.total_items > 0
        return page.total_items > (asked - 1) * size
    if page.total_pages is not None:
        return page.total_pages > 1 and asked <= page.total_pages  # "1 page" may mean none
    return False


def _totals(page: Page) -> str:
    facts = []
    if page.total_items is not None:
        facts.append(f"totalItems {page.total_items}")
    if page.items_per_page is not None:
        facts.append(f"itemsPerPage {page.items_per_page}")
    if page.total_pages is not None:
        facts.append(f"totalPages {page.total_pages}")
    return ", ".join(facts)


@dataclass(slots=True)
class Tally:
    """What one poll has gathered so far, pass by pass (one pass per query)."""

    viewers: dict[str, Viewer] = field(default_factory=dict)
    pages: int = 0
    duplicates: int = 0
    drift: bool = False
    _pass_ids: set[str] = field(default_factory=set)
    _pass_totals: set[int] = field(default_factory=set)

    def start_pass(self) -> None:
        """Begin reading one query's pages."""
        self._pass_ids = set()
        self._pass_totals = set()

    def add(self, page: Page) -> int:
        """Count ``page`` in; return how many of its viewers are new to this pass."""
        self.pages += 1
        if page.total_items is not None:
            self._pass_totals.add(page.total_items)
            self.drift = self.drift or len(self._pass_totals) > 1
        viewers = self.viewers
        before = len(viewers)
        seen = self._pass_ids
        seen_before = len(seen)
        for viewer in page.viewers:
            viewers[viewer.id] = viewer
            seen.add(viewer.id)
        self.duplicates += len(page.viewers) - (len(viewers) - before)
        return len(seen) - seen_before

    def check_pass(self) -> None:
        """Raise ``StormSchemaError`` if the pass holds far fewer viewers than the server reported.

        The smallest total any page reported is the bar; missing up to ``shortfall_allowed``
        of it is ordinary drift over a live audience, missing more is a page lost somewhere.
        """
        if not self._pass_totals:
            return
        total = min(self._pass_totals)
        held = len(self._pass_ids)
        if total - held > shortfall_allowed(total):
            raise StormSchemaError(f"the server reported {total} viewers but its pages held {held}")
