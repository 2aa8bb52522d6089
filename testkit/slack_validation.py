"""Would Slack accept this incoming-webhook payload? Checked apart from the code that built it.

``assert_valid_slack_payload(payload)`` raises AssertionError naming the first problem. Each
block is checked against limits written here from Slack's Block Kit reference (so a check
does not depend on slack_sdk knowing every limit), then goes through slack_sdk:
``Block.parse``, ``validate_json()``, and a round trip through ``to_dict()`` that must give
the block back, so no key was ignored or misread. The limits:

- a non-empty ``text`` fallback of at most 3000 characters, and 1 to 50 blocks;
- header, section, context and divider blocks only (what our messages use);
- text objects are ``plain_text`` or ``mrkdwn`` with non-empty text: a header at most 150
  characters on one line, a section text at most 3000, at most 10 section fields of at most
  2000 each, a context at most 10 elements;
- all block texts together at most 12,000 characters: past about that Slack answers
  ``msg_blocks_too_long`` (undocumented, slackapi/bolt-js#2509);
- no control characters (a newline only in mrkdwn), no raw ``<`` or ``>``, and ``&`` only as
  ``&amp;``, ``&lt;`` or ``&gt;``: values are escaped, and the messages use no links;
- the JSON encodes as UTF-8 (no lone surrogates) without NaN.

Lengths are counted in UTF-16 code units (an emoji counts 2), never fewer than Slack counts.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Any, Final

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

__all__ = ["assert_valid_slack_payload", "block_texts", "units"]

MAX_BLOCKS: Final = 50
MAX_MESSAGE_TEXT: Final = 3000
MAX_HEADER: Final = 150
MAX_SECTION_TEXT: Final = 3000
MAX_FIELDS: Final = 10
MAX_FIELD: Final = 2000
MAX_CONTEXT_ELEMENTS: Final = 10
MAX_CONTEXT_TEXT: Final = 3000
MAX_ALL_BLOCK_TEXT: Final = 12_000
MAX_BLOCK_ID: Final = 255

_PAYLOAD_KEYS: Final = frozenset(
    {"text", "blocks", "mrkdwn", "unfurl_links", "unfurl_media", "username", "icon_emoji"}
)
_BLOCK_KEYS: Final = {
    "header": frozenset({"type", "text", "block_id"}),
    "section": frozenset({"type", "text", "fields", "block_id"}),
    "context": frozenset({"type", "elements", "block_id"}),
    "divider": frozenset({"type", "block_id"}),
}
_TEXT_KEYS: Final = {
    "plain_text": frozenset({"type", "text", "emoji"}),
    "mrkdwn": frozenset({"type", "text", "verbatim"}),
}
_BAD_AMPERSAND: Final = re.compile(r"&(?!amp;|lt;|gt;)")


def units(text: str) -> int:
    """The length of ``text`` in UTF-16 code units."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def block_texts(payload: Mapping[str, Any]) -> list[str]:
    """Every text of the payload's blocks, in order (header, sections, fields, context)."""
    texts: list[str] = []
    for block in payload.get("blocks", []):
        if "text" in block:
            texts.append(block["text"]["text"])
        texts.extend(field["text"] for field in block.get("fields", []))
        texts.extend(element["text"] for element in block.get("elements", []) if "text" in element)
    return texts


def assert_valid_slack_payload(payload: Mapping[str, Any]) -> None:
    """Raise AssertionError unless Slack would accept ``payload`` (see the module docstring)."""
    assert isinstance(payload, Mapping), f"payload is a {type(payload).__name__}, not an object"
    try:
        json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise AssertionError(f"payload is not valid JSON text: {exc}") from exc
    unknown = set(payload) - _PAYLOAD_KEYS
    assert not unknown, f"unknown payload keys {sorted(unknown)}"
    text = payload.get("text")
    assert isinstance(text, str), "no text fallback"
    _assert_text_value(text, MAX_MESSAGE_TEXT, "text", newlines=True)
    blocks = payload.get("blocks")
    assert isinstance(blocks, list), "blocks is not a list"
    assert 1 <= len(blocks) <= MAX_BLOCKS, f"{len(blocks)} blocks, Slack takes 1 to {MAX_BLOCKS}"
    total = 0
    for index, block in enumerate(blocks):
        total += _assert_block(block, f"blocks[{index}]")
    assert total <= MAX_ALL_BLOCK_TEXT, f"{total} characters in all blocks (msg_blocks_too_long)"


