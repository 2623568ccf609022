"""Incremental decoder of the WHATWG ``text/event-stream`` format, sans-I/O.

Bytes go in, events come out; no network, no Airflow, standard library only, so the sync hook and
the async client share one decoder and it is tested on its own. It follows the "event stream
interpretation" of the HTML standard
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):

- lines end in CR, LF or CRLF, also when a CRLF is split between two chunks;
- a UTF-8 byte order mark at the very start of the stream is dropped;
- ``:comment`` lines (``: keep-alive``) are ignored, unknown fields too;
- ``field:value`` and ``field: value`` (one leading space removed); a line without a colon is a
  field with an empty value;
- several ``data`` lines join with ``\\n``; an empty line dispatches the event unless no ``data``
  field was seen; ``id`` values containing NUL are ignored; ``retry`` only counts if it is all
  ASCII digits;
- the bytes are UTF-8 with invalid sequences replaced by U+FFFD, and a character split between two
  chunks is decoded whole (only complete lines are ever decoded);
- at the end of the stream an event without its closing empty line is discarded.

Why it looks the way it does: a legacy fine-tune stream replayed after a reconnect can be hundreds of
thousands of events, so the decoder works on bytes, splits whole chunks with ``bytes.splitlines``
(which breaks exactly on CR, LF and CRLF), decodes each event's data once, and builds the events of
one chunk in a batch.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from itertools import repeat
from typing import Any

__all__ = ["SSEDecoder", "ServerSentEvent"]

_BOM = b"\xef\xbb\xbf"
_MESSAGE = "message"
# Below this many plain events, building them one by one is cheaper than the batch; chunks of fewer
# lines than _BATCH_LINES (a live stream, an event or two per read) do not batch at all.
_BATCH_MIN = 8
_BATCH_LINES = 4 * _BATCH_MIN


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event.

    :param data: the data buffer, lines joined with ``\\n``.
    :param event: the event type, ``"message"`` unless an ``event`` field said otherwise.
    :param id: the last event id in force when the event was dispatched (it carries over to later
        events, as in the standard), ``None`` if the stream never set one.
    :param retry: the reconnection time in milliseconds, if this event's block carried a valid
        ``retry`` field.
    """

    data: str
    event: str = _MESSAGE
    id: str | None = None
    retry: int | None = None


# The frozen dataclass ``__init__`` goes through ``object.__setattr__`` once per field, which cost
# more than the whole line splitting; the slot descriptors set the same fields directly (and can be
# mapped over a batch in C). Events stay ordinary, equal and hashable ServerSentEvent instances.
_slots: Any = ServerSentEvent.__dict__
_new = object.__new__
_set_data = _slots["data"].__set__
_set_event = _slots["event"].__set__
_set_id = _slots["id"].__set__
_set_retry = _slots["retry"].__set__


def _plain_events(datas: list[str], id: str | None, out: list[ServerSentEvent]) -> None:
    """Append ``message`` events without ``retry`` for each of ``datas`` (the common case), in bulk."""
    n = len(datas)
    if n < _BATCH_MIN:
        for data in datas:
            sse = _new(ServerSentEvent)
            _set_data(sse, data)
            _set_event(sse, _MESSAGE)
            _set_id(sse, id)
            _set_retry(sse, None)
            out.append(sse)
        return
    batch = list(map(_new, repeat(ServerSentEvent, n)))
    # The setters return None, so any() runs each map to its end without building a list.
    any(map(_set_data, batch, datas))
    any(map(_set_event, batch, repeat(_MESSAGE, n)))
    any(map(_set_id, batch, repeat(id, n)))
    any(map(_set_retry, batch, repeat(None, n)))
    out += batch


