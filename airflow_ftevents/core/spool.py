"""Reverse newest-first pages into oldest-first events without holding a big job in memory.

Pages go in as the API sends them (newest first); each event is serialized once, to the compact JSON
line that the export writes. Up to ``max_memory`` bytes stay in memory, the rest spills to a temporary
file (``tempfile.SpooledTemporaryFile``); only the page offsets are kept, a few bytes per page.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

DEFAULT_MAX_MEMORY = 8 * 1024 * 1024

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def event_line(event: Mapping[str, Any]) -> bytes:
    """The JSON Lines form of one event: compact, UTF-8, keys in the API's order, newline-terminated."""
    return _encode(event).encode("utf-8") + b"\n"


class ReverseSpool:
    """Append pages newest first; read events back oldest first, each exactly once."""

    def __init__(self, max_memory: int = DEFAULT_MAX_MEMORY) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=max_memory)  # noqa: SIM115 - closed by close()
        self._pages: list[tuple[int, int]] = []
        self._size = 0
        self.count = 0

    def add_page(self, events_newest_first: Iterable[Mapping[str, Any]]) -> None:
        blob = b"".join(event_line(e) for e in reversed(list(events_newest_first)))
        if not blob:
            return
        self._file.seek(self._size)
        self._file.write(blob)
        self._pages.append((self._size, len(blob)))
        self._size += len(blob)
        self.count += blob.count(b"\n")

    def iter_pages(self) -> Iterator[bytes]:
        """Blocks of JSON lines, oldest first: the bytes an export writes, without decoding them."""
        for offset, length in reversed(self._pages):
            self._file.seek(offset)
            yield self._file.read(length)

    def iter_events(self) -> Iterator[dict[str, Any]]:
        for block in self.iter_pages():
            for line in block.splitlines():
                yield json.loads(line)

    def close(self) -> None:
        self._file.close()
        self._pages = []

    def __enter__(self) -> ReverseSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
