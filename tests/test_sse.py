"""The event-stream decoder: every parsing rule with exact events, then properties.

Properties: any cutting of a stream into chunks (inside CRLF, inside a UTF-8 character, inside the
byte order mark) gives the events of the whole stream; on arbitrary byte streams the decoder agrees
with a literal, slow transcription of the WHATWG algorithm below; and on streams where httpx-sse
follows the standard it agrees with httpx-sse's ``EventSource.iter_sse()``.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

import httpx
import httpx_sse
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_ftevents.core.sse import ServerSentEvent, SSEDecoder

E = ServerSentEvent
BOM = b"\xef\xbb\xbf"


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    """Feed ``chunks`` in order to a fresh decoder, then close it."""
    decoder = SSEDecoder()
    events = [sse for chunk in chunks for sse in decoder.feed(chunk)]
    return events + decoder.close()


def run(stream: bytes, cuts: list[int]) -> tuple[list[ServerSentEvent], str | None, int | None]:
    """Events and final state after feeding ``stream`` cut at the given offsets."""
    decoder = SSEDecoder()
    bounds = [0, *sorted(cuts), len(stream)]
    events = [sse for a, b in itertools.pairwise(bounds) for sse in decoder.feed(stream[a:b])]
    events += decoder.close()
    return events, decoder.last_event_id, decoder.retry


def reference(stream: bytes) -> tuple[list[ServerSentEvent], str | None, int | None]:
    """The standard's event stream interpretation, transcribed step by step (slow, obviously right)."""
    text = stream.decode("utf-8", "replace")  # UTF-8 decode: invalid sequences become U+FFFD
    if text.startswith("\ufeff"):  # ... and one leading BOM is dropped
        text = text[1:]
    lines = []
    pos = 0
    for match in re.finditer(r"\r\n|\r|\n", text):  # the text after the last line end is discarded
        lines.append(text[pos : match.start()])
        pos = match.end()
    events: list[ServerSentEvent] = []
    data, event, last_id, block_retry, retry = "", "", None, None, None
    for line in lines:
        if line == "":
            if data == "":
                data, event, block_retry = "", "", None
                continue
            if data.endswith("\n"):
                data = data[:-1]
            events.append(ServerSentEvent(data, event or "message", last_id, block_retry))
            data, event, block_retry = "", "", None
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            field, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            field, value = line, ""
        if field == "event":
            event = value
        elif field == "data":
            data += value + "\n"
        elif field == "id":
            if "\0" not in value:
                last_id = value
        elif field == "retry" and value and all(c in "0123456789" for c in value):
            block_retry = retry = int(value)
    return events, last_id, retry


# -- line ends --------------------------------------------------------------------------------------


@pytest.mark.parametrize("end", [b"\n", b"\r", b"\r\n"], ids=["LF", "CR", "CRLF"])
def test_each_line_end(end: bytes) -> None:
    stream = b"data: a" + end + b"data: b" + end + end + b"event: x" + end + b"data: c" + end + end
    assert decode(stream) == [E("a\nb"), E("c", event="x")]


def test_mixed_line_ends_in_one_stream() -> None:
    assert decode(b"data: a\rdata: b\r\ndata: c\n\r\ndata: d\r\r") == [E("a\nb\nc"), E("d")]


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    # Were the LF read as an empty line, "a" would be dispatched alone and "b" after it.
    assert decode(b"data: a\r", b"\ndata: b\r\n\r\n") == [E("a\nb")]
    assert decode(b"data: a\r", b"\n", b"data: b\n\n") == [E("a\nb")]


def test_cr_at_chunk_end_then_empty_chunks_then_lf() -> None:
    assert decode(b"data: a\r", b"", b"", b"\ndata: b\n\n") == [E("a\nb")]


def test_cr_at_chunk_end_then_cr_is_an_empty_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [E("a")]  # dispatched at once, not held back for a possible LF


def test_lone_cr_then_lf_from_next_chunk_after_a_line_ends_it() -> None:
    # Only the LF right after the CR is swallowed; a later LF is a line end of its own.
    assert decode(b"data: a\r", b"data: b\n\n") == [E("a\nb")]
    assert decode(b"data: a\r", b"x\n") == []


