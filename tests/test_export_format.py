"""The JSON Lines format (airflow_ftevents.core.jsonl) and what the export derives from it without decoding.

The expected bytes are built here with ``json.dumps`` (compact separators, UTF-8), independently of the
package; the spool and the export must both produce exactly them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_ftevents.core import jsonl, spool
from airflow_ftevents.core.spool import ReverseSpool
from airflow_ftevents.export import MANIFEST_KEYS, ExportStats, XComLimitError, collect_events, export_events

EVENTS: list[dict[str, Any]] = [
    {
        "object": "fine_tuning.job.event",
        "id": "ftevent-1",
        "created_at": 100,
        "level": "info",
        "message": 'Créé: ligne\nsuivante "citée"',
        "data": None,
        "type": "message",
    },
    {
        "object": "fine_tuning.job.event",
        "id": "ftevent-2",
        "created_at": 101,
        "level": "info",
        "message": "Step 1/10",
        "data": {"step": 1, "train_loss": 1.5, "nested": {"a": [1, 2]}},
        "type": "metrics",
    },
    {"created_at": 102, "level": "warn", "message": "a legacy event has no id", "object": "fine-tune-event"},
]


def oracle(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(e, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for e in events)


def test_a_line_is_compact_utf8_in_the_apis_key_order_and_newline_terminated():
    assert jsonl.event_line({"message": "é", "data": None}) == '{"message":"é","data":null}\n'.encode()
    assert jsonl.event_line({"b": 1, "a": 2}) == b'{"b":1,"a":2}\n'
    assert jsonl.event_lines(EVENTS) == oracle(EVENTS)
    assert jsonl.event_lines([]) == b""


def test_newlines_inside_strings_are_escaped_so_a_block_splits_on_newline_bytes():
    block = jsonl.event_lines(EVENTS)
    assert jsonl.count_lines(block) == 3 == len(block.splitlines())
    assert list(jsonl.iter_block(block)) == EVENTS
    assert [jsonl.decode_line(line) for line in block.splitlines(keepends=True)] == EVENTS


def test_first_and_last_line_of_a_block():
    block = jsonl.event_lines(EVENTS)
    assert jsonl.first_line(block) == oracle(EVENTS[:1])
    assert jsonl.last_line(block) == oracle(EVENTS[-1:])
    single = jsonl.event_line(EVENTS[1])
    assert jsonl.first_line(single) == jsonl.last_line(single) == single
    assert jsonl.id_and_created_at(jsonl.first_line(block)) == ("ftevent-1", 100)
    assert jsonl.id_and_created_at(jsonl.last_line(block)) == (None, 102)


def test_a_field_mark_is_what_a_line_with_that_field_contains():
    assert jsonl.field_mark("type", "metrics") == b'"type":"metrics"'
    assert jsonl.field_mark("type", "métrique") == '"type":"métrique"'.encode()
    lines = jsonl.event_lines(EVENTS).splitlines()
    assert [jsonl.field_mark("type", "metrics") in line for line in lines] == [False, True, False]


def test_the_spool_writes_the_one_format():
    assert spool.event_line is jsonl.event_line
    pages = [EVENTS[2:0:-1], EVENTS[:1]]  # newest first, as the API sends them
    for limit in (10, 1):  # in memory, and spilled to the temporary file
        with ReverseSpool(max_events_in_memory=limit) as reverse:
            for page in pages:
                reverse.add_page(page)
            assert reverse.spilled is (limit == 1)
            assert list(reverse.iter_pages()) == [oracle(EVENTS[:1]), oracle(EVENTS[1:])]


# -- the manifest and the XCom mode ---------------------------------------------------------------------


def blocks_of(events: list[dict[str, Any]], size: int) -> list[bytes]:
    return [oracle(events[i : i + size]) for i in range(0, len(events), size)]


def test_stats_read_the_manifest_from_the_blocks_without_decoding_them():
    stats = ExportStats()
    for block in [b"", *blocks_of(EVENTS, 2), b""]:
        stats.add(block)
    manifest = stats.manifest("file:///x.jsonl", "ftjob-f", "succeeded")
    assert list(manifest) == list(MANIFEST_KEYS)
    assert manifest == {
        "uri": "file:///x.jsonl",
        "job_id": "ftjob-f",
        "count": 3,
        "first_event_id": "ftevent-1",
        "last_event_id": None,
        "first_created_at": 100,
        "last_created_at": 102,
        "status": "succeeded",
        "bytes": len(oracle(EVENTS)),
    }
    assert ExportStats().manifest("u", "j", "running") == {
        "uri": "u",
        "job_id": "j",
        "count": 0,
        "first_event_id": None,
        "last_event_id": None,
        "first_created_at": None,
        "last_created_at": None,
        "status": "running",
        "bytes": 0,
    }


class Blocks:
    """An iterable of blocks that records whether it was closed (the hook's generator must be)."""

    def __init__(self, blocks: list[bytes]) -> None:
        self.blocks = blocks
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.blocks)

    def close(self) -> None:
        self.closed = True


def test_collect_events_returns_them_in_order_and_closes_the_source():
    source = Blocks(blocks_of(EVENTS, 2))
    assert collect_events(source, 3, "ftjob-x") == EVENTS
    assert source.closed


def test_collect_events_refuses_one_more_than_the_cap_naming_the_fix():
    source = Blocks(blocks_of(EVENTS, 1))
    with pytest.raises(XComLimitError) as info:
        collect_events(source, 2, "ftjob-x")
    assert str(info.value) == (
        "Job ftjob-x has more than max_xcom_events=2 events in the requested window, too many to return as "
        "XCom. Set `destination` (for example 's3://aws_conn_id@bucket/prefix/' or 'file:///data/exports/') "
        "to export them to storage, narrow the window with created_after/created_before, or raise "
        "max_xcom_events"
    )
    assert isinstance(info.value, ValueError) and source.closed


def test_export_events_writes_the_blocks_as_they_are_with_the_manifest(tmp_path):
    import fsspec

    from airflow_ftevents.export import Destination

    target = tmp_path / "ftjob-f.jsonl"
    source = Blocks(blocks_of(EVENTS, 2))
    dest = Destination(fsspec.filesystem("file"), str(target), "file")
    manifest = export_events(source, dest, job_id="ftjob-f", status="failed")
    assert target.read_bytes() == oracle(EVENTS)
    assert manifest == {
        "uri": f"file://{target}",
        "job_id": "ftjob-f",
        "count": 3,
        "first_event_id": "ftevent-1",
        "last_event_id": None,
        "first_created_at": 100,
        "last_created_at": 102,
        "status": "failed",
        "bytes": len(oracle(EVENTS)),
    }
    assert source.closed
