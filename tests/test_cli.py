"""The ``ftevents`` command against the simulator: output, exit codes, drops, Ctrl-C, credentials.

Most tests call ``main([...])`` in-process (capsys); the installed console script runs as a real
subprocess for ``events --jsonl``, for ``--help`` and for Ctrl-C. Every run asserts the key is absent
from stdout and stderr.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import airflow.sdk  # noqa: F401 - Airflow 3.1 logs its start-up at INFO: here, not inside a captured run
import pytest
from conftest import API_KEY, CONN_ID, connection_json

from airflow_ftevents.cli import main
from airflow_ftevents.core.jobstate import format_event
from airflow_ftevents.simulator import JobSpec

SCRIPT = Path(sys.executable).with_name("ftevents")
CONN_VAR = f"AIRFLOW_CONN_{CONN_ID.upper()}"
CREDENTIAL_VARS = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", CONN_VAR)


def line(event: dict[str, Any]) -> str:
    """What ``follow`` and ``events`` print for one event: UTC time, then the compact form."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event["created_at"]))
    return f"{stamp} {format_event(event)}"


def jsonl(events: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(e, separators=(",", ":"), ensure_ascii=False) + "\n" for e in events)


@pytest.fixture
def clean_env(monkeypatch) -> None:
    """No credentials leak in from the machine running the tests."""
    for name in CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def key_env(sim, clean_env, monkeypatch) -> None:
    """Credentials the way the official client takes them: OPENAI_API_KEY and OPENAI_BASE_URL."""
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)


@pytest.fixture
def no_retry_conn(sim, clean_env, monkeypatch) -> None:
    """``openai_default`` without the hook's retries: each injected fault reaches ``follow`` itself."""
    monkeypatch.setenv(CONN_VAR, connection_json(sim.base_url, max_retries=0))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert API_KEY not in out and API_KEY not in err
    return code, out, err


def script_env(sim) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
    env.update(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=sim.base_url, PYTHONWARNINGS="ignore")
    return env


# ------------------------------------------------------------------------------------------ events


def test_events_prints_every_event_oldest_first_formatted(sim, key_env, capsys) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-lines", n_events=257))
    code, out, err = run(capsys, "events", job_id)
    events = sim.events(job_id)
    assert code == 0
    assert err == ""
    assert out.splitlines() == [line(e) for e in events]
    first = out.splitlines()[0]
    assert first.endswith(" [info] Created fine-tuning job: ftjob-lines")
    metrics = next(e for e in events if e["type"] == "metrics")
    loss = metrics["data"]["train_loss"]
    assert f"[metrics] step 1/{metrics['data']['total_steps']} train_loss={loss:.4g}" in out


def test_events_jsonl_is_what_the_api_sent(sim, key_env, capsys) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-jsonl", n_events=230, outcome="failed"))
    code, out, _ = run(capsys, "events", job_id, "--jsonl")
    assert code == 0
    assert out == jsonl(sim.events(job_id))


def test_events_legacy_api(sim, key_env, capsys) -> None:
    job_id = sim.add_job(JobSpec(job_id="ft-legacy-cli", n_events=40))
    code, out, _ = run(capsys, "events", job_id, "--api", "fine_tunes", "--jsonl")
    assert code == 0
    assert out == jsonl(sim.legacy_events(job_id))


def test_events_of_an_unknown_job_exit_3(sim, key_env, capsys) -> None:
    code, out, err = run(capsys, "events", "ftjob-nope")
    assert (code, out) == (3, "")
    assert err.startswith("ftevents: error: [HTTP 404")
    assert "ftjob-nope" in err


