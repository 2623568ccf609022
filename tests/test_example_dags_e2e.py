"""The example DAGs run in a real Airflow (`airflow dags test` on a migrated sqlite DB) against the
simulator over loopback, and the files they export hold exactly the simulator's events."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import API_KEY, ROOT, airflow_env, connection_json

from airflow_ftevents.core.spool import event_line
from airflow_ftevents.simulator import JobSpec

pytestmark = pytest.mark.airflow


def _dags_test(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    airflow = str(Path(sys.executable).with_name("airflow"))
    result = subprocess.run(
        [airflow, "dags", "test", *args], env=env, capture_output=True, text=True, timeout=300
    )
    (home / "dags-test.log").write_text(result.stdout + result.stderr)
    return result


def test_wait_and_export_dag_exports_exactly_the_jobs_events(sim, airflow_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports"
    env = airflow_env(
        airflow_home,
        AIRFLOW_CONN_OPENAI_DEFAULT=connection_json(sim.base_url),
        FTEVENTS_EXPORT_ROOT=out.as_uri(),
    )
    result = _dags_test(airflow_home, env, "example_fine_tune_wait_and_export")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    (created,) = sim.job_ids()  # the DAG's first task created it through POST /fine_tuning/jobs
    exports = sorted(out.rglob("*.jsonl"))
    assert [p.name for p in exports] == [f"{created}.jsonl"]
    assert sim.job(created)["status"] == "succeeded"
    events = sim.events(created)
    assert len(events) == 120  # the DAG's params ask the simulator for 120 events
    assert exports[0].read_bytes() == b"".join(event_line(e) for e in events)
    metrics_csv = exports[0].with_name(f"{created}.metrics.csv")
    assert metrics_csv.exists()
    steps = [e for e in events if e.get("type") == "metrics"]
    assert len(metrics_csv.read_text().splitlines()) == len(steps) + 1  # header + one row per step
    logs = result.stdout + result.stderr
    assert API_KEY not in logs
    assert "[metrics] step" in logs  # the sensor/trigger logged training progress


def _interval_from(folder: str) -> tuple[float, float]:
    start, end = folder.split("-")
    return _utc_seconds(start), _utc_seconds(end)


def _utc_seconds(stamp: str) -> float:
    return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=dt.timezone.utc).timestamp()


def test_scheduled_export_partitions_events_by_interval(sim, airflow_home: Path, tmp_path: Path) -> None:
    jobs = [
        sim.add_job(JobSpec(job_id=f"ftjob-sched-{i}", n_events=3000, outcome="succeeded")) for i in (1, 2)
    ]
    out = tmp_path / "exports"
    env = airflow_env(
        airflow_home,
        AIRFLOW_CONN_OPENAI_DEFAULT=connection_json(sim.base_url),
        FTEVENTS_EXPORT_ROOT=out.as_uri(),
        FTEVENTS_JOB_IDS=",".join(jobs),
    )
    # Two consecutive hourly runs covering the hour in which the jobs' events were created and the next.
    newest = max(e["created_at"] for j in jobs for e in sim.events(j))
    hour = dt.datetime.fromtimestamp(newest, dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    for run_after in (hour, hour + dt.timedelta(hours=1)):
        result = _dags_test(airflow_home, env, "example_scheduled_export", run_after.isoformat())
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    folders = sorted(p for p in (out / "hourly").iterdir())
    assert len(folders) == 2
    for job in jobs:
        events = sim.events(job)
        joined = b""
        for folder in folders:
            start, end = _interval_from(folder.name)
            expected = [e for e in events if start <= e["created_at"] < end]
            got = (folder / f"{job}.jsonl").read_bytes()
            assert got == b"".join(event_line(e) for e in expected)
            joined += got
        # consecutive intervals: no event twice, none lost (all events fall in these two hours)
        covered = [
            e
            for e in events
            if _interval_from(folders[0].name)[0] <= e["created_at"] < _interval_from(folders[-1].name)[1]
        ]
        assert joined == b"".join(event_line(e) for e in covered)
        assert json.loads(joined.splitlines()[0])["id"] == covered[0]["id"]


def test_scheduled_export_window_of_a_manual_run_is_the_last_full_hour_before_it() -> None:
    """A manual run without a logical date has no data interval: it exports the previous full hour."""
    import importlib.util

    path = ROOT / "example_dags" / "example_scheduled_export.py"
    spec = importlib.util.spec_from_file_location("example_scheduled_export", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    utc = dt.timezone.utc
    paris = dt.timezone(dt.timedelta(hours=1))
    assert module.hour_window(None, None, dt.datetime(2026, 12, 1, 11, 25, 7, tzinfo=paris)) == {
        "start": "2026-12-01T09:00:00+00:00",
        "end": "2026-12-01T10:00:00+00:00",
        "folder": "20261201T090000-20261201T100000",
    }
    start, end = dt.datetime(2026, 12, 1, 3, tzinfo=utc), dt.datetime(2026, 12, 1, 4, tzinfo=utc)
    assert module.hour_window(start, end, dt.datetime(2026, 12, 1, 9, tzinfo=utc))["folder"] == (
        "20261201T030000-20261201T040000"
    )
