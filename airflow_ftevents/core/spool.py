"""Reverse newest-first pages into oldest-first events without holding a big job in memory.

Pages go in as the API sends them (newest first). Small reads, such as each poll of a live job, stay
in memory as the decoded events (no extra encoding: a poll costs no more than its JSON parsing). Past
``max_events_in_memory`` everything moves to a temporary file as the compact JSON lines that the export
writes, each event serialized once; then only the page offsets stay in memory, a few bytes per page.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

DEFAULT_MAX_EVENTS_IN_MEMORY = 5_000

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def event_line(event: Mapping[str, Any]) -> bytes:
    """The JSON Lines form of one event: compact, UTF-8, keys in the API's order, newline-terminated."""
    return _encode(event).encode("utf-8") + b"\n"


def _lines(events_oldest_first: Iterable[Mapping[str, Any]]) -> bytes:
    return b"".join(event_line(e) for e in events_oldest_first)


class ReverseSpool:
    """Append pages newest first; read events back oldest first, each exactly once."""

    def __init__(self, max_events_in_memory: int = DEFAULT_MAX_EVENTS_IN_MEMORY) -> None:
        self._limit = max_events_in_memory
        self._memory: list[list[Mapping[str, Any]]] = []  # pages as added, each newest first
        self._file: IO[bytes] | None = None
        self._pages: list[tuple[int, int]] = []  # (offset, length) of each page in the file
        self._size = 0
        self.count = 0

    @property
    def spilled(self) -> bool:
        """Whether the events moved to the temporary file."""
        return self._file is not None

    def add_page(self, events_newest_first: Iterable[Mapping[str, Any]]) -> None:
        page = list(events_newest_first)
        if not page:
            return
        self.count += len(page)
        if self._file is None and self.count <= self._limit:
            self._memory.append(page)
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
            for held in self._memory:
                self._write(held)
            self._memory = []
        self._write(page)

    def _write(self, page_newest_first: list[Mapping[str, Any]]) -> None:
        assert self._file is not None
        blob = _lines(reversed(page_newest_first))
        self._file.write(blob)
        self._pages.append((self._size, len(blob)))
        self._size += len(blob)

    def iter_pages(self) -> Iterator[bytes]:
        """Blocks of JSON lines, oldest first: the bytes an export writes."""
        if self._file is None:
            for page in reversed(self._memory):
                yield _lines(reversed(page))
            return
        for offset, length in reversed(self._pages):
            self._file.seek(offset)
            yield self._file.read(length)

    def iter_events(self) -> Iterator[dict[str, Any]]:
        """The events oldest first (decoded again only when they were spilled to the file)."""
        if self._file is None:
            for page in reversed(self._memory):
                for event in reversed(page):
                    yield dict(event)
            return
        for block in self.iter_pages():
            for line in block.splitlines():
                yield json.loads(line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._memory = []
        self._pages = []

    def __enter__(self) -> ReverseSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
