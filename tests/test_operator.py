"""FineTuneEventsExportOperator against the live simulator: exact bytes, windows, XCom cap, atomicity.

Every expectation is built independently of the package: the simulator's own events, serialized here
with ``json.dumps`` (compact, UTF-8), oldest first.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import itertools
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pendulum
import pytest
from task_doubles import FakeTI

from airflow_ftevents._compat import AirflowException
from airflow_ftevents.errors import FineTuneEventsAuthError
from airflow_ftevents.simulator import JobSpec
from airflow_ftevents.triggers import trigger_event_payload

pytestmark = pytest.mark.timeout(120)

MANIFEST_KEYS = [
    "uri",
    "job_id",
    "count",
    "first_event_id",
    "last_event_id",
    "first_created_at",
    "last_created_at",
    "status",
    "bytes",
]


def line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(line(e) for e in events)


def run(op: Any, **context: Any) -> Any:
    """Render the templated fields, then execute, as a task runner would."""
    context = {"ti": FakeTI(), **context}
    op.render_template_fields(context)
    return op.execute(context)


def operator(**kwargs: Any) -> Any:
    from airflow_ftevents.operators import FineTuneEventsExportOperator

    return FineTuneEventsExportOperator(task_id="export", **kwargs)


def fail_exceptions() -> tuple[type[BaseException], ...]:
    from airflow_ftevents.operators import AirflowFailException

    return (AirflowFailException,)


def task_deferred() -> type[BaseException]:
    try:
        from airflow.sdk.exceptions import TaskDeferred
    except ImportError:  # Airflow < 3.2
        from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]
    return TaskDeferred


def manifest_for(uri: str, job_id: str, events: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {
        "uri": uri,
        "job_id": job_id,
        "count": len(events),
        "first_event_id": events[0].get("id") if events else None,
        "last_event_id": events[-1].get("id") if events else None,
        "first_created_at": events[0]["created_at"] if events else None,
        "last_created_at": events[-1]["created_at"] if events else None,
        "status": status,
        "bytes": len(jsonl(events)),
    }


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- content, naming, manifest ---------------------------------------------------------------------


@pytest.mark.airflow
def test_export_to_a_file_is_exactly_the_simulators_events_with_an_exact_manifest(sim, sim_conn, tmp_path):
    sim.add_job(JobSpec(job_id="ftjob-exact", n_events=1234))
    target = tmp_path / "out" / "events.jsonl"
    context_ti = FakeTI()
    op = operator(job_id="ftjob-exact", destination=f"file://{target}")
    op.render_template_fields({})
    manifest = op.execute({"ti": context_ti})

    events = sim.events("ftjob-exact")
    assert target.read_bytes() == jsonl(events)
    assert list(manifest) == MANIFEST_KEYS
    assert manifest == manifest_for(f"file://{target}", "ftjob-exact", events, "succeeded")
    assert listing(target.parent) == ["events.jsonl"]
    assert context_ti.xcoms == {"_link_FineTuneJobLink": "https://platform.openai.com/finetune/ftjob-exact"}


@pytest.mark.airflow
def test_folder_destination_gets_a_safe_file_named_after_the_job(sim, sim_conn, tmp_path):
    job_id = "ftjob-a/../b?c d"
    sim.add_job(JobSpec(job_id=job_id, n_events=50))
    folder = tmp_path / "new" / "folder"
    manifest = run(operator(job_id=job_id, destination=f"{folder}/"))  # a bare path is a local file
    assert listing(folder) == ["ftjob-a_.._b_c_d.jsonl"]
    assert (folder / "ftjob-a_.._b_c_d.jsonl").read_bytes() == jsonl(sim.events(job_id))
    assert manifest["uri"] == f"file://{folder}/ftjob-a_.._b_c_d.jsonl"
    assert listing(tmp_path) == ["new"]


@pytest.mark.airflow
def test_object_storage_path_destination(sim, sim_conn, tmp_path):
    from airflow.sdk import ObjectStoragePath

    sim.add_job(JobSpec(job_id="ftjob-osp", n_events=80))
    try:
        dest = ObjectStoragePath(f"file://{tmp_path}/osp.jsonl")
    except Exception as exc:  # Airflow 3.1 with universal-pathlib >= 0.3 cannot build one at all
        pytest.skip(f"ObjectStoragePath is unusable in this environment: {exc}")
    manifest = run(operator(job_id="ftjob-osp", destination=dest))
    assert (tmp_path / "osp.jsonl").read_bytes() == jsonl(sim.events("ftjob-osp"))
    assert manifest["uri"] == f"file://{tmp_path}/osp.jsonl"
    folder = ObjectStoragePath(f"file://{tmp_path}")  # an existing folder: the job's file inside it
    assert (
        run(operator(job_id="ftjob-osp", destination=folder))["uri"] == f"file://{tmp_path}/ftjob-osp.jsonl"
    )


def test_100k_event_job_is_exported_exactly(sim, sim_conn, tmp_path):
    sim.add_job(JobSpec(job_id="ftjob-big", n_events=100_000))
    start = time.monotonic()
    manifest = run(operator(job_id="ftjob-big", destination=f"file://{tmp_path}/", page_size=1000))
    took = time.monotonic() - start
    events = sim.events("ftjob-big")
    data = (tmp_path / "ftjob-big.jsonl").read_bytes()
    assert data == jsonl(events)
    assert manifest == manifest_for(f"file://{tmp_path}/ftjob-big.jsonl", "ftjob-big", events, "succeeded")
    assert listing(tmp_path) == ["ftjob-big.jsonl"]
    print(f"100k events exported in {took:.1f} s")


@pytest.mark.airflow
def test_rerun_writes_the_same_bytes(sim, sim_conn, tmp_path):
    sim.add_job(JobSpec(job_id="ftjob-again", n_events=321))
    first = run(operator(job_id="ftjob-again", destination=f"file://{tmp_path}/"))
    before = (tmp_path / "ftjob-again.jsonl").read_bytes()
    second = run(operator(job_id="ftjob-again", destination=f"file://{tmp_path}/"))
    assert (tmp_path / "ftjob-again.jsonl").read_bytes() == before == jsonl(sim.events("ftjob-again"))
    assert first == second
    assert listing(tmp_path) == ["ftjob-again.jsonl"]


@pytest.mark.airflow
def test_legacy_api_export(sim, sim_conn, tmp_path):
    sim.add_job(JobSpec(job_id="ft-legacy", n_events=140, outcome="cancelled"))
    manifest = run(operator(job_id="ft-legacy", api="fine_tunes", destination=f"file://{tmp_path}/"))
    events = sim.legacy_events("ft-legacy")
    assert "id" not in events[0]
    assert (tmp_path / "ft-legacy.jsonl").read_bytes() == jsonl(events)
    assert manifest == manifest_for(f"file://{tmp_path}/ft-legacy.jsonl", "ft-legacy", events, "cancelled")
    assert manifest["first_event_id"] is None and manifest["last_event_id"] is None

    start = events[70]["created_at"]
    windowed = run(operator(job_id="ft-legacy", api="fine_tunes", created_after=start))
    assert windowed == [e for e in events if e["created_at"] >= start]


# -- windows ---------------------------------------------------------------------------------------


def event_requests(sim: Any, job_id: str) -> list[str]:
    return [path for method, path, _ in sim.request_log if f"/jobs/{job_id}/events" in path]


@pytest.mark.airflow
def test_windows_at_page_boundaries_and_shared_timestamps_partition_the_events(sim, sim_conn, tmp_path):
    sim.add_job(JobSpec(job_id="ftjob-win", n_events=1000))
    events = sim.events("ftjob-win")
    # Pages of 100, newest first: index 900 is the oldest event of the first page, 500 of the fifth.
    cuts = [events[i]["created_at"] for i in (100, 500, 900)]
    for i in (100, 500, 900):  # each cut falls inside a run of equal timestamps
        assert events[i - 1]["created_at"] == events[i]["created_at"] or (
            events[i + 1]["created_at"] == events[i]["created_at"]
        )
    bounds = [None, *cuts, None]
    pieces = b""
    for n, (after, before) in enumerate(itertools.pairwise(bounds)):
        dest = tmp_path / f"part-{n}.jsonl"
        manifest = run(
            operator(
                job_id="ftjob-win", destination=f"file://{dest}", created_after=after, created_before=before
            )
        )
        expected = [
            e
            for e in events
            if (after is None or e["created_at"] >= after) and (before is None or e["created_at"] < before)
        ]
        assert expected
        assert dest.read_bytes() == jsonl(expected)
        assert manifest["count"] == len(expected)
        pieces += dest.read_bytes()
    assert pieces == jsonl(events)


@pytest.mark.airflow
def test_paging_stops_once_events_are_older_than_the_window(sim, sim_conn):
    sim.add_job(JobSpec(job_id="ftjob-stop", n_events=1000))
    events = sim.events("ftjob-stop")
    start = events[900]["created_at"]  # the oldest event of the first page of 100
    sim.request_log.clear()
    got = run(operator(job_id="ftjob-stop", created_after=start))
    assert got == [e for e in events if e["created_at"] >= start]
    # The first page ends on the window's start (equal timestamps may continue), the second leaves it.
    assert len(event_requests(sim, "ftjob-stop")) == 2


@pytest.mark.airflow
@pytest.mark.parametrize(
    "after",
    [
        lambda ts: ts,  # unix seconds
        lambda ts: float(ts),
        lambda ts: str(ts),
        lambda ts: dt.datetime.fromtimestamp(ts, dt.timezone.utc),
        lambda ts: dt.datetime.fromtimestamp(ts, dt.timezone.utc).replace(tzinfo=None),  # naive = UTC
        lambda ts: dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        lambda ts: dt.datetime.fromtimestamp(ts, dt.timezone(dt.timedelta(hours=2))).isoformat(),
    ],
    ids=["int", "float", "numeric-str", "aware", "naive", "iso-z", "iso-offset"],
)
def test_window_bound_types_are_equivalent(sim, sim_conn, after):
    sim.add_job(JobSpec(job_id="ftjob-types", n_events=300))
    events = sim.events("ftjob-types")
    ts = events[150]["created_at"]
    assert run(operator(job_id="ftjob-types", created_after=after(ts))) == [
        e for e in events if e["created_at"] >= ts
    ]


@pytest.mark.airflow
def test_window_from_templates_of_the_data_interval(sim, sim_conn, tmp_path):
    sim.add_job(JobSpec(job_id="ftjob-tpl", n_events=400))
    events = sim.events("ftjob-tpl")
    start, end = events[100]["created_at"], events[300]["created_at"]
    op = operator(
        job_id="{{ params.job }}",
        destination=f"file://{tmp_path}/" + "{{ ds_nodash }}/",
        created_after="{{ data_interval_start }}",
        created_before="{{ data_interval_end }}",
    )
    manifest = run(
        op,
        params={"job": "ftjob-tpl"},
        ds_nodash="20240101",
        data_interval_start=pendulum.from_timestamp(start, tz="UTC"),
        data_interval_end=pendulum.from_timestamp(end, tz="Europe/Paris"),
    )
    assert op.created_after == pendulum.from_timestamp(start, tz="UTC").isoformat(sep=" ")
    expected = [e for e in events if start <= e["created_at"] < end]
    assert (tmp_path / "20240101" / "ftjob-tpl.jsonl").read_bytes() == jsonl(expected)
    assert manifest["uri"] == f"file://{tmp_path}/20240101/ftjob-tpl.jsonl"


@pytest.mark.airflow
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"created_after": "yesterday"}, "created_after must be"),
        ({"created_before": "None"}, "created_before must be"),
        ({"created_after": 200, "created_before": 100}, "created_before (100) is earlier than created_after"),
        ({"destination": "relative/events.jsonl"}, "destination 'relative/events.jsonl' is neither"),
        ({"job_id": "  "}, "job_id must be a non-empty string"),
    ],
)
def test_invalid_values_fail_at_execute_time_naming_the_parameter(sim, sim_conn, kwargs, message):
    op = operator(**{"job_id": "ftjob-x", **kwargs})
    with pytest.raises(fail_exceptions()) as info:
        run(op)
    assert message in str(info.value)
    assert sim.request_log == []  # refused before any request


def test_invalid_arguments_are_refused_when_the_dag_is_parsed():
    with pytest.raises(ValueError, match="set `destination`"):
        operator(job_id="j", metrics_csv=True)
    with pytest.raises(ValueError, match="api must be"):
        operator(job_id="j", api="chat")
    with pytest.raises(ValueError, match="page_size"):
        operator(job_id="j", page_size=0)
    with pytest.raises(ValueError, match="poll_interval"):
        operator(job_id="j", poll_interval=-1)


# -- XCom --------------------------------------------------------------------------------------------


@pytest.mark.airflow
def test_xcom_return_value_up_to_the_cap_and_a_clear_failure_past_it(sim, sim_conn):
    sim.add_job(JobSpec(job_id="ftjob-xcom", n_events=300))
    events = sim.events("ftjob-xcom")
    assert run(operator(job_id="ftjob-xcom", max_xcom_events=300)) == events
    ti = FakeTI()
    op = operator(job_id="ftjob-xcom", max_xcom_events=299)
    with pytest.raises(fail_exceptions()) as info:
        op.execute({"ti": ti})
    text = str(info.value)
    assert "more than max_xcom_events=299 events" in text
    assert "Set `destination`" in text
    assert list(ti.xcoms) == ["_link_FineTuneJobLink"]  # nothing but the link


# -- atomicity -------------------------------------------------------------------------------------


@pytest.mark.airflow
def test_api_failure_mid_export_leaves_the_previous_file_and_no_temporary_file(sim, monkeypatch, tmp_path):
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENAI_DEFAULT",
        json.dumps(
            {
                "conn_type": "openai_ftevents",
                "host": sim.base_url,
                "password": sim.api_key,
                "extra": {"max_retries": 1, "timeout": 5},
            }
        ),
    )
    sim.add_job(JobSpec(job_id="ftjob-reset", n_events=1000))
    events = sim.events("ftjob-reset")
    target = tmp_path / "ftjob-reset.jsonl"
    target.write_bytes(b"previous export\n")
    # The request for the fourth page (after the oldest event of the third) is reset every time.
    sim.inject("reset", count=10, path=f"after={events[1000 - 300]['id']}")
    from airflow_ftevents.errors import FineTuneEventsConnectionError

    with pytest.raises(FineTuneEventsConnectionError):
        run(operator(job_id="ftjob-reset", destination=f"{tmp_path}/"))
    assert len(event_requests(sim, "ftjob-reset")) == 3 + 2  # three pages, then a try and one retry
    assert listing(tmp_path) == ["ftjob-reset.jsonl"]
    assert target.read_bytes() == b"previous export\n"


@pytest.mark.airflow
@pytest.mark.parametrize("previous", [None, b"previous export\n"])
def test_write_failure_mid_export_leaves_nothing_new(sim, sim_conn, monkeypatch, tmp_path, previous):
    from airflow_ftevents.hooks import FineTuneEventsHook

    sim.add_job(JobSpec(job_id="ftjob-disk", n_events=1000))
    original = FineTuneEventsHook.iter_event_blocks
    written: list[int] = []

    def failing(self: Any, *args: Any, **kwargs: Any) -> Any:
        for n, block in enumerate(original(self, *args, **kwargs)):
            if n == 4:
                raise OSError(28, "No space left on device")
            written.append(len(block))
            yield block

    monkeypatch.setattr(FineTuneEventsHook, "iter_event_blocks", failing)
    target = tmp_path / "ftjob-disk.jsonl"
    if previous is not None:
        target.write_bytes(previous)
    with pytest.raises(OSError, match="No space left"):
        run(operator(job_id="ftjob-disk", destination=f"file://{tmp_path}/", metrics_csv=True))
    assert len(written) == 4 and sum(written) > 0  # the temporary file held part of the export
    if previous is None:
        assert listing(tmp_path) == []
    else:
        assert listing(tmp_path) == ["ftjob-disk.jsonl"]
        assert target.read_bytes() == previous


# -- companions ------------------------------------------------------------------------------------


def expected_metrics_csv(events: list[dict[str, Any]]) -> str:
    rows = [e for e in events if e.get("type") == "metrics" and isinstance(e.get("data"), dict)]
    keys = {k for e in rows for k in e["data"]}
    preferred = [
        "step",
        "created_at",
        "train_loss",
        "valid_loss",
        "train_mean_token_accuracy",
        "valid_mean_token_accuracy",
        "full_valid_loss",
        "full_valid_mean_token_accuracy",
        "total_steps",
    ]
    columns = [c for c in preferred if c in keys or c in ("step", "created_at")] + sorted(
        keys - set(preferred)
    )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for e in rows:
        writer.writerow(
            [
                e["created_at"] if c == "created_at" else ("" if e["data"].get(c) is None else e["data"][c])
                for c in columns
            ]
        )
    return out.getvalue()


@pytest.mark.airflow
def test_metrics_csv_and_loss_plot_next_to_the_export(sim, sim_conn, tmp_path):
    pytest.importorskip("matplotlib")  # an optional extra: airflow-ftevents[plot]
    sim.add_job(JobSpec(job_id="ftjob-metrics", n_events=500))
    manifest = run(
        operator(job_id="ftjob-metrics", destination=f"file://{tmp_path}/", metrics_csv=True, loss_plot=True)
    )
    events = sim.events("ftjob-metrics")
    assert listing(tmp_path) == ["ftjob-metrics.jsonl", "ftjob-metrics.loss.png", "ftjob-metrics.metrics.csv"]
    assert manifest == {
        **manifest_for(f"file://{tmp_path}/ftjob-metrics.jsonl", "ftjob-metrics", events, "succeeded"),
        "metrics_csv": f"file://{tmp_path}/ftjob-metrics.metrics.csv",
        "loss_plot": f"file://{tmp_path}/ftjob-metrics.loss.png",
    }
    text = (tmp_path / "ftjob-metrics.metrics.csv").read_text()
    assert text == expected_metrics_csv(events)
    assert text.splitlines()[0] == (
        "step,created_at,train_loss,valid_loss,train_mean_token_accuracy,valid_mean_token_accuracy,"
        "full_valid_loss,full_valid_mean_token_accuracy,total_steps"
    )
    assert len(text.splitlines()) == 1 + sum(1 for e in events if e.get("type") == "metrics")
    png = (tmp_path / "ftjob-metrics.loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1000, 500)


@pytest.mark.airflow
def test_loss_plot_without_matplotlib_fails_before_writing(sim, sim_conn, monkeypatch, tmp_path):
    sim.add_job(JobSpec(job_id="ftjob-noplot", n_events=50))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(fail_exceptions(), match=r"loss_plot=True needs matplotlib.*airflow-ftevents\[plot\]"):
        run(operator(job_id="ftjob-noplot", destination=f"file://{tmp_path}/", loss_plot=True))
    assert listing(tmp_path) == []
    assert event_requests(sim, "ftjob-noplot") == []


# -- waiting for the job ---------------------------------------------------------------------------


@pytest.mark.airflow
def test_wait_for_completion_polls_then_exports_everything(sim, sim_conn, tmp_path):
    sim.add_job(JobSpec(job_id="ftjob-live", n_events=60, duration=1.5))
    assert sim.job("ftjob-live")["status"] != "succeeded"
    manifest = run(
        operator(
            job_id="ftjob-live",
            destination=f"{tmp_path}/",
            wait_for_completion=True,
            poll_interval=0.2,
            deferrable=False,
        )
    )
    events = sim.events("ftjob-live")
    assert len(events) == 60
    assert (tmp_path / "ftjob-live.jsonl").read_bytes() == jsonl(events)
    assert manifest["status"] == "succeeded" and manifest["count"] == 60


@pytest.mark.airflow
def test_wait_timeout_fails_without_exporting(sim, sim_conn, tmp_path):
    sim.add_job(JobSpec(job_id="ftjob-slow", n_events=60, duration=60))
    start = time.monotonic()
    with pytest.raises(AirflowException, match=r"did not finish within timeout=0.5 s .*nothing was exported"):
        run(
            operator(
                job_id="ftjob-slow",
                destination=f"{tmp_path}/",
                wait_for_completion=True,
                poll_interval=0.1,
                timeout=0.5,
                deferrable=False,
            )
        )
    assert time.monotonic() - start >= 0.5  # it waited the whole timeout (pytest-timeout guards a hang)
    assert listing(tmp_path) == []


@pytest.mark.airflow
def test_failed_job_is_exported_and_fails_only_when_asked(sim, sim_conn, tmp_path):
    sim.add_job(JobSpec(job_id="ftjob-failed", n_events=90, outcome="failed"))
    events = sim.events("ftjob-failed")
    manifest = run(operator(job_id="ftjob-failed", destination=f"{tmp_path}/", wait_for_completion=True))
    assert manifest == manifest_for(f"file://{tmp_path}/ftjob-failed.jsonl", "ftjob-failed", events, "failed")
    (tmp_path / "ftjob-failed.jsonl").unlink()
    with pytest.raises(
        Exception, match=r"Fine-tuning job ftjob-failed failed.*its events were exported first"
    ):
        run(operator(job_id="ftjob-failed", destination=f"{tmp_path}/", fail_on_job_failure=True))
    assert (tmp_path / "ftjob-failed.jsonl").read_bytes() == jsonl(events)


@pytest.mark.airflow
def test_deferrable_wait_hands_over_to_the_trigger_then_exports(sim, sim_conn, tmp_path):
    from airflow_ftevents.triggers import FineTuneJobTrigger

    sim.add_job(JobSpec(job_id="ftjob-defer", n_events=40, duration=1.5))
    op = operator(
        job_id="ftjob-defer",
        destination=f"{tmp_path}/",
        wait_for_completion=True,
        poll_interval=0.2,
        timeout=60,
        deferrable=True,
    )
    before, visible_before = time.time(), sim.event_count("ftjob-defer")
    with pytest.raises(task_deferred()) as info:
        run(op)
    visible_after = sim.event_count("ftjob-defer")
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    trigger = deferred.trigger
    assert isinstance(trigger, FineTuneJobTrigger)
    _, kwargs = trigger.serialize()
    # The trigger starts at the newest event when the task deferred (the job is live: it may have grown).
    candidates = [
        {"last_id": e["id"], "last_created_at": e["created_at"], "count": 0}
        for e in sim.events("ftjob-defer")[visible_before - 1 : visible_after]
    ]
    assert kwargs["job_id"] == "ftjob-defer" and kwargs["poll_interval"] == 0.2
    assert before + 60 <= kwargs["end_time"] <= time.time() + 60
    assert kwargs["progress"]["tail"] in candidates
    assert kwargs["progress"]["last_event"] is None  # nothing logged yet: the export reads it all later
    assert listing(tmp_path) == []

    async def first_event() -> Any:
        async for event in FineTuneJobTrigger(**kwargs).run():
            return event.payload

    payload = asyncio.run(asyncio.wait_for(first_event(), 30))
    assert payload["status"] == "success", payload
    manifest = op.execute_complete({"ti": FakeTI()}, payload)
    events = sim.events("ftjob-defer")
    assert (tmp_path / "ftjob-defer.jsonl").read_bytes() == jsonl(events)
    assert manifest == manifest_for(
        f"file://{tmp_path}/ftjob-defer.jsonl", "ftjob-defer", events, "succeeded"
    )


@pytest.mark.airflow
def test_deferrable_on_a_finished_job_exports_at_once(sim, sim_conn):
    sim.add_job(JobSpec(job_id="ftjob-done", n_events=30))
    got = run(operator(job_id="ftjob-done", wait_for_completion=True, deferrable=True))
    assert got == sim.events("ftjob-done")


@pytest.mark.airflow
def test_execute_complete_refuses_timeouts_errors_and_malformed_events(sim, sim_conn, tmp_path):
    op = operator(job_id="ftjob-none", destination=f"{tmp_path}/", wait_for_completion=True, deferrable=True)
    timeout = {"status": "timeout", "message": "Fine-tuning job ftjob-none did not finish", "job": None}
    with pytest.raises(AirflowException, match="did not finish; nothing was exported"):
        op.execute_complete({"ti": FakeTI()}, timeout)
    with pytest.raises(ValueError, match="Unexpected trigger event status 'bogus'"):
        op.execute_complete({"ti": FakeTI()}, {"status": "bogus", "message": "", "job": None})
    met = FineTuneEventsAuthError("Incorrect API key provided", status_code=401, code="invalid_api_key")
    with pytest.raises(FineTuneEventsAuthError) as info:  # the trigger's own exception, raised again
        op.execute_complete({"ti": FakeTI()}, trigger_event_payload("error", str(met), None, met))
    assert (info.value.status_code, info.value.code, str(info.value)) == (401, "invalid_api_key", str(met))
    assert listing(tmp_path) == []
    assert sim.request_log == []


# -- end to end in a real Airflow ------------------------------------------------------------------

DAG_FILE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG
    from airflow_ftevents.operators import FineTuneEventsExportOperator

    with DAG("ftevents_e2e", schedule="@daily", start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
             catchup=False, params={"job_id": "", "root": "", "created_after": ""}) as dag:
        FineTuneEventsExportOperator(
            task_id="export",
            job_id="{{ params.job_id }}",
            destination="file://{{ params.root }}/{{ ds_nodash }}/",
            created_after="{{ params.created_after }}",
        )
    """
)

