"""The companions of an export (airflow_ftevents.export.companions): the metrics CSV and the loss plot.

Expected CSVs are built here with the csv module from the events themselves.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import sys
from pathlib import Path
from typing import Any

import fsspec
import pytest

from airflow_ftevents.export import (
    Destination,
    MetricsCollector,
    companion_name,
    export_events,
    loss_plot_png,
    require_matplotlib,
)


def line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def metrics(step: int, created_at: int, **data: Any) -> dict[str, Any]:
    return {
        "id": f"ftevent-{step}",
        "created_at": created_at,
        "type": "metrics",
        "data": {"step": step, **data},
    }


EVENTS = [
    {"id": "ftevent-m", "created_at": 1, "type": "message", "message": 'not "type":"metrics" really'},
    metrics(1, 2, train_loss=2.5, zeta="z", flag=True),
    {"id": "ftevent-n", "created_at": 3, "type": "metrics", "data": None},  # no object data: no row
    metrics(2, 4, train_loss=2.0, valid_loss=2.2, extra={"k": [1, "é"]}),
    metrics(3, 5, train_loss=float("inf"), full_valid_loss=1.9, total_steps=3),
]


def collected(events: list[dict[str, Any]], per_block: int = 2) -> MetricsCollector:
    collector = MetricsCollector()
    for i in range(0, len(events), per_block):
        collector.feed(b"".join(line(e) for e in events[i : i + per_block]))
    return collector


def test_companions_share_the_stem_of_the_json_lines_file():
    assert companion_name("ftjob-1.jsonl", ".metrics.csv") == "ftjob-1.metrics.csv"
    assert companion_name("events", ".loss.png") == "events.loss.png"
    assert companion_name(".jsonl", ".loss.png") == ".jsonl.loss.png"


def test_the_csv_has_one_row_per_metrics_event_known_columns_first():
    collector = collected(EVENTS)
    try:
        assert collector.count == 3
        assert collector.columns() == [
            "step",
            "created_at",
            "train_loss",
            "valid_loss",
            "full_valid_loss",
            "total_steps",
            "extra",
            "flag",
            "zeta",
        ]
        text = b"".join(collector.csv_chunks()).decode()
        assert text == (
            "step,created_at,train_loss,valid_loss,full_valid_loss,total_steps,extra,flag,zeta\n"
            "1,2,2.5,,,,,true,z\n"
            '2,4,2.0,2.2,,,"{""k"":[1,""é""]}",,\n'
            "3,5,inf,,1.9,3,,,\n"
        )
        assert b"".join(collector.csv_chunks(rows_per_chunk=1)).decode() == text  # chunking changes nothing
        assert list(csv.reader(io.StringIO(text)))[2][6] == '{"k":[1,"é"]}'
    finally:
        collector.close()


def test_without_metrics_the_csv_is_its_header():
    collector = collected(EVENTS[:1])
    assert collector.count == 0
    assert b"".join(collector.csv_chunks()) == b"step,created_at\n"
    assert collector.loss_series() == {}
    collector.close()


def test_loss_series_skip_non_finite_values_and_are_thinned_keeping_the_last_point():
    collector = collected(EVENTS)
    assert collector.loss_series() == {
        "train_loss": ([1.0, 2.0], [2.5, 2.0]),
        "valid_loss": ([2.0], [2.2]),
        "full_valid_loss": ([3.0], [1.9]),
    }
    collector.close()
    long = collected([metrics(step, step, train_loss=step / 10) for step in range(1, 11)], per_block=3)
    assert long.loss_series(max_points=4) == {
        "train_loss": ([1.0, 4.0, 7.0, 10.0], [0.1, 0.4, 0.7, 1.0])  # stride 3, and the last point
    }
    long.close()


def test_the_loss_plot_is_a_1000_by_500_png():
    png = loss_plot_png({"train_loss": ([1.0, 2.0], [2.5, 2.0])}, "Loss of ftjob-p")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1000, 500)
    empty = loss_plot_png({}, "no metrics")
    assert struct.unpack(">II", empty[16:24]) == (1000, 500)


def test_without_matplotlib_the_plot_fails_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(RuntimeError) as info:
        require_matplotlib()
    assert str(info.value) == (
        "loss_plot=True needs matplotlib, which is not installed on this worker; install it with "
        "`pip install 'airflow-ftevents[plot]'` or set loss_plot=False"
    )


def test_without_matplotlib_an_export_with_a_plot_writes_nothing(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    read: list[bytes] = []

    def blocks() -> Any:
        read.append(b"")
        yield line(EVENTS[1])

    dest = Destination(fsspec.filesystem("file"), str(tmp_path / "ftjob-p.jsonl"), "file")
    with pytest.raises(RuntimeError, match=r"airflow-ftevents\[plot\]"):
        export_events(blocks(), dest, job_id="ftjob-p", status="succeeded", loss_plot=True)
    assert read == [] and list(tmp_path.iterdir()) == []


def test_an_export_publishes_its_companions_next_to_it(tmp_path: Path):
    dest = Destination(fsspec.filesystem("file"), str(tmp_path / "ftjob-c.jsonl"), "file")
    blocks = [b"".join(line(e) for e in EVENTS[:2]), b"".join(line(e) for e in EVENTS[2:])]
    manifest = export_events(
        iter(blocks), dest, job_id="ftjob-c", status="succeeded", metrics_csv=True, loss_plot=True
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ftjob-c.jsonl",
        "ftjob-c.loss.png",
        "ftjob-c.metrics.csv",
    ]
    assert manifest["metrics_csv"] == f"file://{tmp_path}/ftjob-c.metrics.csv"
    assert manifest["loss_plot"] == f"file://{tmp_path}/ftjob-c.loss.png"
    assert list(manifest)[-2:] == ["metrics_csv", "loss_plot"]
    collector = collected(EVENTS)
    assert (tmp_path / "ftjob-c.metrics.csv").read_bytes() == b"".join(collector.csv_chunks())
    collector.close()
    assert (tmp_path / "ftjob-c.loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "ftjob-c.jsonl").read_bytes() == b"".join(blocks)
