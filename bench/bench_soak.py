"""Soak: the sensor follows a live 50,000-event job while the simulator injects faults at random.

The sensor's own code path runs: ``FineTuneJobSensor(mode="poke").execute()``, whose pokes read the job,
then only the events that are new (``FineTuneEventsHook.read_new_events``), under the simulator's random
fault mode (``Simulator.set_random_faults``: each request has a ``--rate`` chance of a retryable fault,
seeded). Side by side in the same run, each in its own process with its own simulator, the same job and
the same fault seed, two peers follow the job the way hand-written DAG code does:

- ``naive requests loop``: a ``requests.Session`` that re-reads every page on each poll
  (``raise_for_status`` then ``.json()``) and de-duplicates by event id; no retries;
- ``openai client``: the official client (``max_retries`` and timeout set as for the sensor), whose
  auto-paging ``client.fine_tuning.jobs.list_events(job_id, limit=100)`` re-reads every page on each poll,
  de-duplicated by id.

Reported per follower: whether it survived, events received against all the job's events (read from the
simulator without faults after the run), duplicates, gaps and order, HTTP requests the simulator answered,
retries (client attempts minus the requests the follower meant to make), faults injected by kind (the
simulator's fault plan is counted where it picks them), elapsed time and how long after the job's end the
follower returned. Exit status 1 when the sensor lost, repeated or reordered an event, or failed.

    .venv/bin/python bench/bench_soak.py [--events 50000] [--duration 75] [--rate 0.05] [--seed 7]
                                         [--poll 2] [--max-retries 4] [--timeout 2] [--no-write]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from importlib.metadata import version
from pathlib import Path
from typing import Any

from results_md import publish

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Soak under random faults"
API_KEY = "sk-bench-soak-R4nd0mF4ults"
JOB_ID = "ftjob-soak"
PAGE = 100
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
# Retryable faults, as a busy API and its proxies produce them. 429 asks for 200 ms and 503 for 1 s
# (Retry-After); 500/502, resets and cut bodies get the client's own backoff; a slow response (3 s)
# outlasts the 2 s read timeout.
KINDS = ("429", "500", "502", "503", "reset", "drop_body", "slow")
FAULT_PARAMS = {"retry_after_ms": 200, "retry_after": 1, "delay": 3.0}
OURS, NAIVE, OPENAI = "FineTuneJobSensor (poke mode)", "naive requests loop", "openai client auto-paging"


# -- shared by the three child processes ---------------------------------------------------------------


def start_simulator(args: argparse.Namespace) -> tuple[Any, Counter, float]:
    """A fresh simulator with the soak job and the random faults; faults are counted by kind."""
    sys.path.insert(0, str(ROOT))
    from airflow_ftevents.simulator import JobSpec, Simulator

    sim = Simulator(api_key=API_KEY, keepalive_interval=5.0).start()
    kinds: Counter = Counter()
    take = sim._faults.take

    def counting_take(raw_path: str, route: str) -> Any:
        applied = take(raw_path, route)
        if applied is not None:
            kinds[applied.kind] += 1
        return applied

    sim._faults.take = counting_take
    sim.add_job(JobSpec(job_id=JOB_ID, n_events=args.events, duration=args.duration))
    job_end = time.monotonic() + args.duration
    sim.set_random_faults(args.rate, list(KINDS), args.seed, **FAULT_PARAMS)
    return sim, kinds, job_end


def finish(
    name: str,
    sim: Any,
    kinds: Counter,
    job_end: float,
    started: float,
    ids: list[str],
    survived: bool,
    error: str | None,
    attempts: int,
    logical: int,
    polls: int,
) -> dict[str, Any]:
    ended = time.monotonic()
    requests_made = len(sim.request_log)
    sim.clear_faults()
    # Every event of the job, also those a follower that stopped early never saw.
    total = sim._require(JOB_ID).total()
    expected = [sim.event_at(JOB_ID, i)["id"] for i in range(total)]
    sim.stop()
    got = set(ids)
    position = {event_id: index for index, event_id in enumerate(expected)}
    reached = max((position[i] for i in got if i in position), default=-1) + 1  # a crash stops early
    return {
        "name": name,
        "survived": survived,
        "error": error,
        "received": len(ids),
        "simulator": len(expected),
        "duplicates": len(ids) - len(got),
        "gaps": len(set(expected[:reached]) - got),  # missing before the newest event received
        "unknown": len(got - set(expected)),
        "in_order": ids == expected[: len(ids)],
        "requests": requests_made,
        "retries": attempts - logical,
        "faults": dict(sorted(kinds.items())),
        "elapsed": ended - started,
        "after_job_end": ended - job_end,
        "polls": polls,
    }


# -- the sensor ------------------------------------------------------------------------------------------


def run_sensor(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="ftevents-soak-home-")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    sim, kinds, job_end = start_simulator(args)
    os.environ["AIRFLOW_CONN_OPENAI_DEFAULT"] = json.dumps(
        {
            "conn_type": "openai_ftevents",
            "host": sim.base_url,
            "password": API_KEY,
            "extra": {"max_retries": args.max_retries, "timeout": args.timeout},
        }
    )
    import logging

    from airflow_ftevents.hooks import FineTuneEventsHook
    from airflow_ftevents.sensors import FineTuneJobSensor

    ids: list[str] = []
    counts = Counter()

    class RecordingHook(FineTuneEventsHook):
        """The sensor's hook, unchanged, with what it hands the sensor and each HTTP attempt counted."""

        def _fetch(self, request: Any) -> Any:
            counts["logical"] += 1
            return super()._fetch(request)

        def _fetch_json_once(self, request: Any) -> Any:
            counts["attempts"] += 1
            return super()._fetch_json_once(request)

        def read_new_events(self, *a: Any, **kw: Any) -> Any:
            for event in super().read_new_events(*a, **kw):
                ids.append(event["id"])
                yield event

    class CountingSensor(FineTuneJobSensor):
        def poke(self, context: Any) -> Any:
            counts["polls"] += 1
            return super().poke(context)

    class TI:
        dag_id, run_id, task_id, map_index = "soak", "run", "wait", -1

        def xcom_push(self, key: str, value: Any) -> None:
            pass

    quiet = logging.getLogger("soak.quiet")  # 50,000 event lines and the retry warnings, counted only
    quiet.propagate = False
    quiet.setLevel(logging.INFO)
    quiet.addHandler(logging.NullHandler())

    hook = RecordingHook(conn_id="openai_default")
    sensor = CountingSensor(
        task_id="wait",
        job_id=JOB_ID,
        mode="poke",
        poke_interval=args.poll,
        timeout=args.duration + 900,
        deferrable=False,
    )
    for obj in (sensor, hook):
        for attribute in ("_log", "_cached_logger"):
            object.__setattr__(obj, attribute, quiet)
    sensor.__dict__["hook"] = hook
    started = time.monotonic()
    survived, error = True, None
    try:
        summary = sensor.execute({"ti": TI()})
        if summary["event_count"] != len(ids):
            survived, error = False, f"summary event_count {summary['event_count']} != {len(ids)} received"
    except Exception as exc:
        survived, error = False, f"{type(exc).__name__}: {exc}"[:200]
    return finish(
        OURS,
        sim,
        kinds,
        job_end,
        started,
        ids,
        survived,
        error,
        counts["attempts"],
        counts["logical"],
        counts["polls"],
    )


