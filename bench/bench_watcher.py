"""Benchmark: what a poll of FineTuneJobWatcherTrigger costs on an account with a long history.

The simulator holds 10,000 old jobs, of which the newest 100 are still running. Measured per poll, in
steady state (after the first poll, which reads the history once), with the package's async client
against the simulator on loopback:

- one watcher (its tracker and announcer, as ``run()`` polls);
- ten watchers on one connection, each polling alone (Airflow 3.1/3.2) and sharing one poll (the
  shared stream of Airflow 3.3: one tracker, ten announcers);
- 100 FineTuneJobTriggers (deferred sensors) watching the same 100 running jobs (one follower poll
  each: job status, then new events).

Reported: HTTP requests per poll (the simulator's request log) and CPU per poll of the thread that runs
the event loop (``time.thread_time``; the simulator's threads are not counted), plus the first poll's
cost. Some jobs are created between polls (``--new-per-poll``), as on a busy account.

    .venv-test/bin/python bench/bench_watcher.py          # writes "## Watcher poll cost" in RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from results_md import publish

from airflow_ftevents.async_client import AsyncFineTuneEventsClient
from airflow_ftevents.core.config import ApiConfig
from airflow_ftevents.core.follow import JobFollower
from airflow_ftevents.core.watch import Announcer, JobFilter, JobTracker, JobWatch
from airflow_ftevents.simulator import JobSpec, Simulator

KEY = "sk-bench-watcher-0123456789"
SECTION = "## Watcher poll cost"


async def drain(client: AsyncFineTuneEventsClient, plan: Any) -> list[Any]:
    return [outcome async for outcome in client.run(plan)]


class Scenario:
    """Polls the simulator ``polls`` times with ``poll_once``; requests and CPU per poll."""

    def __init__(self, sim: Simulator, new_per_poll: int) -> None:
        self.sim = sim
        self.new_per_poll = new_per_poll

    async def measure(self, poll_once: Callable[[], Any], polls: int) -> dict[str, float]:
        self.sim.request_log.clear()
        cpu0 = time.thread_time()
        await poll_once()  # the first poll: the history scan for a watcher, every event for a follower
        first_cpu, first_requests = time.thread_time() - cpu0, len(self.sim.request_log)
        cpus, counts = [], []
        for _ in range(polls):
            for _ in range(self.new_per_poll):
                self.sim.add_job(JobSpec(n_events=20, duration=3600.0))
            before = len(self.sim.request_log)
            cpu0 = time.thread_time()
            await poll_once()
            cpus.append(time.thread_time() - cpu0)
            counts.append(len(self.sim.request_log) - before)
        return {
            "first_requests": first_requests,
            "first_cpu_ms": first_cpu * 1000,
            "requests": statistics.mean(counts),
            "requests_max": max(counts),
            "cpu_ms": statistics.median(cpus) * 1000,
        }


async def main_async(args: argparse.Namespace) -> list[tuple[str, dict[str, float]]]:
    rows: list[tuple[str, dict[str, float]]] = []
    with Simulator(api_key=KEY) as sim:
        running = sim.add_history(args.history, running=args.running)[-args.running :]
        config = ApiConfig(base_url=sim.base_url, api_key=KEY, max_retries=2)
        scenario = Scenario(sim, args.new_per_poll)

        async with AsyncFineTuneEventsClient(config) as client:
            watch = JobWatch.create(JobFilter(), now=time.time())
            rows.append(
                (
                    "1 watcher",
                    await scenario.measure(lambda: drain(client, watch.poll(time.time())), args.polls),
                )
            )

        clients = [AsyncFineTuneEventsClient(config) for _ in range(10)]
        watches = [JobWatch.create(JobFilter(metadata=None), now=time.time()) for _ in range(10)]

        async def ten_alone() -> None:
            await asyncio.gather(
                *(drain(c, w.poll(time.time())) for c, w in zip(clients, watches, strict=True))
            )

        rows.append(
            (
                "10 watchers, each polling alone (Airflow 3.1/3.2)",
                await scenario.measure(ten_alone, args.polls),
            )
        )
        for c in clients:
            await c.aclose()

        async with AsyncFineTuneEventsClient(config) as client:
            tracker = JobTracker()
            announcers = [Announcer(JobFilter(), time.time()) for _ in range(10)]

            async def ten_shared() -> None:
                started = time.time()
                [polled] = await drain(client, tracker.poll_emitting(started))
                for announcer in announcers:
                    announcer.consider(polled.finished, started)
                    announcer.advance(started)

            rows.append(
                ("10 watchers sharing one poll (Airflow 3.3)", await scenario.measure(ten_shared, args.polls))
            )

        followers_clients = [AsyncFineTuneEventsClient(config) for _ in running]
        followers = [JobFollower(job_id) for job_id in running]

        async def hundred_triggers() -> None:
            await asyncio.gather(
                *(drain(c, f.poll()) for c, f in zip(followers_clients, followers, strict=True))
            )

        rows.append(
            (
                f"{args.running} FineTuneJobTriggers on the {args.running} running jobs",
                await scenario.measure(hundred_triggers, args.polls),
            )
        )
        for c in followers_clients:
            await c.aclose()
    return rows


def render(rows: list[tuple[str, dict[str, float]]], args: argparse.Namespace) -> str:
    lines = [
        SECTION,
        "",
        f"{date.today().isoformat()}, Python {platform.python_version()}, {platform.machine()}; simulator on "
        f"loopback, {args.history:,} old jobs of which the newest {args.running} run; {args.new_per_poll} "
        f"jobs created before each poll; {args.polls} steady polls after the first. CPU: the event-loop "
        "thread only (client side), median per poll.",
        "",
        "| who polls | first poll: requests | first poll: CPU ms | requests per poll (max) "
        "| CPU ms per poll |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['first_requests']:.0f} | {r['first_cpu_ms']:.0f} | "
            f"{r['requests']:.1f} ({r['requests_max']:.0f}) | {r['cpu_ms']:.1f} |"
        )
    lines += [
        "",
        "A watcher's steady poll reads only the list pages that hold the new and the unfinished jobs "
        "(here two pages: the 100 running jobs plus those created since, which run too), however long "
        "the history; the bound is `floor(n / 100) + 2 + T` requests (n jobs created since the last "
        "poll, T unfinished jobs). The first poll reads the history once. Sharing the poll makes ten "
        "watchers cost one; 100 deferred sensors cost 100 times more requests (status and events of "
        "each job) and about 40 times the CPU.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=10_000)
    parser.add_argument("--running", type=int, default=100)
    parser.add_argument("--polls", type=int, default=10)
    parser.add_argument("--new-per-poll", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    rows = asyncio.run(main_async(args))
    text = render(rows, args)
    publish(SECTION, text, write=not args.no_write)


if __name__ == "__main__":
    main()