def _text(raw: bytes) -> str:
    """UTF-8 decode as the standard does: invalid sequences become U+FFFD."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")


class SSEDecoder:
    """Turn the bytes of one event stream, cut anywhere, into :class:`ServerSentEvent` objects.

    Feed every chunk in order to :meth:`feed`, which returns the events completed by it; call
    :meth:`close` at the end of the stream. After ``close()`` the same decoder may be fed the stream
    of a reconnection: :attr:`last_event_id` and :attr:`retry` carry over, as in an ``EventSource``.
    """

    __slots__ = (
        "_block_retry",
        "_data",
        "_event",
        "_head",
        "_id",
        "_pending",
        "_retry",
        "_skip_lf",
        "_start",
    )

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # bytes of the current, unterminated line
        self._skip_lf = False  # the last chunk ended in CR: a LF starting the next one belongs to it
        self._start = True  # nothing seen yet: a byte order mark may come
        self._head = b""  # the first bytes while they may still be a split byte order mark
        self._data: list[bytes] = []  # data lines of the event being read
        self._event = _MESSAGE  # its type
        self._block_retry: int | None = None  # its valid retry field, if any
        self._id: str | None = None  # last event id buffer (never reset by a dispatch)
        self._retry: int | None = None  # last valid retry seen on the stream

    @property
    def last_event_id(self) -> str | None:
        """The last event id set by the stream (``""`` if it was reset), to send as ``Last-Event-ID``."""
        return self._id

    @property
    def retry(self) -> int | None:
        """The reconnection time in ms last announced by the stream, ``None`` if never."""
        return self._retry

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode one more chunk of the stream; return the events it completes, in order."""
        if type(chunk) is not bytes:
            chunk = bytes(chunk)
        if self._start:
            chunk = self._head + chunk
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._head = chunk  # maybe a byte order mark split across chunks: wait for more
                return []
            self._start = False
            self._head = b""
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 10:  # the LF of a CRLF whose CR ended the previous chunk
                chunk = chunk[1:]
        cut = chunk.rfind(b"\n")
        cr = chunk.rfind(b"\r", cut + 1)  # a CR after the last LF (a short search)
        if cr > cut:
            cut = cr
        if cut < 0:  # no line ends here: keep the bytes for later, without copying them yet
            if chunk:
                self._pending.append(chunk)
            return []
        end = cut + 1
        if end == len(chunk):
            block = chunk
            if chunk[cut] == 13:  # a CR at the very end: its LF, if any, is in the next chunk
                self._skip_lf = True
            rest = b""
        else:
            block = chunk[:end]
            rest = chunk[end:]
        pending = self._pending
        if pending:
            pending.append(block)
            block = b"".join(pending)
            self._pending = pending = []
        if rest:
            pending.append(rest)
        return self._lines(block.splitlines())

    def close(self) -> list[ServerSentEvent]:
        """End of the stream: discard an unfinished line and event (as the standard says).

        Always returns ``[]``; it exists so the caller can treat the end like any other chunk.
        """
        self._pending = []
        self._skip_lf = False
        self._start = True
        self._head = b""
        self._data = []
        self._event = _MESSAGE
        self._block_retry = None
        return []

    def _lines(self, lines: list[bytes]) -> list[ServerSentEvent]:
        """Interpret complete lines; the hot loop, so state lives in locals and plain events batch."""
        events: list[ServerSentEvent] = []
        plain: list[str] = []  # data of plain events not built yet: "message", no retry, current id
        add_plain = plain.append
        data = self._data
        event = self._event
        block_retry = self._block_retry
        last_id = self._id
        batch = len(lines) >= _BATCH_LINES
        for line in lines:
            if not line:  # dispatch
                if data:
                    raw = b"\n".join(data)
                    try:
                        text = raw.decode()
                    except UnicodeDecodeError:
                        text = raw.decode("utf-8", "replace")
                    if batch and event is _MESSAGE and block_retry is None:
                        add_plain(text)
                    else:
                        if plain:
                            _plain_events(plain, last_id, events)
                            plain = []
                            add_plain = plain.append
                        sse = _new(ServerSentEvent)
                        _set_data(sse, text)
                        _set_event(sse, event)
                        _set_id(sse, last_id)
                        _set_retry(sse, block_retry)
                        events.append(sse)
                    data = []
                event = _MESSAGE
                block_retry = None
            elif line[:6] == b"data: ":
                data.append(line[6:])
            elif line[0] == 58:  # ":" starts a comment
                pass
            else:
                name, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if name == b"data":
                    data.append(value)
                elif name == b"event":
                    event = _text(value) or _MESSAGE
                elif name == b"id":
                    if b"\0" not in value:
                        if plain:  # the events before this line keep the id they were dispatched with
                            _plain_events(plain, last_id, events)
                            plain = []
                            add_plain = plain.append
                        last_id = _text(value)
                elif name == b"retry" and value.isdigit():  # bytes: ASCII digits only, False if empty
                    with suppress(ValueError):  # more digits than int() will read: no usable delay
                        block_retry = self._retry = int(value.lstrip(b"0") or b"0")
        if plain:
            _plain_events(plain, last_id, events)
        self._data = data
        self._event = event
        self._block_retry = block_retry
        self._id = last_id
        return events