def test_extra_empty_lines_dispatch_nothing() -> None:
    assert decode(b"\n\n\ndata: x\n\n\n\n\r\n\r") == [E("x")]


# -- byte order mark ----------------------------------------------------------------------------------


def test_bom_at_start_is_stripped() -> None:
    assert decode(BOM + b"data: x\n\n") == [E("x")]


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_bom_split_across_chunks(cut: int) -> None:
    stream = BOM + b"data: x\n\n"
    assert decode(stream[:cut], stream[cut:]) == [E("x")]
    assert decode(*[stream[i : i + 1] for i in range(len(stream))]) == [E("x")]


def test_only_one_bom_and_only_at_start() -> None:
    # A second BOM becomes part of the first line's field name, so that line is an unknown field.
    assert decode(BOM + BOM + b"data: x\n\ndata: y\n\n") == [E("y")]
    assert decode(b"data: \xef\xbb\xbfx\n\n") == [E("\ufeffx")]


def test_bytes_that_only_start_like_a_bom_are_kept() -> None:
    assert decode(b"\xef", b"data: x\n\ndata: y\n\n") == [E("y")]  # "\ufffddata: x" is an unknown field
    assert decode(b"\xef\xbb", b"\n", b"data: y\n\n") == [E("y")]


def test_bom_later_in_stream_is_not_stripped() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\n") == [E("a")]
    assert decoder.feed(BOM + b"data: b\n\n") == []  # field "\ufeffdata" is unknown
    assert decoder.feed(b"data: c\n\n") == [E("c")]


# -- comments, fields, values ------------------------------------------------------------------------


def test_comments_are_ignored_even_inside_an_event() -> None:
    stream = b": keep-alive\n\n:\ndata: a\n: note\ndata: b\n:data: c\n\n"
    assert decode(stream) == [E("a\nb")]


@pytest.mark.parametrize(
    ("line", "data"),
    [
        (b"data:x", "x"),
        (b"data: x", "x"),
        (b"data:  x", " x"),  # only one leading space is removed
        (b"data: x ", "x "),
        (b"data:", ""),
        (b"data: ", ""),
        (b"data", ""),  # no colon: the whole line is the field name, the value is empty
        (b"data:x:y: z", "x:y: z"),  # split at the first colon only
        (b"data:\tx", "\tx"),
        (b"data: a\0b", "a\0b"),
    ],
)
def test_field_and_value_split(line: bytes, data: str) -> None:
    assert decode(line + b"\n\n") == [E(data)]


@pytest.mark.parametrize("line", [b"Data: x", b"DATA: x", b"data : x", b" data: x", b"datax: x", b"dat: x"])
def test_field_names_are_exact(line: bytes) -> None:
    assert decode(line + b"\n\n") == []


def test_unknown_fields_are_ignored() -> None:
    assert decode(b"foo: bar\ndata: x\nbaz\nretryx: 5\n\n") == [E("x")]


def test_multi_line_data_joins_with_newline() -> None:
    assert decode(b"data: a\ndata:b\ndata\ndata:  c\n\n") == [E("a\nb\n\n c")]


def test_empty_data_lines_still_make_an_event() -> None:
    assert decode(b"data\n\n") == [E("")]
    assert decode(b"data:\ndata:\n\n") == [E("\n")]


def test_block_without_data_is_not_dispatched_and_resets_event_type() -> None:
    assert decode(b"event: update\n\ndata: x\n\n") == [E("x")]
    assert decode(b"event: update\nid: 1\nretry: 10\n\n") == []


# -- event, id, retry ---------------------------------------------------------------------------------


def test_event_type() -> None:
    stream = b"event: update\ndata: a\n\nevent:\ndata: b\n\ndata: c\n\nevent: x\nevent: y\ndata: d\n\n"
    assert decode(stream) == [E("a", event="update"), E("b"), E("c"), E("d", event="y")]


def test_id_is_kept_for_later_events_until_changed() -> None:
    decoder = SSEDecoder()
    assert decoder.last_event_id is None
    events = decoder.feed(b"data: a\n\nid: 1\ndata: b\n\ndata: c\n\nid: 2\n\ndata: d\n\nid\ndata: e\n\n")
    assert events == [E("a"), E("b", id="1"), E("c", id="1"), E("d", id="2"), E("e", id="")]
    assert decoder.last_event_id == ""


