"""``notifier demo --slack``: Slack app mode against a stand-in of Slack on this machine.

``LocalSlack`` answers ``chat.postMessage`` and ``chat.update`` on 127.0.0.1 for one bot token
and keeps the channel in memory; the demo's Slack app sink posts there (``sink_settings``),
through the same code and Redis book-keeping as against Slack. ``channel_view`` draws the
channel's newest message as Slack would show it (its blocks, mrkdwn turned into terminal
styles) with its thread's size, for the live view; ``summary`` says in one line what the
channel holds, for the end of a demo without a terminal.
"""

from __future__ import annotations

import html
import itertools
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from rich.console import Group
from rich.panel import Panel
from rich.text import Text

__all__ = ["CHANNEL", "LocalSlack", "channel_view", "sink_settings", "summary"]

CHANNEL = "CDEMO0SLACK"
INCIDENT_EVENTS = (
    "stream.health_degraded",
    "stream.health_recovered",
    "stream.audience_ended",
    "viewer.health_dropped",
    "viewer.health_recovered",
)
NEWEST = 60  # characters of the newest message the summary quotes
_CODE = "bright_black"  # the style of a code block's lines (the breakdown table)
_BOLD = re.compile(r"\*([^*\n]+)\*")
_ITALIC = re.compile(r"(?<![\w])_([^_\n]+)_(?![\w])")


@dataclass(slots=True)
class _Message:
    ts: str
    thread_ts: str | None
    text: str
    blocks: list[dict[str, Any]]
    edits: int = 0
    replies: list[str] = field(default_factory=list)


