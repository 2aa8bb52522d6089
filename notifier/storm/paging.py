"""What the pages of one poll add up to: pure checks of the paging facts a server reports.

The client fetches; this module decides. A page is checked against the request that fetched it
(``check_page``: an answer for another page, or an empty page its own totals say is not empty),
the last page is worked out from whatever totals the server gives (``last_page``), and a pass
is checked as it goes and at its end (``Tally``): two pages holding the same rows, or far fewer
rows than the server reported.

Offset paging over a live audience drifts (storm-api.md): a viewer that moves while the pages
are read is missed by one page and returned twice by another, and a server whose order is not
stable reshuffles whole pages. Drift therefore trades missed viewers for repeats; it does not
lose rows. So a pass is short only when its pages returned fewer rows, repeats included, than
the server reported, by more than ``shortfall_allowed``. A missed viewer that drift explains is
the poller's to confirm (batch lookup), not a reason to fail the poll.

A viewer drift returns twice may come with two records (its counters moved in between): the
record of the later page wins (of the later pass, with several harness types), whatever order
the pages arrived in, so a poll's result does not depend on which request was faster. One page
listing an id twice is no drift but a broken answer: the poll is incomplete (``viewer_id``).
A server that keeps saying hasNext is followed ``EXTRA_PAGES`` past the end its own totals
report, no further (``paging``); one that reports no totals is bounded by ``poll_budget``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING

from notifier.errors import StormSchemaError

if TYPE_CHECKING:
    from .decode import Page, Viewer

__all__ = [
    "EXTRA_PAGES",
    "MAX_PAGES",
    "Tally",
    "check_page",
    "extended",
    "last_page",
    "more_after",
    "repeating",
    "shortfall_allowed",
]

MAX_PAGES = 1_000_000  # a runaway server that always says there is more stops here
EXTRA_PAGES = 10  # pages hasNext is followed past the last page the totals report
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
        raise StormSchemaError(
            f"asked for page {asked}, the server answered page {current}", kind="paging"
        )
    if not page.viewers and _rows_expected(page, asked, per_page):
        raise StormSchemaError(
            f"page {asked} came back empty, but the same answer reports {_totals(page)}",
            kind="paging",
        )


def extended(target: int, number: int, page: Page, new: int, per_page: int | None = None) -> int:
    """The target after page ``number`` (the last one so far): one more if it says hasNext,
    up to ``EXTRA_PAGES`` past the last page its totals report."""
    if number != target or not page.has_next or not page.viewers or target >= MAX_PAGES:
        return target
    if not new:
        raise repeating(number)
    last = last_page(page, per_page)
    if last is not None and number >= last + EXTRA_PAGES:
        raise StormSchemaError(
            f"page {number} still says hasNext, {number - last} pages past the {last} its"
            f" totals report ({_totals(page)})",
            kind="paging",
        )
    return target + 1


def more_after(page: Page, size: int) -> bool:
    """Without totals: is there a page after this one (hasNext, or else a full page)?"""
    if not page.viewers:
        return False
    return page.has_next if page.has_next is not None else len(page.viewers) >= size


def repeating(number: int) -> StormSchemaError:
    """The error for page ``number`` holding only repeats while the server says there is more."""
    return StormSchemaError(
        f"page {number} held only viewers already read, yet the server says there are more"
        " (does it ignore the page parameter?)",
        kind="paging",
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
    _ids: set[str] | None = None  # this pass's; None while it is the first (``viewers`` holds them)
    _pass: int = 0
    _read: list[tuple[tuple[int, int], tuple[str, ...]]] = field(default_factory=list)
    _ranks: dict[str, tuple[int, int]] | None = None  # id -> (pass, page), made at a first repeat
    _rows: int = 0
    _totals: set[int] = field(default_factory=set)
    _contents: dict[tuple[str, ...], int] = field(default_factory=dict)

    def start_pass(self, index: int = 0) -> None:
        """Begin reading one query's pages (the ``index``-th query of the poll)."""
        self._pass = index
        self._ids = set() if self.viewers else None
        self._rows, self._totals, self._contents = 0, set(), {}

    def add(self, page: Page, number: int, per_page: int | None) -> int:
        """Count page ``number`` in; return how many of its viewers are new to this pass.

        Raises ``StormSchemaError`` if it holds exactly the rows of another page of the pass
        (the server ignores ``page``, or serves one page in place of another), unless its own
        totals put it past the end (a server may answer there with the last page again), or
        if it lists one id twice. A viewer already read keeps the record of the later page.
        """
        self.pages += 1
        self._rows += len(page.viewers)
        if page.total_items is not None:
            self._totals.add(page.total_items)
            self.drift = self.drift or len(self._totals) > 1
        ids = [viewer.id for viewer in page.viewers]
        contents = tuple(ids)
        if len(contents) > 1:
            last = last_page(page, per_page)
            other = self._contents.setdefault(contents, number)
            if other != number and (last is None or number <= last):
                first, second = sorted((other, number))
                raise StormSchemaError(
                    f"pages {first} and {second} held the same {len(contents)} viewers"
                    " (does the server ignore the page parameter?)",
                    kind="paging",
                )
        rows = dict(zip(ids, page.viewers, strict=True))
        if len(rows) < len(ids):
            twice = next(vid for vid, n in Counter(ids).items() if n > 1)
            raise StormSchemaError(
                f"page {number} lists viewer {twice[:64]!r} twice", kind="viewer_id"
            )
        viewers, seen, ranks = self.viewers, self._ids, self._ranks
        before = len(viewers)
        rank = (self._pass, number)
        if viewers.keys().isdisjoint(rows):
            viewers.update(rows)
            if ranks is None:
                self._read.append((rank, contents))
            else:
                ranks.update(zip(contents, repeat(rank)))
        else:  # read before (drift): the later page's record wins
            if ranks is None:  # the first repeat of the poll: where each id was read
                ranks = self._ranks = {}
                for earlier, read in self._read:
                    ranks.update(zip(read, repeat(earlier)))
                self._read = []
            rows = {vid: v for vid, v in rows.items() if vid not in viewers or ranks[vid] < rank}
            viewers.update(rows)
            ranks.update(zip(rows, repeat(rank)))
        self.duplicates += len(page.viewers) - (len(viewers) - before)
        if seen is None:  # the first pass: its viewers are all of them so far
            return len(viewers) - before
        seen_before = len(seen)
        seen.update(ids)
        return len(seen) - seen_before

    def check_pass(self) -> None:
        """Raise ``StormSchemaError`` if the pass came back well short of the reported total.

        The bar is the smallest total any page reported. Rows that drift turned into repeats
        count as read (see the module docstring); only rows never returned count as missing.
        """
        if not self._totals:
            return
        total = min(self._totals)
        if total - self._rows > shortfall_allowed(total):
            held = len(self.viewers if self._ids is None else self._ids)
            repeats = self._rows - held
            raise StormSchemaError(
                f"the server reported {total} viewers but its pages held {held}"
                + (f" (and {repeats} repeats)" if repeats else ""),
                kind="paging",
            )