def test_id_applies_to_the_event_of_its_block_even_when_after_data() -> None:
    assert decode(b"data: a\nid: 7\n\n") == [E("a", id="7")]


@pytest.mark.parametrize("value", [b"a\0b", b"\0", b"1\x00"])
def test_id_with_nul_is_ignored(value: bytes) -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"id: 5\ndata: a\n\nid: " + value + b"\ndata: b\n\n")
    assert events == [E("a", id="5"), E("b", id="5")]
    assert decoder.last_event_id == "5"


def test_retry_valid() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"retry: 3000\ndata: a\n\ndata: b\n\nretry:0007\n\ndata: c\n\n")
    assert events == [E("a", retry=3000), E("b"), E("c")]
    assert decoder.retry == 7  # a block without data still sets the reconnection time


@pytest.mark.parametrize(
    "value",
    [b"", b" ", b"  10", b"10 ", b"3s", b"-1", b"+1", b"1.5", b"1_000", b"0x10", "١٢".encode(), "²".encode()],
)
def test_retry_invalid_is_ignored(value: bytes) -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"retry: 500\n\nretry: " + value + b"\ndata: a\n\n")
    assert events == [E("a")]
    assert decoder.retry == 500


def test_retry_with_more_digits_than_int_reads_does_not_crash() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"retry: 1\n\nretry: " + b"9" * 10_000 + b"\ndata: a\n\n")[0].data == "a"
    assert decoder.feed(b"retry: " + b"0" * 10_000 + b"25\ndata: b\n\n") == [E("b", retry=25)]


# -- UTF-8 --------------------------------------------------------------------------------------------


def test_utf8_character_split_at_every_byte() -> None:
    stream = "data: é✅🚀 訓練\n\n".encode()
    for cut in range(len(stream) + 1):
        assert decode(stream[:cut], stream[cut:]) == [E("é✅🚀 訓練")], cut
    assert decode(*[stream[i : i + 1] for i in range(len(stream))]) == [E("é✅🚀 訓練")]


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"\xff", "\ufffd"),
        (b"a\x80b", "a\ufffdb"),
        (b"\xe2\x82", "\ufffd"),  # truncated 3-byte sequence before the line end
        (b"\xe2\x82x", "\ufffdx"),
        (b"\xc3", "\ufffd"),
        (b"\xed\xa0\x80", "\ufffd\ufffd\ufffd"),  # a UTF-16 surrogate is not UTF-8
        (b"\xf0\x9f\x9a", "\ufffd"),
    ],
)
def test_invalid_utf8_becomes_replacement_character(raw: bytes, text: str) -> None:
    assert decode(b"data: " + raw + b"\n\n") == [E(text)]
    assert decode(b"event: " + raw + b"\nid: " + raw + b"\ndata: x\n\n") == [E("x", event=text, id=text)]


def test_invalid_utf8_split_across_chunks() -> None:
    assert decode(b"data: \xe2", b"\x82\n\n") == [E("\ufffd")]
    assert decode(b"data: \xe2\x82", b"\xac\n\n") == [E("€")]


# -- end of stream and reuse ---------------------------------------------------------------------------


def test_unterminated_event_is_discarded_at_end() -> None:
    assert decode(b"data: a\n\ndata: b\n") == [E("a")]
    assert decode(b"data: a\n\ndata: b") == [E("a")]
    decoder = SSEDecoder()
    decoder.feed(b"data: a\n\nid: 9")  # an unterminated line is not a line: the id never applies
    assert decoder.close() == []
    assert decoder.last_event_id is None


def test_close_after_trailing_cr_returns_nothing_more() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r\r") == [E("x")]
    assert decoder.close() == []


def test_reconnection_after_close_keeps_id_and_retry_but_no_leftovers() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"retry: 250\nid: 4\ndata: a\n\ndata: half\nda") == [E("a", id="4", retry=250)]
    assert decoder.close() == []
    assert (decoder.last_event_id, decoder.retry) == ("4", 250)
    # The new connection starts clean: neither "half" nor "da" leak, and it may begin with a BOM.
    assert decoder.feed(BOM + b"ta: b\n\ndata: c\n\n") == [E("c", id="4")]


