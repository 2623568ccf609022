"""Requests per sensor poke in steady state: the job and its newest page, whatever the job's history.

A running job already holds a long history (100,000 events by default) and gains about one event a
second. ``FineTuneJobSensor.poke`` runs as Airflow runs it, in both modes:

- ``poke`` mode: one sensor object pokes again and again (its follower stays in memory);
- ``reschedule`` mode: every poke is a fresh sensor object, as each reschedule is a fresh process; the
  follower's state goes through ``context["task_state_store"]`` (a JSON store, as on Airflow 3.3).

The first poke reads the whole history once (it logs every event, oldest first); the pokes after it
are the steady state. The same is done on a job with a short history (1,000 events), to show that the
steady state does not depend on it. The peer, in the same run on the same job: a naive poke that reads
the job and lists all its events on every poke (what the official client's auto-paging does when asked
for "everything so far").

Requests are counted from the simulator's own request log (``Simulator.request_log``), in process.

    python bench/bench_poke.py [--events 100000] [--pokes 20] [--no-write]

Target: <= 2 requests per steady-state poke.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from typing import Any

from results_md import publish

from airflow_ftevents.simulator import JobSpec, Simulator
from airflow_ftevents.simulator.model import RUNNING_AT

SECTION = "## Requests per sensor poke"
KEY = "sk-bench-poke-5Jt8"
RATE = 1.0  # new events per second once the history is there
PEER_POKES = 3


class Store:
    """``context["task_state_store"]``: JSON values, as Airflow 3.3 keeps them."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(self.data[key]) if key in self.data else default

    def set(self, key: str, value: Any) -> None:
        self.data[key] = json.dumps(value)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class TaskInstance:
    dag_id, task_id, run_id, map_index = "bench", "wait", "run", -1

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def live_job(sim: Simulator, job_id: str, history: int) -> None:
    """A running job that already has about ``history`` events and gains ``RATE`` a second.

    The simulator spreads the training events evenly from ``RUNNING_AT`` of the job's span to its end;
    starting the job that far in the past puts ``history`` of them behind it.
    """
    n_events = 10 * history  # it will not finish during the benchmark
    training = n_events / RATE  # seconds from the first training event to the last
    duration = training / (1 - RUNNING_AT)
    created_ago = duration * RUNNING_AT + history / RATE
    sim.add_job(JobSpec(job_id=job_id, n_events=n_events, duration=duration, created_ago=created_ago))


def count_requests(sim: Simulator, action: Any) -> int:
    before = len(sim.request_log)
    action()
    return len(sim.request_log) - before


def our_pokes(sim: Simulator, job_id: str, mode: str, pokes: int, interval: float) -> dict[str, Any]:
    from airflow_ftevents.sensors import FineTuneJobSensor

    context: dict[str, Any] = {"ti": TaskInstance(), "task_state_store": Store()}

    def sensor() -> FineTuneJobSensor:
        return FineTuneJobSensor(
            task_id="wait", job_id=job_id, mode=mode, deferrable=False, poke_interval=interval
        )

    kept = sensor()
    counts, events_logged = [], []
    for n in range(pokes + 1):
        current = kept if mode == "poke" else sensor()
        counts.append(count_requests(sim, lambda s=current: s.poke(context)))
        events_logged.append(current._follower.event_count if current._follower else 0)
        if mode != "poke":
            current._close_hook()
        if n < pokes:
            time.sleep(interval)
    kept._close_hook()
    steady = counts[1:]
    return {
        "first": counts[0],
        "steady": steady,
        "mean": statistics.mean(steady),
        "max": max(steady),
        "events": events_logged[-1],
        "new_per_poke": (events_logged[-1] - events_logged[0]) / pokes,
    }


