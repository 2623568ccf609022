"""Two triggerers on one PostgreSQL metadata DB, N deferred sensors, one triggerer SIGKILLed.

    python bench/bench_two_triggerers.py --sensors 200

Starts a private PostgreSQL (initdb into a temporary folder, a free loopback port, stopped and removed
at the end), the simulator with N long jobs, and an Airflow deployment (tests/deployment.py) with two
triggerers. One DAG run maps ``FineTuneJobSensor(deferrable=True)`` over the N jobs. Once every sensor is
deferred and has run past a checkpoint, the triggerer holding the most triggers is killed; the survivor
must take them over. Then every job is finished and the run must succeed.

Reports: every sensor succeeded, each once (one try, one completion), how many triggers each triggerer
held, how long the takeover took, and the events logged twice (or missing) across all sensors' logs.

Needs PostgreSQL's server binaries (Debian: ``apt-get install -y postgresql``) and ``psycopg2-binary``
(in the ``test`` extra). Run as root, the server runs as the ``postgres`` user; otherwise as yourself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from deployment import (  # noqa: E402
    Deployment,
    DeploymentError,
    free_port,
    most_events_within,
    wait_until,
)

from airflow_ftevents.core.jobstate import format_event  # noqa: E402
from airflow_ftevents.simulator import JobSpec, Simulator  # noqa: E402

API_KEY = "sk-bench-two-triggerers-Xw3q"
DAG_ID = "bench_two_triggerers"
DAG_FILE = """
import os

import pendulum
from airflow.sdk import DAG

from airflow_ftevents.sensors import FineTuneJobSensor

with DAG(
    dag_id="bench_two_triggerers",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=10_000,
):
    FineTuneJobSensor.partial(
        task_id="wait",
        conn_id="openai_default",
        deferrable=True,
        poke_interval=float(os.environ["BENCH_POLL_INTERVAL"]),
        checkpoint_interval=float(os.environ["BENCH_CHECKPOINT_INTERVAL"]),
        timeout=3600,
    ).expand(job_id=os.environ["BENCH_JOB_IDS"].split(","))
"""


def pg_bin() -> Path:
    """The newest installed PostgreSQL server's bin folder (Debian layout), or the one on PATH."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name)
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).parent
    raise SystemExit("PostgreSQL server not found: apt-get update && apt-get install -y postgresql")