# -- chunk types, event objects, big inputs ---------------------------------------------------------


def test_bytearray_and_memoryview_chunks() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(bytearray(b"data: a\n")) == []
    assert decoder.feed(memoryview(b"\ndata: b\n\n")) == [E("a"), E("b")]  # type: ignore[arg-type]


def test_events_are_ordinary_frozen_dataclass_instances() -> None:
    [sse] = decode(b"event: e\nid: 1\nretry: 5\ndata: d\n\n")
    assert sse == ServerSentEvent(data="d", event="e", id="1", retry=5)
    assert hash(sse) == hash(ServerSentEvent("d", "e", "1", 5))
    assert repr(sse) == "ServerSentEvent(data='d', event='e', id='1', retry=5)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        sse.data = "x"  # type: ignore[misc]
    assert dataclasses.asdict(decode(b"data: x\n\n")[0]) == {
        "data": "x",
        "event": "message",
        "id": None,
        "retry": None,
    }


def test_many_events_in_one_chunk_keep_order_ids_and_types() -> None:
    # Long runs of plain events are built in bulk; ids, types and retries in between must stay exact.
    parts, expected, last_id = [], [], None
    for i in range(60):
        block = f"data: {i}\n"
        event, retry = "message", None
        if i % 17 == 5:
            last_id = f"id{i}"
            block = f"id: {last_id}\n" + block
        if i % 13 == 7:
            event = "metrics"
            block += "event: metrics\n"
        if i % 19 == 3:
            retry = i
            block += f"retry: {i}\n"
        parts.append(block + "\n")
        expected.append(E(str(i), event, last_id, retry))
    stream = "".join(parts).encode()
    assert decode(stream) == expected
    assert decode(*[stream[i : i + 7] for i in range(0, len(stream), 7)]) == expected


@pytest.mark.parametrize("n", [1, 7, 8, 9, 15, 16, 17, 40, 500])
def test_runs_of_plain_events_of_any_length_in_one_chunk(n: int) -> None:
    stream = b"id: x\n" + b"".join(b"data: %d\n\n" % i for i in range(n))
    expected = [E(str(i), id="x") for i in range(n)]
    assert decode(stream) == expected
    assert decode(b"data: first\n\n" + stream) == [E("first"), *expected]


def test_long_line_over_many_chunks() -> None:
    payload = ("x" * 999 + "é") * 1000
    stream = f"data: {payload}\n\n".encode()
    assert decode(*[stream[i : i + 1000] for i in range(0, len(stream), 1000)]) == [E(payload)]


RICH = (
    BOM
    + b": stream opened\r\n"
    + b'retry: 1500\r\nid: ftevent-1\r\ndata: {"message": "Step 1/3: loss=0.5"}\r\n\r\n'
    + "data: Étape 2 ✅\rdata: 訓練 🚀\r\r".encode()
    + b'event: metrics\ndata:{"step": 3}\n\n'
    + b": keep-alive\n\n"
    + b"id: 2\0\ndata\n\n"
    + b"data: [DONE]\n\n"
)
RICH_EVENTS = [
    E('{"message": "Step 1/3: loss=0.5"}', id="ftevent-1", retry=1500),
    E("Étape 2 ✅\n訓練 🚀", id="ftevent-1"),
    E('{"step": 3}', event="metrics", id="ftevent-1"),
    E("", id="ftevent-1"),
    E("[DONE]", id="ftevent-1"),
]


def test_rich_stream_any_two_way_split_and_byte_by_byte() -> None:
    assert decode(RICH) == RICH_EVENTS
    assert reference(RICH)[0] == RICH_EVENTS
    for cut in range(len(RICH) + 1):  # every cut: inside the BOM, each CRLF and each UTF-8 character
        assert run(RICH, [cut]) == (RICH_EVENTS, "ftevent-1", 1500), cut
    assert decode(*[RICH[i : i + 1] for i in range(len(RICH))]) == RICH_EVENTS


# -- properties ----------------------------------------------------------------------------------------

