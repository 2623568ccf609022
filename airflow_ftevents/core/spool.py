"""Reverse newest-first pages into oldest-first events without holding a big job in memory.

Pages go in as the API sends them (newest first), already decoded: the plans need the events' ids.
Up to ``max_events_in_memory`` they stay as they are, so a small read, such as each poll of a live
job, costs nothing beyond its JSON parsing. Past it every page moves to an anonymous temporary file
and only its (offset, length) stays in memory, a few bytes per page. How a page is written there is
chosen by what will be read back, so that no event is encoded or decoded more often than it must be:

- ``spill="lines"`` (the export): the JSON Lines the export writes, each event encoded once and read
  back as bytes, without decoding;
- ``spill="events"`` (everything that wants the events back): the response body the page came in, when
  the caller hands it over with the page, decoded again on the way out (the same bytes through the
  same decoder give the same events, and a second decode costs less than any encoding plus decoding);
  else the page as ``marshal`` data, the cheapest round trip of plain decoded JSON in CPython. The file
  is private to this process and read by the interpreter that wrote it, which is what marshal is for.
  A page that marshal refuses (a caller's own dict subclass) is written as JSON lines instead.

Either form reads back either way (lines decoded, events encoded); the form only decides what is cheap.
"""

from __future__ import annotations

import marshal
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any, Literal

from airflow_ftevents.core.jsonl import event_line, event_lines  # noqa: F401 - event_line: re-exported
from airflow_ftevents.core.responses import loads, loads_lines

DEFAULT_MAX_EVENTS_IN_MEMORY = 5_000
SpillForm = Literal["events", "lines"]
SPILL_FORMS: tuple[SpillForm, ...] = ("events", "lines")
_LINES, _MARSHAL, _BODY = 0, 1, 2  # how a spilled page was written


def _events_of_body(body: bytes) -> list[Any]:
    return loads(body)["data"]


class ReverseSpool:
    """Append pages newest first; read events back oldest first, each exactly once."""

    def __init__(
        self, max_events_in_memory: int = DEFAULT_MAX_EVENTS_IN_MEMORY, spill: SpillForm = "events"
    ) -> None:
        if spill not in SPILL_FORMS:
            raise ValueError(f"spill must be one of {list(SPILL_FORMS)}, got {spill!r}")
        self._limit = max_events_in_memory
        self._spill_lines = spill == "lines"
        # Pages as added, each newest first, with the body it came in (or None).
        self._memory: list[tuple[list[Mapping[str, Any]], bytes | None]] = []
        self._file: IO[bytes] | None = None
        self._pages: list[tuple[int, int, int]] = []  # (offset, length, form) of each spilled page
        self._size = 0
        self.count = 0

    @property
    def spilled(self) -> bool:
        """Whether the events moved to the temporary file."""
        return self._file is not None

    def add_page(self, events_newest_first: Iterable[Mapping[str, Any]], body: bytes | None = None) -> None:
        """Add the next (older) page. ``body``: the JSON response whose ``data`` list is exactly these
        events, in this order, if the caller has it (then it may be spilled as it is)."""
        page = list(events_newest_first)
        if not page:
            return
        self.count += len(page)
        if self._file is None and self.count <= self._limit:
            self._memory.append((page, body))
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
            for held, held_body in self._memory:
                self._write(held, held_body)
            self._memory = []
        self._write(page, body)

    def _write(self, page_newest_first: list[Mapping[str, Any]], body: bytes | None) -> None:
        assert self._file is not None
        if self._spill_lines:
            form, blob = _LINES, event_lines(reversed(page_newest_first))
        elif body is not None:
            form, blob = _BODY, body
        else:
            try:
                form, blob = _MARSHAL, marshal.dumps(page_newest_first)
            except ValueError:  # not plain dicts, lists, strings and numbers
                form, blob = _LINES, event_lines(reversed(page_newest_first))
        self._file.write(blob)
        self._pages.append((self._size, len(blob), form))
        self._size += len(blob)

    def _spilled_pages(self) -> Iterator[tuple[bytes, int]]:
        """Each page's bytes as written, and how they were written; oldest page first."""
        assert self._file is not None
        for offset, length, form in reversed(self._pages):
            self._file.seek(offset)
            yield self._file.read(length), form

    def iter_pages(self) -> Iterator[bytes]:
        """Blocks of JSON lines, oldest first: the bytes an export writes."""
        if self._file is None:
            for page, _ in reversed(self._memory):
                yield event_lines(reversed(page))
            return
        for blob, form in self._spilled_pages():
            if form == _LINES:
                yield blob
            else:
                events = marshal.loads(blob) if form == _MARSHAL else _events_of_body(blob)
                yield event_lines(reversed(events))

    def iter_event_pages(self) -> Iterator[list[dict[str, Any]]]:
        """The events in pages, each a list of new dicts, oldest first: one step per page, not per
        event, for a caller that hands the events on one by one itself."""
        if self._file is None:
            for page, _ in reversed(self._memory):
                yield [dict(event) for event in reversed(page)]
            return
        for blob, form in self._spilled_pages():
            if form == _LINES:
                yield loads_lines(blob)
            else:
                events = marshal.loads(blob) if form == _MARSHAL else _events_of_body(blob)
                events.reverse()
                yield events

    def iter_events(self) -> Iterator[dict[str, Any]]:
        """The events oldest first, as new dicts."""
        for page in self.iter_event_pages():
            yield from page

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