class Postgres:
    """A throwaway PostgreSQL server on 127.0.0.1:<free port>, trust auth, data in a temporary folder."""

    def __init__(self) -> None:
        self.bin = pg_bin()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # initdb and postgres refuse to run as root: use the postgres account then.
        self.user = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/airflow"

    def _run(self, *argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, user=self.user, timeout=120)

    def __enter__(self) -> Postgres:
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bin / "postgres"),
                    "-D", str(self.data),
                    "-p", str(self.port),
                    "-k", str(self.root),
                    "-c", "listen_addresses=127.0.0.1",
                    "-c", "max_connections=300",
                    "-c", "fsync=off",
                    "-c", "synchronous_commit=off",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self.user,
                start_new_session=True,
            )  # fmt: skip
        try:
            wait_until("PostgreSQL to accept connections", self._ready, timeout=60)
            self._run(
                str(self.bin / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "airflow",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise DeploymentError(f"postgres exited: {self.log.read_text()[-2000:]}")
        check = [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"]
        return subprocess.run(check, capture_output=True).returncode == 0

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of the postmaster by PID, SIGKILL after 30 s; the data folder goes."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(Postgres())
        sim = stack.enter_context(Simulator(api_key=API_KEY, keepalive_interval=1.0))
        # Jobs already in training (which starts at 20% of a job's time), so events flow while deferred.
        started_ago = 0.22 * args.job_seconds
        job_ids = [
            sim.add_job(
                JobSpec(f"ftjob-bench-{i:04d}", args.events, args.job_seconds, created_ago=started_ago)
            )
            for i in range(args.sensors)
        ]
        work = Path(tempfile.mkdtemp(prefix="bench-two-triggerers-"))
        stack.callback(shutil.rmtree, work, True)
        dags = work / "dags"
        dags.mkdir()
        (dags / "bench_two_triggerers.py").write_text(DAG_FILE)
        conn = json.dumps(
            {
                "conn_type": "openai_ftevents",
                "host": sim.base_url,
                "password": API_KEY,
                "extra": {"max_retries": 5},
            }
        )
        airflow = Deployment(
            work / "home",
            connections={"openai_default": conn},
            dags_folder=dags,
            env={
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url,
                "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
                "AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY": "64",
                "BENCH_JOB_IDS": ",".join(job_ids),
                "BENCH_POLL_INTERVAL": str(args.poll_interval),
                "BENCH_CHECKPOINT_INTERVAL": str(args.checkpoint_interval),
            },
        )
        stack.enter_context(airflow)
        second = airflow.start_triggerer()
        first = airflow.triggerers[0]
        timings["deployment_up"] = time.monotonic() - t0
        print(
            f"[bench] up in {timings['deployment_up']:.0f} s; triggerer jobs {first.job_id}, {second.job_id}"
        )

        airflow.unpause(DAG_ID)
        run_id = airflow.trigger(DAG_ID)
        started = time.monotonic()

        def all_deferred() -> bool:
            states = Counter(airflow.task_states(DAG_ID, run_id).values())
            if states.get("failed") or states.get("upstream_failed"):
                raise DeploymentError(f"sensors failed before the kill: {dict(states)}")
            return states.get("deferred", 0) == args.sensors

        wait_until(f"all {args.sensors} sensors to defer", all_deferred, timeout=args.timeout, interval=2)
        timings["all_deferred"] = time.monotonic() - started
        print(f"[bench] {args.sensors} sensors deferred after {timings['all_deferred']:.0f} s")

        owners = wait_until(
            "every trigger to be assigned",
            lambda: (o := airflow.triggerer_ids(DAG_ID, run_id)) and None not in o.values() and o,
            timeout=args.timeout,
            interval=2,
        )
        # Past one checkpoint of each trigger; count triggers that change triggerer meanwhile (none should).
        moves_before_kill = 0
        settle = time.monotonic() + args.checkpoint_interval + 2 * args.poll_interval
        while time.monotonic() < settle:
            time.sleep(2)
            now = airflow.triggerer_ids(DAG_ID, run_id)
            moves_before_kill += sum(1 for k, v in now.items() if owners.get(k) not in (None, v))
            owners = now
        held = Counter(owners.values())
        victim = max((first, second), key=lambda t: held[t.job_id])
        survivor = second if victim is first else first
        moved = sorted(k for k, v in owners.items() if v == victim.job_id)
        airflow.kill_triggerer(victim)
        killed_at = time.monotonic()
        print(f"[bench] triggers held {dict(held)}; SIGKILLed triggerer {victim.job_id}")

        def taken_over() -> bool:
            now = airflow.triggerer_ids(DAG_ID, run_id)
            return all(now.get(k) == survivor.job_id for k in moved)

        wait_until("the survivor to take over", taken_over, timeout=args.timeout, interval=1)
        timings["takeover"] = time.monotonic() - killed_at
        print(
            f"[bench] {len(moved)} triggers taken over by {survivor.job_id} after {timings['takeover']:.0f} s"
        )

        time.sleep(2 * args.poll_interval)
        for job_id in job_ids:
            sim.finish_job(job_id)
        finished = time.monotonic()
        state = airflow.wait_for_run(DAG_ID, run_id, timeout=args.timeout)
        timings["completion"] = time.monotonic() - finished
        print(f"[bench] run {state} {timings['completion']:.0f} s after the jobs finished")

        tis = airflow.task_instances(DAG_ID, run_id)
        twice = missing = completions_off = bound = 0
        for ti in tis:
            i = ti["map_index"]
            events = sim.events(job_ids[i])
            expected = Counter(format_event(e) for e in events)
            records = airflow.task_log_records(DAG_ID, run_id, "wait", map_index=i)
            logged = Counter(r["event"] for r in records if r.get("event") in expected)
            twice += sum(logged[k] - v for k, v in expected.items() if logged[k] > v)
            bound += most_events_within(events, args.checkpoint_interval + args.poll_interval)
            missing += sum(v - logged[k] for k, v in expected.items() if logged[k] < v)
            done = sum(
                1
                for r in records
                if str(r.get("event", "")).startswith(f"Fine-tuning job {job_ids[i]} succeeded")
            )
            completions_off += done != 1
        result = {
            "airflow": _airflow_version(),
            "sensors": args.sensors,
            "run_state": state,
            "succeeded": sum(1 for ti in tis if ti["state"] == "success"),
            "more_than_one_try": sum(1 for ti in tis if ti["try_number"] != 1),
            "not_completed_exactly_once": completions_off,
            "triggers_per_triggerer_before_kill": {str(k): v for k, v in held.items()},
            "triggers_moved": len(moved),
            "triggers_moved_before_the_kill": moves_before_kill,
            "events_total": sum(sim.event_count(j) for j in job_ids),
            "events_logged_twice": twice,
            # per sensor, the most events created within one checkpoint interval plus one poll, summed
            "events_logged_twice_bound": bound,
            "events_missing_from_logs": missing,
            "seconds": {k: round(v, 1) for k, v in timings.items()},
            "checkpoint_interval": args.checkpoint_interval,
            "poll_interval": args.poll_interval,
        }
        if args.keep_logs:
            airflow.print_log_tails()
    return result


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sensors", type=int, default=200)
    parser.add_argument("--events", type=int, default=600, help="events per job")
    parser.add_argument("--job-seconds", type=float, default=900.0, help="how long each job would run")
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--checkpoint-interval", type=float, default=10.0)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=600.0, help="for each wait")
    parser.add_argument("--keep-logs", action="store_true", help="print the log tails at the end")
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2))
    ok = (
        result["run_state"] == "success"
        and result["succeeded"] == args.sensors
        and not result["more_than_one_try"]
        and not result["not_completed_exactly_once"]
        and not result["events_missing_from_logs"]
        and result["events_logged_twice"] <= result["events_logged_twice_bound"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