RUNNER = textwrap.dedent(
    """
    import importlib.util, json, os, subprocess, sys
    import pendulum

    spec = importlib.util.spec_from_file_location("ftevents_e2e", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.dag
    when = pendulum.datetime(2024, 3, 1, tz="UTC")
    try:
        run = dag.test(logical_date=when, run_conf=json.loads(sys.argv[2]))
    except Exception as exc:  # Airflow 3.1's dag.test() needs the DAG serialized in the database first
        if "not serialized" not in str(exc):
            raise
        airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
        subprocess.run([airflow, "dags", "reserialize"], check=True, capture_output=True)
        run = dag.test(logical_date=when, run_conf=json.loads(sys.argv[2]))
    ti = [ti for ti in run.get_task_instances() if ti.task_id == "export"][0]
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id="ftevents_e2e", run_id=run.run_id,
                                                  task_id="export").all()
        values = {row.key: XComModel.deserialize_value(row) for row in rows}
    print("RESULT " + json.dumps({"state": str(run.state), "ti_state": str(ti.state), "xcom": values}))
    """
)


@pytest.mark.airflow
@pytest.mark.timeout(240)
def test_end_to_end_dag_run_in_a_real_airflow(sim, api_key, tmp_path):
    sim.add_job(JobSpec(job_id="ftjob-e2e", n_events=700))
    events = sim.events("ftjob-e2e")
    cut = events[200]["created_at"]
    home = tmp_path / "airflow-home"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "ftevents_e2e.py").write_text(DAG_FILE)
    (tmp_path / "runner.py").write_text(RUNNER)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(
            {
                "conn_type": "openai_ftevents",
                "host": sim.base_url,
                "password": api_key,
                "extra": {"max_retries": 2, "timeout": 10},
            }
        ),
    }
    airflow = Path(sys.executable).with_name("airflow")
    migrate = subprocess.run(
        [str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    root = tmp_path / "exports"
    conf = {"job_id": "ftjob-e2e", "root": str(root), "created_after": str(cut)}
    done = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "runner.py"),
            str(home / "dags" / "ftevents_e2e.py"),
            json.dumps(conf),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(
        next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))[len("RESULT ") :]
    )
    expected = [e for e in events if e["created_at"] >= cut]
    target = root / "20240301" / "ftjob-e2e.jsonl"
    assert target.read_bytes() == jsonl(expected)
    assert listing(target.parent) == ["ftjob-e2e.jsonl"]
    assert result["state"] == "success" and result["ti_state"] == "success"
    assert result["xcom"] == {
        "return_value": manifest_for(f"file://{target}", "ftjob-e2e", expected, "succeeded"),
        "_link_FineTuneJobLink": "https://platform.openai.com/finetune/ftjob-e2e",
    }