# -- the peers -------------------------------------------------------------------------------------------


def run_naive(args: argparse.Namespace) -> dict[str, Any]:
    import requests

    sim, kinds, job_end = start_simulator(args)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {API_KEY}"
    base = f"{sim.base_url}/fine_tuning/jobs/{JOB_ID}"
    ids: list[str] = []
    seen: set[str] = set()
    requests_meant = polls = 0
    started = time.monotonic()
    survived, error = True, None
    try:
        while True:
            polls += 1
            requests_meant += 1
            response = session.get(base, timeout=args.timeout)
            response.raise_for_status()
            status = response.json()["status"]
            events: list[dict[str, Any]] = []
            params: dict[str, Any] = {"limit": PAGE}
            while True:
                requests_meant += 1
                response = session.get(f"{base}/events", params=params, timeout=args.timeout)
                response.raise_for_status()
                page = response.json()
                events += page["data"]
                if not page["has_more"]:
                    break
                params["after"] = page["data"][-1]["id"]
            for event in reversed(events):
                if event["id"] not in seen:
                    seen.add(event["id"])
                    ids.append(event["id"])
            if status in TERMINAL:
                break
            if time.monotonic() > job_end + args.peer_cap:
                survived, error = False, f"still behind {args.peer_cap:g} s after the job ended"
                break
            time.sleep(args.poll)
    except Exception as exc:
        survived, error = False, f"{type(exc).__name__}: {exc}"[:100]
    return finish(
        NAIVE, sim, kinds, job_end, started, ids, survived, error, requests_meant, requests_meant, polls
    )