def naive_pokes(sim: Simulator, job_id: str, pokes: int, interval: float) -> dict[str, Any]:
    """The job, then every page of its events, on every poke (requests, no state between pokes)."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {KEY}"
    base = sim.base_url

    def poke() -> None:
        session.get(f"{base}/fine_tuning/jobs/{job_id}", timeout=60).raise_for_status()
        after = None
        while True:
            params: dict[str, Any] = {"limit": 100, **({"after": after} if after else {})}
            page = session.get(f"{base}/fine_tuning/jobs/{job_id}/events", params=params, timeout=60).json()
            if not page.get("has_more") or not page["data"]:
                return
            after = page["data"][-1]["id"]

    counts = []
    for n in range(pokes):
        counts.append(count_requests(sim, poke))
        if n < pokes - 1:
            time.sleep(interval)
    session.close()
    return {"steady": counts, "mean": statistics.mean(counts), "max": max(counts)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="history of the long job")
    parser.add_argument("--short", type=int, default=1_000, help="history of the short job")
    parser.add_argument("--pokes", type=int, default=20, help="steady-state pokes per case")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between pokes")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args()

    logging.getLogger("airflow").setLevel(logging.WARNING)  # the first poke logs the whole history
    started = time.monotonic()
    with Simulator(api_key=KEY) as sim:
        os.environ["AIRFLOW_CONN_OPENAI_DEFAULT"] = json.dumps(
            {"conn_type": "openai_ftevents", "host": sim.base_url, "password": KEY}
        )
        rows: list[tuple[str, int, dict[str, Any]]] = []
        for history in (args.short, args.events):
            for mode in ("poke", "reschedule"):
                job_id = f"ftjob-poke-{mode}-{history}"
                live_job(sim, job_id, history)
                result = our_pokes(sim, job_id, mode, args.pokes, args.interval)
                rows.append((f"FineTuneJobSensor, mode={mode}", history, result))
                print(f"{mode} {history}: {result}", flush=True)
        peer_job = f"ftjob-poke-naive-{args.events}"
        live_job(sim, peer_job, args.events)
        naive = naive_pokes(sim, peer_job, PEER_POKES, args.interval)
        print(f"naive {args.events}: {naive}", flush=True)
    minutes = (time.monotonic() - started) / 60

    def fmt(value: float) -> str:
        return f"{value:,.2f}".rstrip("0").rstrip(".")

    table = [
        "| poker | job's history (events) | first poke (reads the history) | requests per steady poke: "
        "mean | max | new events per poke (mean) | steady pokes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, history, r in rows:
        table.append(
            f"| {name} | {history:,} | {r['first']:,} | {fmt(r['mean'])} | {r['max']} | "
            f"{fmt(r['new_per_poke'])} | {len(r['steady'])} |"
        )
    table.append(
        f"| peer: naive poke (the job + all its pages, requests) | {args.events:,} | - | "
        f"{fmt(naive['mean'])} | {naive['max']:,} | - | {len(naive['steady'])} |"
    )
    worst = max(r["max"] for _, _, r in rows)
    long_mean = statistics.mean(r["mean"] for _, h, r in rows if h == args.events)
    defaults = (args.events, args.short, args.pokes, args.interval) == (100_000, 1_000, 20, 1.0)
    command = "python bench/bench_poke.py" + ("" if defaults else " " + " ".join(sys.argv[1:]))
    section = "\n".join(
        [
            SECTION,
            "",
            f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, "
            f"{minutes:.1f} minutes; request counts do not depend on the machine's load).",
            "",
            f"A running job with a history of {args.events:,} events (and one of {args.short:,}) gaining "
            f"about {RATE:g} event a second, on the in-process simulator; requests counted from its "
            f"request log. `FineTuneJobSensor.poke` every {args.interval:g} s: the first poke reads the "
            "whole history once, then come the steady pokes. In reschedule mode every poke is a fresh "
            "sensor object that resumes from `task_state_store`. The peer reads the same kind of job in "
            "the same run.",
            "",
            *table,
            "",
            f"- Requests per steady-state poke: at most **{worst}** (goal <= 2: "
            f"{'met' if worst <= 2 else 'MISSED'}), the same for a history of {args.short:,} and of "
            f"{args.events:,} events: the job, then its newest page (sized for the few events a poke "
            "finds, and stopping at the newest event already seen).",
            f"- The naive peer: **{fmt(naive['mean'])}** requests per poke on the {args.events:,}-event "
            f"job, {naive['mean'] / long_mean:,.0f}x ours.",
            "",
        ]
    )
    publish(SECTION, section, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