class LocalSlack:
    """A Slack Web API for one bot token and one channel, on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        self.token = "xoxb-demo-" + secrets.token_hex(8)
        self.messages: dict[str, _Message] = {}
        self.url = ""
        self._ts = itertools.count(1)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen; ``url`` is the ``api_url`` to give the sink."""
        app = web.Application()
        app.router.add_post("/api/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/api/"

    async def aclose(self) -> None:
        """Stop listening; idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def top_level(self) -> list[_Message]:
        """The channel's messages, not the thread replies, oldest first."""
        return [m for m in self.messages.values() if m.thread_ts is None]

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            args = await request.json()
        except ValueError:
            args = None
        error = self._refusal(request, args)
        if error is not None:
            return web.json_response({"ok": False, "error": error})
        assert isinstance(args, dict)  # noqa: S101 - checked by _refusal
        text, blocks = str(args.get("text") or ""), list(args.get("blocks") or [])
        if request.match_info["method"] == "chat.update":
            message = self.messages[str(args.get("ts"))]
            message.text, message.blocks, message.edits = text, blocks, message.edits + 1
            return web.json_response({"ok": True, "channel": CHANNEL, "ts": message.ts})
        ts = f"{1_770_000_000 + next(self._ts)}.000100"
        thread = args.get("thread_ts")
        parent = self.messages.get(thread) if isinstance(thread, str) else None
        self.messages[ts] = _Message(ts, parent.ts if parent else None, text, blocks)
        if parent is not None:
            parent.replies.append(ts)
        return web.json_response({"ok": True, "channel": CHANNEL, "ts": ts})

    def _refusal(self, request: web.Request, args: object) -> str | None:
        """Slack's error code for a call it would refuse, or None."""
        method = request.match_info["method"]
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return "invalid_auth"
        if method not in ("chat.postMessage", "chat.update"):
            return "unknown_method"
        if not isinstance(args, dict):
            return "invalid_json"
        if args.get("channel") != CHANNEL:
            return "channel_not_found"
        if method == "chat.update" and str(args.get("ts")) not in self.messages:
            return "message_not_found"
        return None


def sink_settings(slack: LocalSlack) -> dict[str, Any]:
    """The demo's Slack app sink, posting incidents to ``slack``."""
    return {
        "name": "slack",
        "type": "slack",
        "token": slack.token,
        "channel": CHANNEL,
        "api_url": slack.url,
        "events": list(INCIDENT_EVENTS),
        "group_wait": "2s",
        "retry": {"schedule": ["0s", "1s", "2s", "5s"]},
    }


def channel_view(slack: LocalSlack, *, lines: int) -> Panel:
    """The channel's newest incident message (else its newest message) in at most ``lines``:
    a breakdown table is cut first, so the figures, the thread and the state stay."""
    messages = slack.top_level()
    incidents = [m for m in messages if _header(m).startswith(("🚨", "✅"))]
    shown = (incidents or messages)[-1] if messages else None
    body: list[Text] = []
    if shown is None:
        body = [Text("no message yet: an incident (a stream degraded) posts one", "dim")]
    else:
        body = _blocks(shown)
        replies = len(shown.replies)
        edited = f" · edited {shown.edits}x" if shown.edits else ""
        body.append(Text(f"💬 {replies} {'reply' if replies == 1 else 'replies'}{edited}", "cyan"))
    table = [n for n, line in enumerate(body) if line.style == _CODE]
    if len(body) > lines and table:
        room = max(lines - (len(body) - len(table)) - 1, 0)
        cut = set(table[room:])
        body = [line for n, line in enumerate(body) if n not in cut]
        body.insert(table[0] + room, Text("  …", "dim"))
    count = len(messages)
    title = f"#incidents on a local Slack · {count} {'message' if count == 1 else 'messages'}"
    return Panel(Group(*body[:lines]), title=title, title_align="left")


def summary(slack: LocalSlack) -> str:
    """ "slack: 3 messages (1 incidents, 2 edited), 5 thread replies; newest: “…”." (the
    newest message's text cut to ``NEWEST`` characters)."""
    messages = slack.top_level()
    incidents = sum(1 for m in messages if _header(m).startswith(("🚨", "✅")))
    edited = sum(1 for m in messages if m.edits)
    replies = sum(len(m.replies) for m in messages)
    newest = ""
    if messages:
        text = " ".join(html.unescape(messages[-1].text).split())
        cut = text if len(text) <= NEWEST else text[: NEWEST - 1].rstrip() + "…"
        newest = f"; newest: “{cut}”"
    return (
        f"slack: {len(messages)} messages ({incidents} incidents, {edited} edited),"
        f" {replies} thread replies{newest}."
    )


def _header(message: _Message) -> str:
    first = message.blocks[0] if message.blocks else {}
    return str((first.get("text") or {}).get("text", "")) if first.get("type") == "header" else ""


def _blocks(message: _Message) -> list[Text]:
    """A message's blocks as terminal lines: the header bold, mrkdwn styled, context dim."""
    out: list[Text] = []
    for block in message.blocks:
        kind = block.get("type")
        if kind == "header":
            out.append(Text(html.unescape(_header(message)), "bold"))
        elif kind == "divider":
            out.append(Text("─" * 20, "dim"))
        elif kind == "section":
            out += _mrkdwn(str((block.get("text") or {}).get("text", "")))
        elif kind == "context":
            texts = [str(e.get("text", "")) for e in block.get("elements", [])]
            out.append(Text(html.unescape(" ".join(texts)), "dim"))
    return out


def _mrkdwn(text: str) -> list[Text]:
    """Slack's *bold*, _italic_ and code as terminal styles, one Text a line."""
    lines: list[Text] = []
    code = False
    for raw in text.split("\n"):
        fence = raw.startswith("```")
        if fence:
            code = not code
        line = html.unescape(raw.removeprefix("```") if fence else raw)
        if fence and not line:
            continue
        if code:
            lines.append(Text("  " + line.removesuffix("```"), _CODE))
            continue
        styled = Text()
        for part in re.split(r"(`[^`]*`)", line):
            if part.startswith("`") and part.endswith("`") and len(part) > 1:
                styled.append(part[1:-1], "magenta")
                continue
            styled.append_text(Text.from_markup(_markup(part)))
        lines.append(styled)
    return lines


def _markup(text: str) -> str:
    escaped = text.replace("[", r"\[")
    escaped = _BOLD.sub(lambda m: f"[bold]{m.group(1)}[/bold]", escaped)
    return _ITALIC.sub(lambda m: f"[italic]{m.group(1)}[/italic]", escaped)