def run_openai(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    from openai import OpenAI

    sim, kinds, job_end = start_simulator(args)
    attempts = 0

    def count(request: httpx.Request) -> None:
        nonlocal attempts
        attempts += 1

    client = OpenAI(
        api_key=API_KEY,
        base_url=sim.base_url,
        max_retries=args.max_retries,
        timeout=args.timeout,
        http_client=httpx.Client(event_hooks={"request": [count]}, timeout=args.timeout),
    )
    ids: list[str] = []
    seen: set[str] = set()
    logical = polls = 0
    started = time.monotonic()
    survived, error = True, None
    try:
        while True:
            polls += 1
            logical += 1
            status = client.fine_tuning.jobs.retrieve(JOB_ID).status
            logical += 1
            page = client.fine_tuning.jobs.list_events(JOB_ID, limit=PAGE)
            events = list(page.data)
            while page.has_next_page():
                logical += 1
                page = page.get_next_page()
                events += page.data
            for event in reversed(events):
                if event.id not in seen:
                    seen.add(event.id)
                    ids.append(event.id)
            if status in TERMINAL:
                break
            if time.monotonic() > job_end + args.peer_cap:
                survived, error = False, f"still behind {args.peer_cap:g} s after the job ended"
                break
            time.sleep(args.poll)
    except Exception as exc:
        survived, error = False, f"{type(exc).__name__}: {exc}"[:200]
    finally:
        client.close()
    return finish(OPENAI, sim, kinds, job_end, started, ids, survived, error, attempts, logical, polls)


# -- report ----------------------------------------------------------------------------------------------


def render(args: argparse.Namespace, results: list[dict[str, Any]], command: str) -> str:
    def faults(r: dict[str, Any]) -> str:
        return f"{sum(r['faults'].values())}: " + ", ".join(f"{k} {v}" for k, v in r["faults"].items())

    rows = [
        "| follower | survived | events received / in the job | duplicates | gaps | in order | HTTP requests "
        "| retries | polls | faults injected (by kind) | elapsed | returned after job end |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        survived = "yes" if r["survived"] else f"**no**: {r['error']}"
        rows.append(
            f"| {r['name']} | {survived.replace('|', '/')} | {r['received']:,} / {r['simulator']:,} "
            f"| {r['duplicates']} | {r['gaps']} | {'yes' if r['in_order'] else 'no'} | {r['requests']:,} "
            f"| {r['retries']:,} | {r['polls']} | {faults(r)} | {r['elapsed']:.1f} s "
            f"| {r['after_job_end']:+.1f} s |"
        )
    ours = results[0]
    lines = [
        SECTION,
        "",
        f"Command: `{command}` ({dt.date.today().isoformat()}, Python {platform.python_version()}, "
        f"apache-airflow {version('apache-airflow')}, openai {version('openai')}, requests "
        f"{version('requests')}, {os.cpu_count()} CPUs shared with other work).",
        "",
        f"One live job of {args.events:,} events over {args.duration:g} s, followed from its start until it "
        f"succeeded, polling every {args.poll:g} s, by three followers side by side in one run: each in its "
        "own process with its own simulator holding the same job, under the same seeded random faults "
        f"(`set_random_faults(rate={args.rate:g}, kinds={list(KINDS)}, seed={args.seed})`: 429 with "
        "`retry-after-ms: 200`, 503 with `Retry-After: 1`, 500/502, TCP resets, bodies cut mid-way, and "
        f"3 s responses against a {args.timeout:g} s read timeout). The sensor and the official client both "
        f"get `max_retries={args.max_retries}` and the same timeout; the naive loop has no retries. The "
        "sensor runs its real poke path (`FineTuneJobSensor(mode='poke').execute()`); its hook is only "
        "wrapped to record the events it hands the sensor and count HTTP attempts. Events received are "
        "compared with all the job's events, read from the simulator without faults after the run. "
        f"Peers still behind {args.peer_cap:g} s after the job ended are stopped. Gaps are events missing "
        "before the newest one a follower received (one that stopped early never got the rest).",
        "",
        *rows,
        "",
        f"- The sensor received **{ours['received']:,} of {ours['simulator']:,}** events with "
        f"**{ours['duplicates']} duplicates and {ours['gaps']} gaps**, "
        f"{'in order' if ours['in_order'] else '**out of order**'}, making "
        f"{ours['requests']:,} HTTP requests in {ours['polls']} pokes, {ours['retries']} of them retries "
        f"after the {sum(ours['faults'].values())} injected faults: each poke reads the job and only the "
        f"pages that hold new events. It returned {ours['after_job_end']:.1f} s after the job ended.",
    ]
    for r in results[1:]:
        if r["survived"]:
            ratio = r["requests"] / max(ours["requests"], 1)
            lines.append(
                f"- {r['name']}: survived, with {r['requests']:,} HTTP requests ({ratio:.1f}x the sensor's, "
                f"as every poll re-reads every page) and {r['retries']} retries; it returned "
                f"{r['after_job_end']:.1f} s after the job ended."
            )
        else:
            lines.append(
                f"- {r['name']}: failed after {r['requests']:,} HTTP requests and {r['received']:,} events "
                f"({r['error']})."
            )
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--duration", type=float, default=75.0, help="seconds the job runs")
    parser.add_argument("--rate", type=float, default=0.05, help="chance of a fault per request")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between polls (poke_interval)")
    parser.add_argument("--max-retries", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=2.0, help="read timeout per request, seconds")
    parser.add_argument("--peer-cap", type=float, default=120.0, help="stop peers this long after the job")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args()
    command = "python bench/bench_soak.py" + "".join(f" {a}" for a in sys.argv[1:])

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=3, mp_context=context) as pool:
        futures = [pool.submit(run, args) for run in (run_sensor, run_naive, run_openai)]
        results = [future.result() for future in futures]
    for r in results:
        print(json.dumps(r))
    section = render(args, results, command)
    publish(SECTION, section, write=not args.no_write)
    ours = results[0]
    exact = ours["survived"] and ours["duplicates"] == ours["gaps"] == ours["unknown"] == 0
    return 0 if exact and ours["in_order"] and ours["received"] == ours["simulator"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
