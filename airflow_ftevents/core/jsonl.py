"""The JSON Lines form of events: the one definition of a line, for the spool, the export and their readers.

A line is one event as compact JSON (``separators=(",", ":")``), UTF-8, keys in the API's order, ended by
``\\n``. JSON escapes every newline inside a string, so a block of lines splits on ``\\n`` alone, and
counting lines is counting ``\\n`` bytes. Everything that relies on those bytes (cheap pre-filters,
the first and last line of a block) lives here, next to the encoder that makes them true.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def event_line(event: Mapping[str, Any]) -> bytes:
    """The JSON Lines form of one event: compact, UTF-8, keys in the API's order, newline-terminated."""
    return _encode(event).encode("utf-8") + b"\n"


def event_lines(events: Iterable[Mapping[str, Any]]) -> bytes:
    """One block of lines, in the order given."""
    return b"".join(event_line(e) for e in events)


def field_mark(key: str, value: str) -> bytes:
    """The bytes every line with ``key: value`` at any depth contains: a pre-filter before decoding.

    A match may still be a nested field or a string that happens to contain them, so decode to be sure.
    """
    return _encode({key: value})[1:-1].encode("utf-8")


def decode_line(line: bytes) -> dict[str, Any]:
    """One event back from its line (with or without the trailing newline)."""
    return json.loads(line)


def iter_block(block: bytes) -> Iterator[dict[str, Any]]:
    """The events of a block of lines, in order."""
    for line in block.splitlines():
        yield json.loads(line)


def count_lines(block: bytes) -> int:
    """How many events a block holds, without decoding it."""
    return block.count(b"\n")


def first_line(block: bytes) -> bytes:
    """The first line of a non-empty block, newline included."""
    return block[: block.index(b"\n") + 1]


def last_line(block: bytes) -> bytes:
    """The last line of a non-empty block, newline included."""
    return block[block.rfind(b"\n", 0, len(block) - 1) + 1 :]


def id_and_created_at(line: bytes) -> tuple[Any, Any]:
    """``(id, created_at)`` of one line (legacy events have no id: ``None``)."""
    event = json.loads(line)
    return event.get("id"), event.get("created_at")