# -- unusable destinations (the export package's own tests: tests/test_export_*.py) -----------------


@pytest.mark.airflow
def test_an_unusable_destination_fails_without_retries_naming_what_to_do(sim, sim_conn, tmp_path):
    sim.add_job(JobSpec(job_id="ftjob-dest", n_events=50))
    blocker = tmp_path / "exports"
    blocker.write_bytes(b"a file\n")
    with pytest.raises(fail_exceptions()) as info:
        run(operator(job_id="ftjob-dest", destination=f"file://{blocker}/sub/"))
    assert str(info.value) == (
        f"Cannot write the export to file://{blocker}/sub/ftjob-dest.jsonl: NotADirectoryError: [Errno 20] "
        f"Not a directory: '{blocker}/sub'. {blocker} is a file, not a folder: choose a destination that is "
        "not under a file, or move that file away"
    )
    assert listing(tmp_path) == ["exports"]
    assert event_requests(sim, "ftjob-dest") == []  # the events are not read for nothing

    sim.request_log.clear()
    with pytest.raises(fail_exceptions()) as info:
        run(operator(job_id="ftjob-dest", destination="nosuchfs://conn@bucket/runs/"))
    assert str(info.value) == (
        "Cannot export to nosuchfs://conn@bucket/runs/: this worker has no filesystem for nosuchfs:// (the "
        "Airflow provider that registers it, or its fsspec library, is not installed). Install the fsspec "
        "filesystem for nosuchfs:// and the Airflow provider that registers it where tasks run, or choose "
        "another destination"
    )
    assert sim.request_log == []


@pytest.mark.airflow
def test_a_full_disk_is_left_to_airflows_retries(sim, sim_conn, monkeypatch, tmp_path):
    from airflow_ftevents.errors import ExportDestinationError
    from airflow_ftevents.export import publish

    def full(path: str, mode: str) -> Any:
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(publish, "open", full, raising=False)
    sim.add_job(JobSpec(job_id="ftjob-full", n_events=10))
    with pytest.raises(
        ExportDestinationError, match=r"No space left on device\. The filesystem is full"
    ) as info:
        run(operator(job_id="ftjob-full", destination=f"{tmp_path}/"))
    assert info.value.retryable and not isinstance(info.value, fail_exceptions())
    assert listing(tmp_path) == []