def _assert_block(block: object, where: str) -> int:
    """Check one block; return the length of its texts."""
    assert isinstance(block, dict), f"{where} is not an object"
    kind = block.get("type")
    assert kind in _BLOCK_KEYS, f"{where}: block type {kind!r} is not one of {sorted(_BLOCK_KEYS)}"
    unknown = set(block) - _BLOCK_KEYS[kind]
    assert not unknown, f"{where}: unknown keys {sorted(unknown)}"
    block_id = block.get("block_id")
    assert block_id is None or 1 <= len(block_id) <= MAX_BLOCK_ID, f"{where}: bad block_id"
    length = 0
    if kind == "header":
        length = _assert_text_object(block.get("text"), MAX_HEADER, f"{where}.text", header=True)
    elif kind == "section":
        length = _assert_section(block, where)
    elif kind == "context":
        elements = block.get("elements")
        assert isinstance(elements, list), f"{where}: no elements"
        assert 1 <= len(elements) <= MAX_CONTEXT_ELEMENTS, f"{where}: {len(elements)} elements"
        length = sum(
            _assert_text_object(element, MAX_CONTEXT_TEXT, f"{where}.elements[{index}]")
            for index, element in enumerate(elements)
        )
    try:
        parsed = Block.parse(block)
        assert parsed is not None, f"{where}: slack_sdk does not know the block"
        parsed.validate_json()
        round_trip = parsed.to_dict()
    except (TypeError, SlackObjectFormationError) as exc:
        raise AssertionError(f"{where}: slack_sdk rejects it: {exc}") from exc
    assert round_trip == block, f"{where}: slack_sdk reads it differently: {round_trip}"
    return length


def _assert_section(block: Mapping[str, Any], where: str) -> int:
    text, fields = block.get("text"), block.get("fields")
    assert text is not None or fields is not None, f"{where}: neither text nor fields"
    total = 0
    if text is not None:
        total += _assert_text_object(text, MAX_SECTION_TEXT, f"{where}.text")
    if fields is not None:
        assert isinstance(fields, list), f"{where}: fields is not a list"
        assert 1 <= len(fields) <= MAX_FIELDS, f"{where}: {len(fields)} fields"
        for index, field in enumerate(fields):
            total += _assert_text_object(field, MAX_FIELD, f"{where}.fields[{index}]")
    return total


def _assert_text_object(obj: object, limit: int, where: str, *, header: bool = False) -> int:
    assert isinstance(obj, dict), f"{where} is not a text object"
    kind = obj.get("type")
    allowed = ("plain_text",) if header else tuple(_TEXT_KEYS)
    assert kind in allowed, f"{where}: text type {kind!r} is not one of {allowed}"
    unknown = set(obj) - _TEXT_KEYS[kind]
    assert not unknown, f"{where}: keys {sorted(unknown)} do not belong in {kind}"
    text = obj.get("text")
    assert isinstance(text, str), f"{where}: text is not a string"
    _assert_text_value(text, limit, where, newlines=kind == "mrkdwn")
    return units(text)


def _assert_text_value(text: str, limit: int, where: str, *, newlines: bool) -> None:
    assert text.strip(), f"{where}: empty text"
    assert units(text) <= limit, f"{where}: {units(text)} characters, the limit is {limit}"
    for char in text:
        if char == "\n" and newlines:
            continue
        category = unicodedata.category(char)
        assert category not in ("Cc", "Cs"), f"{where}: control character {char!r}"
    assert "<" not in text, f"{where}: unescaped '<'"
    assert ">" not in text, f"{where}: unescaped '>'"
    assert not _BAD_AMPERSAND.search(text), f"{where}: unescaped '&'"
