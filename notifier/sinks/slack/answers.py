"""What a Slack Web API answer means for a delivery (SPEC 5.1): its ``Outcome``, in one table.

Slack answers nearly everything ``HTTP 200`` with ``{"ok": false, "error": "<code>"}``::

    ok                                     go on (the message's ts is kept)
    paced (our pacer, not Slack)           flow control: the channel's turn is far off
    ratelimited, or HTTP 429               flow control: Retry(after=Retry-After, counted=False),
                                           no attempt used; every process holds the channel
    invalid_auth, account_inactive,        Failed(pause=True): the token or the channel is not
    token_revoked, channel_not_found,      usable; the sink pauses loudly, its events wait for
    not_in_channel, is_archived            an operator (SIGHUP or a restart)
    msg_too_long, invalid_blocks           Failed: that message can never be sent: dead letter
    message_not_found (chat.update)        not here: the sink posts a new message instead
    any other error code                   Retry on the schedule
    no answer (timeout, connection)        Retry on the schedule
    another HTTP status, no error code     what it means for any delivery (``sinks.http``)

Reasons name the method and Slack's code, never the token or the URL.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Final

from notifier.sinks.base import Delivered, Failed, Outcome, Retry
from notifier.sinks.http import classify

if TYPE_CHECKING:
    from notifier.sinks.slack.webapi import Answer

__all__ = [
    "DEFAULT_RETRY_AFTER",
    "MESSAGE_NOT_FOUND",
    "PACED",
    "PAUSE_ERRORS",
    "PERMANENT_ERRORS",
    "RATE_LIMITED",
    "is_rate_limit",
    "outcome",
]

RATE_LIMITED: Final = "ratelimited"
PACED: Final = "paced"
"""Not Slack's: the channel's pacer says its next turn is ``retry_after`` seconds away."""
MESSAGE_NOT_FOUND: Final = "message_not_found"
DEFAULT_RETRY_AFTER: Final = 1.0  # a 429 without Retry-After: Slack's pace, not a hot loop

PAUSE_ERRORS: Final = {
    "invalid_auth": "the token is not valid",
    "account_inactive": "the token's user or workspace is deactivated",
    "token_revoked": "the token was revoked",
    "channel_not_found": "no such channel, or the token's workspace cannot see it",
    "not_in_channel": "invite the app's bot user to the channel",
    "is_archived": "the channel is archived",
}
"""Errors that no retry can fix, with what an operator should do: the sink pauses."""

PERMANENT_ERRORS: Final = frozenset({"msg_too_long", "invalid_blocks"})
"""Errors of one message: sending it again would fail again, so it is dead-lettered."""

_DELIVERED: Final = Delivered(status=200)


def is_rate_limit(answer: Answer) -> bool:
    """Slack asked us to slow down (``ratelimited`` or HTTP 429)."""
    return not answer.ok and (answer.status == 429 or answer.error == RATE_LIMITED)


def outcome(answer: Answer) -> Outcome:  # noqa: PLR0911 - one return a row of the table
    """The delivery outcome of an answer (see the table above)."""
    if answer.ok:
        return _DELIVERED
    method = f"Slack {answer.method}"
    if answer.transport is not None:
        return Retry(f"{method}: {answer.transport}")
    if answer.error == PACED:
        wait = answer.retry_after or 0.0
        return Retry(
            "waiting for the channel's turn (a message a second)", after=wait, counted=False
        )
    if is_rate_limit(answer):
        after = answer.retry_after if answer.retry_after is not None else DEFAULT_RETRY_AFTER
        return Retry(f"{method}: {RATE_LIMITED}", status=answer.status, after=after, counted=False)
    error = answer.error
    if error is None:
        status = answer.status or 0
        headers = {"Retry-After": str(answer.retry_after)} if answer.retry_after else {}
        told = classify(status, headers, b"")
        if isinstance(told, Delivered):  # 2xx without ok: true is no answer Slack gives
            return Retry(f"{method}: HTTP {status} without ok", status=status)
        return replace(told, reason=f"{method}: {told.reason}")
    reason = f"{method}: {error}"
    if error in PAUSE_ERRORS:
        return Failed(f"{reason} ({PAUSE_ERRORS[error]})", status=answer.status, pause=True)
    if error in PERMANENT_ERRORS:
        return Failed(reason, status=answer.status)
    return Retry(reason, status=answer.status)