def test_installed_script_events_jsonl(sim) -> None:
    """The real command: stdout holds the events only, the hook's retry warning goes to stderr."""
    job_id = sim.add_job(JobSpec(job_id="ftjob-script", n_events=120))
    sim.inject("500", 1, "/events")
    done = subprocess.run(
        [str(SCRIPT), "events", job_id, "--jsonl"],
        env=script_env(sim),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == jsonl(sim.events(job_id))
    assert f"GET events of fine-tuning job {job_id} failed ([HTTP 500" in done.stderr
    assert sim.pending_faults() == []
    assert API_KEY not in done.stdout + done.stderr


# ------------------------------------------------------------------------------------------ follow


@pytest.mark.parametrize(("outcome", "code"), [("succeeded", 0), ("failed", 1), ("cancelled", 2)])
def test_follow_ends_with_the_outcome_and_its_exit_code(sim, key_env, capsys, outcome, code) -> None:
    job_id = sim.add_job(JobSpec(job_id=f"ftjob-{outcome}", n_events=150, outcome=outcome))
    got, out, err = run(capsys, "follow", job_id, "--poll-interval", "0.05")
    job = sim.job(job_id)
    *lines, last = out.splitlines()
    assert got == code
    assert err == ""
    assert lines == [line(e) for e in sim.events(job_id)]
    if outcome == "succeeded":
        assert last == (
            f"Fine-tuning job {job_id} succeeded; fine-tuned model {job['fine_tuned_model']}; "
            f"{job['trained_tokens']} trained tokens"
        )
    elif outcome == "failed":
        assert last.startswith(f"Fine-tuning job {job_id} failed; error: {job['error']['message']}")
        assert last.endswith(
            "error events: " + " | ".join(e["message"] for e in sim.events(job_id) if e["level"] == "error")
        )
    else:
        assert last == f"Fine-tuning job {job_id} cancelled"


def test_follow_a_live_job_prints_each_event_once_as_it_happens(sim, key_env, capsys) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-live", n_events=40, duration=2.0))
    code, out, _ = run(capsys, "follow", job_id, "--poll-interval", "0.1")
    assert code == 0
    assert out.splitlines()[:-1] == [line(e) for e in sim.events(job_id)]
    assert len(sim.events(job_id)) == 40


def test_follow_survives_connections_dropped_beyond_the_hooks_retries(sim, no_retry_conn, capsys) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-drops", n_events=60, duration=2.0))
    sim.inject("503", 1)  # the first request: the status read
    sim.inject("reset", 2, "/events")
    code, out, err = run(capsys, "follow", job_id, "--poll-interval", "0.1")
    assert code == 0
    assert out.splitlines()[:-1] == [line(e) for e in sim.events(job_id)]
    assert sim.pending_faults() == []
    resumed = [x for x in err.splitlines() if f"still following job {job_id}: trying again in" in x]
    assert len(resumed) == 3, err


def test_follow_resumes_a_walk_back_interrupted_mid_way(sim, no_retry_conn, capsys) -> None:
    """A drop on the second page of a long read: the read is repeated, nothing printed twice."""
    job_id = sim.add_job(JobSpec(job_id="ftjob-pages", n_events=450))
    sim.inject("reset", 1, "after=")
    code, out, err = run(capsys, "follow", job_id, "--poll-interval", "0.05")
    assert code == 0
    assert out.splitlines()[:-1] == [line(e) for e in sim.events(job_id)]
    assert sim.pending_faults() == []
    assert err.count("still following job") == 1


def test_follow_legacy_stream_survives_drops(sim, no_retry_conn, capsys) -> None:
    job_id = sim.add_job(JobSpec(job_id="ft-legacy-drops", n_events=80))
    sim.inject("drop_stream", 2, "/events", after_events=25)
    code, out, err = run(capsys, "follow", job_id, "--api", "fine_tunes")
    assert code == 0
    assert out.splitlines()[:-1] == [line(e) for e in sim.legacy_events(job_id)]
    assert sim.pending_faults() == []
    assert err.count("still following job") == 2


def test_follow_after_an_event_prints_only_newer_ones(sim, key_env, capsys) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-after", n_events=130, outcome="failed"))
    events = sim.events(job_id)
    code, out, _ = run(capsys, "follow", job_id, "--after", events[99]["id"], "--poll-interval", "0.05")
    assert code == 1
    assert out.splitlines()[:-1] == [line(e) for e in events[100:]]


def test_follow_skip_on_the_legacy_api(sim, key_env, capsys) -> None:
    job_id = sim.add_job(JobSpec(job_id="ft-legacy-skip", n_events=30, outcome="cancelled"))
    code, out, _ = run(capsys, "follow", job_id, "--api", "fine_tunes", "--skip", "12")
    assert code == 2
    assert out.splitlines()[:-1] == [line(e) for e in sim.legacy_events(job_id)[12:]]


def test_follow_an_unknown_job_exit_3(sim, key_env, capsys) -> None:
    code, out, err = run(capsys, "follow", "ftjob-missing", "--poll-interval", "0.05")
    assert (code, out) == (3, "")
    assert "[HTTP 404" in err and "ftjob-missing" in err


def _read_lines(stream: Any, into: queue.Queue) -> None:
    for text in stream:
        into.put(text)
    into.put(None)


def test_ctrl_c_prints_the_exact_resume_command_and_exits_130(sim, key_env, capsys) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-ctrl-c", n_events=300, duration=20.0))
    proc = subprocess.Popen(
        [str(SCRIPT), "follow", job_id, "--poll-interval", "0.2"],
        env=script_env(sim),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
        printed = [lines.get(timeout=60) for _ in range(5)]  # the 5th event appears after 4 s
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    while (more := lines.get(timeout=10)) is not None:
        printed.append(more)
    events = sim.events(job_id)
    assert [x.rstrip("\n") for x in printed] == [line(e) for e in events[: len(printed)]]
    last_id = events[len(printed) - 1]["id"]
    command = f"ftevents follow {job_id} --poll-interval 0.2 --after {last_id}"
    assert code == 130
    assert f"interrupted after {len(printed)} events" in err
    assert err.rstrip("\n").endswith("\n  " + command)
    assert API_KEY not in err
    # The hint goes on exactly where the interrupted run stopped.
    sim.cancel_job(job_id)
    argv = shlex.split(command)
    assert argv[0] == "ftevents"
    code, out, _ = run(capsys, *argv[1:])
    assert code == 2
    assert out.splitlines() == [line(e) for e in sim.events(job_id)[len(printed) :]] + [
        f"Fine-tuning job {job_id} cancelled"
    ]


# ------------------------------------------------------------------------------------------ export


def test_export_to_a_local_folder_prints_the_manifest(sim, key_env, capsys, tmp_path) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-export", n_events=333, outcome="failed"))
    code, out, _ = run(capsys, "export", job_id, f"{tmp_path}/")
    events = sim.events(job_id)
    target = tmp_path / "ftjob-export.jsonl"
    assert code == 0
    assert target.read_text() == jsonl(events)
    assert json.loads(out) == {
        "uri": f"file://{target}",
        "job_id": job_id,
        "count": 333,
        "first_event_id": events[0]["id"],
        "last_event_id": events[-1]["id"],
        "first_created_at": events[0]["created_at"],
        "last_created_at": events[-1]["created_at"],
        "status": "failed",
        "bytes": target.stat().st_size,
    }


def test_export_relative_path_and_file_url_with_metrics(sim, key_env, capsys, tmp_path, monkeypatch) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-rel", n_events=90))
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "export", job_id, "out/")
    assert code == 0
    assert (tmp_path / "out" / "ftjob-rel.jsonl").read_text() == jsonl(sim.events(job_id))
    assert json.loads(out)["uri"] == f"file://{tmp_path}/out/ftjob-rel.jsonl"
    named = tmp_path / "named.jsonl"
    code, out, _ = run(capsys, "export", job_id, f"file://{named}", "--metrics-csv")
    assert code == 0
    assert named.read_text() == jsonl(sim.events(job_id))
    csv_lines = (tmp_path / "named.metrics.csv").read_text().splitlines()
    steps = [e for e in sim.events(job_id) if e["type"] == "metrics"]
    assert csv_lines[0].startswith("step,created_at,train_loss")
    assert len(csv_lines) == 1 + len(steps)
    assert json.loads(out)["metrics_csv"] == f"file://{tmp_path}/named.metrics.csv"


def test_export_to_an_existing_folder_without_slash_is_a_usage_error(sim, key_env, capsys, tmp_path) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-dir", n_events=10))
    code, out, err = run(capsys, "export", job_id, str(tmp_path))
    assert (code, out) == (2, "")
    assert f"ftevents: error: destination: destination {str(tmp_path)!r} is an existing folder" in err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ credentials


def test_missing_credentials_name_both_ways(clean_env, capsys) -> None:
    code, out, err = run(capsys, "events", "ftjob-x")
    assert (code, out) == (2, "")
    assert err.startswith("ftevents: error: no credentials for the API")
    assert "OPENAI_API_KEY" in err and "AIRFLOW_CONN_OPENAI_DEFAULT" in err and "--conn-id" in err


def test_unknown_conn_id_names_its_variable(clean_env, capsys) -> None:
    code, out, err = run(capsys, "follow", "ftjob-x", "--conn-id", "my_openai")
    assert (code, out) == (2, "")
    assert "Airflow connection 'my_openai' is not defined: set AIRFLOW_CONN_MY_OPENAI" in err
    assert "OPENAI_API_KEY" in err


def test_connection_as_json_and_as_uri(sim, clean_env, monkeypatch, capsys) -> None:
    job_id = sim.add_job(JobSpec(job_id="ftjob-conn", n_events=20))
    monkeypatch.setenv("AIRFLOW_CONN_FT_JSON", connection_json(sim.base_url))
    code, out, _ = run(capsys, "events", job_id, "--conn-id", "ft_json", "--jsonl")
    assert (code, out) == (0, jsonl(sim.events(job_id)))
    # URI form, base URL in the query (a URI's host cannot carry http://host:port/v1 and the key both)
    base = sim.base_url.replace(":", "%3A").replace("/", "%2F")
    monkeypatch.setenv(CONN_VAR, f"openai-ftevents://:{API_KEY}@/?base_url={base}&max_retries=0")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-this-one-0000")  # the default connection comes first
    code, out, _ = run(capsys, "events", job_id, "--jsonl")
    assert (code, out) == (0, jsonl(sim.events(job_id)))


def test_conn_id_from_an_airflow_secrets_backend(sim, tmp_path) -> None:
    """Without AIRFLOW_CONN_<ID>, --conn-id asks Airflow's secrets backends (no metadata DB involved)."""
    job_id = sim.add_job(JobSpec(job_id="ftjob-backend", n_events=25))
    path = tmp_path / "connections.json"
    path.write_text(json.dumps({"ft_file": json.loads(connection_json(sim.base_url))}))
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
    env.update(
        AIRFLOW__SECRETS__BACKEND="airflow.secrets.local_filesystem.LocalFilesystemBackend",
        AIRFLOW__SECRETS__BACKEND_KWARGS=json.dumps({"connections_file_path": str(path)}),
        PYTHONWARNINGS="ignore",
    )
    done = subprocess.run(
        [str(SCRIPT), "events", job_id, "--conn-id", "ft_file", "--jsonl"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == jsonl(sim.events(job_id))
    assert API_KEY not in done.stdout + done.stderr


def test_a_refused_key_is_not_printed(sim, clean_env, monkeypatch, capsys) -> None:
    wrong = "sk-wrong-key-Yt5PqN8sL2mV"
    job_id = sim.add_job(JobSpec(job_id="ftjob-auth", n_events=10))
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)
    code, out, err = run(capsys, "follow", job_id)
    assert (code, out) == (3, "")
    assert "[HTTP 401" in err
    assert wrong not in err


@pytest.mark.parametrize(
    "value",
    [
        f'{{"conn_type": "openai_ftevents", "password": "{API_KEY}",',  # truncated JSON
        f"x://y://z://:{API_KEY}@host",  # the SDK's own error would quote this URI
        f"openai-ftevents://:{API_KEY}@host:port/v1",  # port not a number
    ],
)
def test_a_malformed_connection_never_shows_the_key(clean_env, monkeypatch, capsys, value) -> None:
    monkeypatch.setenv(CONN_VAR, value)
    code, out, err = run(capsys, "events", "ftjob-x")
    assert (code, out) == (2, "")
    assert err.startswith(f"ftevents: error: {CONN_VAR} is ")


def test_a_connection_without_key(clean_env, monkeypatch, capsys) -> None:
    monkeypatch.setenv(
        CONN_VAR, json.dumps({"conn_type": "openai_ftevents", "host": "http://127.0.0.1:9/v1"})
    )
    code, _, err = run(capsys, "events", "ftjob-x")
    assert code == 2
    assert err.startswith(f"ftevents: error: {CONN_VAR}: The connection has no API key")


# ------------------------------------------------------------------------------------------ usage


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["follow", "ftjob-x", "--api", "fine_tunes", "--after", "ftevent-1"], "--after needs event ids"),
        (["follow", "ftjob-x", "--skip", "3"], "--skip is for the legacy fine_tunes API"),
        (["follow", "ftjob-x", "--poll-interval", "0"], "must be a number of seconds greater than 0"),
        (["follow", "ftjob-x", "--after", "a", "--skip", "1"], "not allowed with argument"),
        (["events", " "], "must not be empty"),
        (["events", ".."], "job id"),
        (["export", "ftjob-x", "data/x.jsonl", "--api", "nope"], "invalid choice: 'nope'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_usage_errors_exit_2(key_env, capsys, argv, message) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert message in err


def test_help_of_each_command(key_env, capsys) -> None:
    for argv in ([], ["follow"], ["events"], ["export"]):
        code, out, err = run(capsys, *argv, "--help")
        assert (code, err) == (0, "")
        assert out.startswith(f"usage: ftevents {argv[0] if argv else ''}".rstrip())
        for part in ("examples:", "exit codes:", "  130  interrupted", "OPENAI_API_KEY", "AIRFLOW_CONN_"):
            assert part in out, (argv, part)
    _, out, _ = run(capsys, "follow", "--help")
    for option in ("--conn-id", "--api", "--poll-interval", "--after", "--skip"):
        assert option in out


def test_help_runs_without_importing_airflow(key_env) -> None:
    done = subprocess.run(
        [str(SCRIPT), "--help"], env=script_env_for_help(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "exit codes:" in done.stdout
    probe = "import sys; from airflow_ftevents.cli import main; main(['follow', '--help']); "
    probe += "print('airflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[-1] == "False"


def script_env_for_help() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
    env["OPENAI_API_KEY"] = API_KEY
    return env
