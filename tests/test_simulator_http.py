"""The simulator as an HTTP server: auth, Azure prefixes, 404 bodies, raw paths, keep-alive, stop, CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest
import requests

pytest.register_assert_rewrite("simulator_fixtures")
from simulator_fixtures import (  # noqa: E402
    REQUEST_ID,
    SIM_KEY,
    add,
    job_url,
    sse_lines,
)

from airflow_ftevents.simulator import JobSpec, Simulator  # noqa: E402
from airflow_ftevents.simulator.__main__ import build_parser  # noqa: E402

pytest_plugins = ["simulator_fixtures"]  # fixtures: validators, shared_sim, simulator, http
ROOT = Path(__file__).resolve().parents[1]


def test_auth_errors_never_echo_the_key(simulator: Simulator) -> None:
    job_id = add(simulator, n_events=10)
    url = job_url(simulator, job_id, "/events")
    wrong = "sk-wrong-Kq93hZ7vXb2LmA0c"
    cases = {
        "missing": {},
        "wrong bearer": {"Authorization": f"Bearer {wrong}"},
        "wrong azure": {"api-key": wrong},
        "not bearer": {"Authorization": SIM_KEY},
    }
    for name, headers in cases.items():
        response = requests.get(url, headers=headers, timeout=5)
        assert response.status_code == 401, name
        error = response.json()["error"]
        assert (error["type"], error["param"], error["code"]) == (
            "invalid_request_error",
            None,
            "invalid_api_key",
        )
        text = response.text + json.dumps(dict(response.headers))
        for secret in (wrong, SIM_KEY):
            assert secret not in text and secret[-6:] not in text and secret[3:9] not in text, name
        assert REQUEST_ID.match(response.headers["x-request-id"])
    assert (
        requests.get(url, headers=cases["wrong bearer"], timeout=5)
        .json()["error"]["message"]
        .startswith("Incorrect API key provided.")
    )
    assert requests.get(url, headers={"Authorization": f"Bearer {SIM_KEY}"}, timeout=5).status_code == 200
    assert requests.get(url, headers={"api-key": SIM_KEY}, timeout=5).status_code == 200


def test_azure_prefixes_and_api_version(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=25)
    root = simulator.base_url[: -len("/v1")]
    expected = list(reversed(simulator.events(job_id)))[:20]
    for prefix in ("/openai/v1", "/openai"):
        response = requests.get(
            f"{root}{prefix}/fine_tuning/jobs/{job_id}/events",
            params={"api-version": "2024-10-21"},
            headers={"api-key": SIM_KEY},
            timeout=5,
        )
        assert response.status_code == 200 and response.json()["data"] == expected
        legacy = requests.get(f"{root}{prefix}/fine-tunes/{job_id}", headers={"api-key": SIM_KEY}, timeout=5)
        assert legacy.json()["id"] == job_id


def test_not_found_bodies(simulator: Simulator, http: requests.Session) -> None:
    for legacy in (False, True):
        for tail in ("", "/events"):
            response = http.get(job_url(simulator, "ftjob-nope", tail, legacy=legacy))
            assert response.status_code == 404
            error = response.json()["error"]
            assert (error["type"], error["code"]) == ("invalid_request_error", "fine_tune_not_found")
            assert "ftjob-nope" in error["message"]
            assert REQUEST_ID.match(response.headers["x-request-id"])
    response = http.get(f"{simulator.base_url}/fine_tuning/nothing")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": "Invalid URL (GET /v1/fine_tuning/nothing)",
        "type": "invalid_request_error",
        "param": None,
        "code": "unknown_url",
    }


def test_job_ids_are_percent_decoded_path_segments(simulator: Simulator, http: requests.Session) -> None:
    for job_id in ("ftjob-../x?y z", "ftjob-ü/%2F#..", "ftjob-a+b&limit=1"):
        simulator.add_job(JobSpec(job_id=job_id, n_events=8))
        assert http.get(job_url(simulator, job_id)).json()["id"] == job_id
        page = http.get(job_url(simulator, job_id, "/events"), params={"limit": 100}).json()
        assert page["data"] == list(reversed(simulator.events(job_id)))
        assert http.get(job_url(simulator, job_id, legacy=True)).json()["id"] == job_id
        listing = http.get(job_url(simulator, job_id, "/events", legacy=True)).json()
        assert listing["data"] == simulator.legacy_events(job_id)
    assert f"{simulator.base_url}/fine_tuning/jobs/ftjob-..%2Fx%3Fy%20z/events" == job_url(
        simulator, "ftjob-../x?y z", "/events"
    )
    # Raw paths (no client-side normalization): `..` and `%2E%2E` are the job "..", never a step up;
    # an unescaped `/` splits the id.
    simulator.add_job(JobSpec(job_id="..", n_events=8))
    connection = HTTPConnection("127.0.0.1", simulator.port, timeout=5)
    try:
        for path, status in (
            ("/v1/fine_tuning/jobs/%2E%2E/events", 200),
            ("/v1/fine_tuning/jobs/%2e%2e", 200),
            ("/v1/fine_tuning/jobs/ftjob-../x/events", 404),
            ("/v1/fine_tuning/jobs/../events", 200),  # not normalized to /v1/fine_tuning/events
        ):
            connection.request("GET", path, headers={"Authorization": f"Bearer {SIM_KEY}"})
            response = connection.getresponse()
            body = json.loads(response.read())
            assert response.status == status, path
            if status == 404:
                assert body["error"]["type"] == "invalid_request_error"
            elif path.endswith("/events"):
                assert body["data"] == list(reversed(simulator.events("..")))
            else:
                assert body["id"] == ".."
    finally:
        connection.close()


def test_keep_alive_reuses_one_connection(simulator: Simulator, http: requests.Session) -> None:
    job_id = add(simulator, n_events=30)
    before = simulator.connections_accepted
    for _ in range(15):
        assert http.get(job_url(simulator, job_id, "/events")).status_code == 200
    assert simulator.connections_accepted - before == 1


def _sim_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ftevents-sim")]


def test_stop_ends_streams_and_threads_promptly() -> None:
    before = set(_sim_threads())
    sim = Simulator(api_key=SIM_KEY).start()
    sim.add_job(JobSpec(job_id="ftjob-long", n_events=100, duration=60.0))
    idle = requests.Session()
    idle.headers["Authorization"] = f"Bearer {SIM_KEY}"
    assert idle.get(job_url(sim, "ftjob-long")).status_code == 200  # leaves an idle keep-alive connection
    outcome: dict[str, Any] = {}

    def follow() -> None:
        try:
            with idle.get(job_url(sim, "ftjob-long", "/events?stream=true", legacy=True), stream=True) as r:
                outcome["lines"] = list(sse_lines(r))
        except requests.exceptions.RequestException as exc:
            outcome["error"] = exc

    streamer = threading.Thread(target=follow)
    streamer.start()
    time.sleep(0.3)
    sim.stop()
    streamer.join(2.0)
    assert not streamer.is_alive()
    assert "data: [DONE]" not in outcome.get("lines", [])
    assert set(_sim_threads()) <= before
    sim.stop()  # idempotent
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(job_url(sim, "ftjob-long"), timeout=2)
    idle.close()


def _run_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_ftevents.simulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(ROOT),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("http://"):
        proc.kill()
        proc.wait(5)
        pytest.fail(f"simulator did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc, line


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_starts_serves_and_stops(stop_signal: signal.Signals) -> None:
    proc, base_url = _run_cli(
        "--api-key",
        "sk-cli",
        "--job",
        "ftjob-cli:30:0:failed",
        "--fault",
        "500:1:/events",
        "--keepalive",
        "1",
    )
    try:
        assert re.match(r"^http://127\.0\.0\.1:\d+/v1$", base_url)
        headers = {"Authorization": "Bearer sk-cli"}
        events_url = f"{base_url}/fine_tuning/jobs/ftjob-cli/events"
        assert requests.get(events_url, headers=headers, timeout=5).status_code == 500
        page = requests.get(events_url, headers=headers, params={"limit": 100}, timeout=5).json()
        assert len(page["data"]) == 30 and page["data"][0]["level"] == "error"
        job = requests.get(f"{base_url}/fine_tuning/jobs/ftjob-cli", headers=headers, timeout=5).json()
        assert job["status"] == "failed"
    finally:
        proc.send_signal(stop_signal)
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


def test_cli_demo_job_and_bad_arguments() -> None:
    proc, base_url = _run_cli("--api-key", "k")
    try:
        job = requests.get(f"{base_url}/fine_tuning/jobs/ftjob-demo", headers={"api-key": "k"}, timeout=5)
        assert job.status_code == 200 and job.json()["status"] in ("validating_files", "queued", "running")
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    bad = subprocess.run(
        [sys.executable, "-m", "airflow_ftevents.simulator", "--port", "0", "--job", "ftjob-x:2:0:succeeded"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert bad.returncode == 2 and "n_events must be at least" in bad.stderr


def test_cli_default_port_is_off_airflows_8080() -> None:
    parser = build_parser()
    assert parser.parse_args([]).port == 8765
    assert "default 8765" in " ".join(parser.format_help().split())
    shown = subprocess.run(
        [sys.executable, "-m", "airflow_ftevents.simulator", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert shown.returncode == 0 and "default 8765" in " ".join(shown.stdout.split())


def test_cli_history_and_cancel_finished() -> None:
    proc, base_url = _run_cli(
        "--api-key",
        "k",
        "--job",
        "ftjob-cli2:20:0:succeeded",
        "--history",
        "30",
        "--history-running",
        "3",
        "--cancel-finished",
        "unchanged",
    )
    headers = {"api-key": "k"}
    try:
        page = requests.get(
            f"{base_url}/fine_tuning/jobs", headers=headers, params={"limit": 4}, timeout=5
        ).json()
        assert [job["status"] for job in page["data"]] == ["succeeded", "running", "running", "running"]
        assert page["data"][0]["id"] == "ftjob-cli2" and page["has_more"] is True
        root = base_url[: -len("/v1")]
        assert len(requests.get(f"{root}/_sim/jobs", timeout=5).json()["data"]) == 31
        cancel = requests.post(f"{base_url}/fine_tuning/jobs/ftjob-cli2/cancel", headers=headers, timeout=5)
        assert cancel.status_code == 200 and cancel.json()["status"] == "succeeded"
    finally:
        proc.terminate()
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow_ftevents.simulator",
            "--port",
            "0",
            "--history",
            "1",
            "--history-running",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert bad.returncode == 2 and "cannot exceed" in bad.stderr