TERMINATORS = st.sampled_from([b"\n", b"\r", b"\r\n"])
# Value pieces: ASCII, colons, spaces, NUL, multi-byte characters, a BOM, and invalid UTF-8.
PIECES = [b"a", b"Z", b"0", b"7", b" ", b":", b"\0", b"\t", *(c.encode() for c in "é✅🚀訓")]
PIECES += [BOM, b"\xff", b"\x80", b"\xc3", b"\xe2\x82", b"\xf0\x9f"]
VALUES = st.lists(st.sampled_from(PIECES), max_size=6).map(b"".join)
DIGITS = st.text("0123456789", max_size=4).map(str.encode)
NAMES = st.sampled_from([b"data"] * 3 + [b"event", b"id", b"retry", b"foo", b"Data", b"", b"data "])
SEPARATORS = st.sampled_from([b":", b": ", b":  ", b""])

ANY_LINE = st.one_of(
    st.just(b""),
    st.just(b""),
    st.builds(lambda n, s, v: n + s + v, NAMES, SEPARATORS, VALUES),
    st.builds(lambda s, v: b"retry" + s + v, SEPARATORS, DIGITS),
    VALUES.map(lambda v: b":" + v),
)


@st.composite
def any_stream(draw: st.DrawFn) -> bytes:
    """Arbitrary streams: any lines, any line ends, maybe a BOM, maybe an unterminated tail."""
    lines = draw(st.lists(st.tuples(ANY_LINE, TERMINATORS), max_size=40))
    head = draw(st.sampled_from([b"", b"", BOM, BOM[:2]]))
    tail = draw(st.sampled_from([b"", b"", b"data: tail", b"id: tail", b"\r"]))
    return head + b"".join(line + end for line, end in lines) + tail


@st.composite
def stream_and_cuts(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    stream = draw(any_stream())
    return stream, draw(st.lists(st.integers(0, len(stream)), max_size=12))


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(stream_and_cuts())
def test_any_chunking_gives_the_events_of_the_whole_stream(case: tuple[bytes, list[int]]) -> None:
    stream, cuts = case
    assert run(stream, cuts) == run(stream, [])


@PROPERTY
@given(any_stream())
def test_agrees_with_the_literal_algorithm(stream: bytes) -> None:
    assert run(stream, []) == reference(stream)


@PROPERTY
@given(any_stream())
def test_byte_by_byte_feeding(stream: bytes) -> None:
    assert run(stream, list(range(len(stream)))) == reference(stream)


# Streams where httpx-sse also follows the standard: every block has data and ends with one empty line
# (httpx-sse dispatches a data-less event when an id was ever set), no BOM (it keeps it), and retry
# values are ASCII digits (its int() also takes "+1", " 1" or "1_0").
BLOCK_LINE = st.one_of(
    st.builds(lambda s, v: b"event" + s + v, SEPARATORS, VALUES),
    st.builds(lambda s, v: b"id" + s + v, SEPARATORS, VALUES),
    st.builds(lambda s, v: b"retry" + s + v, st.sampled_from([b":", b": "]), DIGITS),
    VALUES.map(lambda v: b":" + v),
    VALUES.map(lambda v: b"foo: " + v),
)
DATA_LINE = st.builds(lambda s, v: b"data" + s + v, st.sampled_from([b":", b": ", b":  "]), VALUES)


@st.composite
def httpx_sse_stream(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    out = []
    for _ in range(draw(st.integers(0, 8))):
        lines = draw(st.lists(DATA_LINE, min_size=1, max_size=3)) + draw(st.lists(BLOCK_LINE, max_size=3))
        lines = draw(st.permutations(lines))
        out += [line + draw(TERMINATORS) for line in lines]
        out.append(draw(TERMINATORS))
    stream = b"".join(out)
    return stream, draw(st.lists(st.integers(0, len(stream)), max_size=8))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(httpx_sse_stream())
def test_agrees_with_httpx_sse(case: tuple[bytes, list[int]]) -> None:
    stream, cuts = case
    bounds = [0, *sorted(cuts), len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(chunks))
    theirs = [(s.data, s.event, s.id, s.retry) for s in httpx_sse.EventSource(response).iter_sse()]
    events, _, _ = run(stream, cuts)
    ours = [(s.data, s.event, s.id or "", s.retry) for s in events]  # httpx-sse says "" for "no id yet"
    assert ours == theirs
