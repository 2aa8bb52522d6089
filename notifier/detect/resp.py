"""Redis commands as bytes on the wire (RESP), for the commit's transactions: a first poll of
100k viewers sends 100k XADDs, and framing them here costs a fraction of a client's per-command
work (``senders.Transaction``)."""

from __future__ import annotations

from typing import Any, Final, cast

import hiredis

__all__ = ["XaddFrame", "command"]

_Arg = str | bytes | int | float


def command(*args: _Arg) -> bytes:
    """One command, framed (by hiredis, in C)."""
    packed: bytes = hiredis.pack_command(cast("Any", args))  # its stub takes 1-tuples only
    return packed


_ENTRY: Final = b"%s$2\r\nid\r\n$%d\r\n%s\r\n$5\r\nevent\r\n$%d\r\n%s\r\n"


class XaddFrame:
    """``XADD <stream> * type <type> id <id> event <body>``, framed with the stream's part made
    once: the command each event of a poll becomes."""

    __slots__ = ("_heads", "_stream")

    def __init__(self, stream: str) -> None:
        key = stream.encode()
        stream_part = b"*9\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n$4\r\ntype\r\n"
        self._stream = stream_part % (len(key), key)
        self._heads: dict[str, bytes] = {}

    def entry(self, event_type: str, event_id: bytes, body: bytes) -> bytes:
        """One event's command."""
        head = self._heads.get(event_type)
        if head is None:
            kind = event_type.encode()
            head = self._heads[event_type] = b"%s$%d\r\n%s\r\n" % (self._stream, len(kind), kind)
        return _ENTRY % (head, len(event_id), event_id, len(body), body)
