"""Benchmark: 1,000 FineTuneJobTriggers in one event loop, as one triggerer runs them, against a naive peer.

One simulator (in its own process, so its threads do not take the GIL from the loop being measured)
holds 1,000 jobs finishing at staggered times; 1,000 triggers wait for them concurrently in ONE asyncio
loop. Reported: detection latency (job finished -> trigger event, p50/p99/max), the longest event-loop
stall (a ticker coroutine that wakes every 10 ms), peak RSS (sampled by a thread, plus ru_maxrss) and
the requests made. Then, in the same run and against the same simulator, the same 1,000 waits are done
the naive way: a trigger that calls the blocking hook (requests) inside ``async def run()``, the flaw
of the official OpenAI provider's trigger. Both sides log every event to a file.

First of all, in the same process with the same imports, a baseline: 1,000 triggers that only sleep
``poll_interval`` until their job's finish time, as the cheapest possible trigger would. A triggerer
pays for its own heap (CPython's full collections over Airflow's objects take 50-300 ms here before
any trigger exists, depending on the machine's load), so what a trigger costs is what it adds to
that floor: the longest stall, garbage collection included, against the baseline's, the memory and
the CPU per poll of each trigger.
A control phase runs ours with httpx swapped for bare h11 on one kept-alive stream, to tell what the
HTTP stack sets off in the collector from what the follower does.

    .venv/bin/python bench/bench_triggers.py            # writes "## Trigger concurrency" in RESULTS.md

Targets: longest stall (GC included) <= 1.2x the baseline's, longest single step (GC taken out)
< 20 ms, p99 latency < poll_interval + 2 s; memory and CPU per poll per trigger are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import bisect
import gc
import json
import logging
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from results_md import publish

KEY = "sk-bench-triggers-0123456789"
JOB_PATH = re.compile(r"/fine_tuning/jobs/[^/?]+(\?|$)")  # reading the job: one per poll
CONTROL_NAME = "control: ours with httpx swapped for bare h11 on one kept-alive stream"
SECTION = "## Trigger concurrency"  # the stress run (poll_interval 5 s); other intervals get their own


# -- the simulator, in its own process ---------------------------------------------------------------


class SimProcess:
    """``python -m airflow_ftevents.simulator`` driven through its ``/_sim`` control endpoints."""

    def __init__(self) -> None:
        command = [sys.executable, "-m", "airflow_ftevents.simulator", "--port", "0", "--api-key", KEY]
        command += ["--job", "ftjob-warmup:6:0:succeeded", "--keepalive", "15"]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        atexit.register(self.stop)  # a benchmark that fails half-way leaves no simulator running
        self.base_url = self.proc.stdout.readline().strip()
        if not self.base_url.startswith("http://"):
            raise RuntimeError(f"the simulator did not start: {self.base_url!r}")
        self.root = self.base_url.rsplit("/v1", 1)[0]

    def control(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.root + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def add_jobs(self, prefix: str, durations: list[float], n_events: int) -> dict[str, float]:
        """Add the jobs now; return when each will finish (wall clock), from the moment it was added."""
        finish = {}
        for n, duration in enumerate(durations):
            job_id = f"ftjob-{prefix}-{n:04d}"
            before = time.time()
            self.control("POST", "/_sim/jobs", {"job_id": job_id, "n_events": n_events, "duration": duration})
            finish[job_id] = (before + time.time()) / 2 + duration
        return finish

    def requests(self) -> list[list[Any]]:
        return self.control("GET", "/_sim/requests")["data"]

    def clear_requests(self) -> None:
        self.control("DELETE", "/_sim/requests")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the simulator process so far."""
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


# -- measurements -------------------------------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler(threading.Thread):
    """Samples RSS every 50 ms from a thread, so a blocked event loop does not hide the peak."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.05)


class GcPauses:
    """Collector pauses (start, end), to tell the loop's own stalls from the garbage collector's."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float]] = []
        self.full: list[tuple[float, int]] = []  # full (gen 2) collections: duration, garbage found
        self.total = 0.0  # seconds spent collecting so far
        # Objects moved into the oldest generation by collections of generation 1 (CPython's
        # "long-lived pending" count, which sets off a full collection once it passes a quarter of
        # the objects the last full collection left): counted as the young generations' objects when
        # such a collection starts, minus the garbage it found.
        self.promoted = 0
        self.young_collections = 0
        self._start = 0.0
        self._young = 0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            if info["generation"] == 1:  # counted inside the pause, so no step is charged for it
                self._young = len(gc.get_objects(0)) + len(gc.get_objects(1))
        else:
            if info["generation"] == 1:
                self.promoted += max(self._young - info["collected"], 0)
                self.young_collections += 1
            end = time.perf_counter()
            self.pauses.append((self._start, end))
            self.total += end - self._start
            if info["generation"] == 2:
                self.full.append((end - self._start, info["collected"]))

    def within(self, start: float, end: float, ends: list[float]) -> float:
        """Seconds of collector pauses inside [start, end]; ``ends`` = pause end times, in order."""
        total = 0.0
        for a, b in self.pauses[bisect.bisect_left(ends, start) :]:
            if a >= end:
                break
            total += max(0.0, min(end, b) - max(start, a))
        return total


class StepTimer:
    """Times every callback the event loop runs: one step of a trigger, from one await to the next.

    This is what "blocking the loop" means for a trigger; the collector's pauses that fall inside a
    step are counted apart, as they belong to the process, not to the step.
    """

    def __init__(self, gc_pauses: GcPauses) -> None:
        self.gc_pauses = gc_pauses
        self.reset()
        self._original = asyncio.events.Handle._run
        timer = self

        def timed_run(handle: asyncio.events.Handle) -> None:
            gc_before, start, cpu_start = gc_pauses.total, time.perf_counter(), time.thread_time()
            timer._original(handle)
            took = time.perf_counter() - start
            own = took - (gc_pauses.total - gc_before)
            own_cpu = time.thread_time() - cpu_start - (gc_pauses.total - gc_before)
            if own_cpu > timer.longest_own_cpu:
                timer.longest_own_cpu = own_cpu
            timer.steps += 1
            if took > timer.longest:
                timer.longest = took
            if own > timer.longest_own:
                timer.longest_own = own
            if own > 0.1:
                timer.own_over_100ms += 1

        asyncio.events.Handle._run = timed_run  # type: ignore[method-assign]

    def reset(self) -> None:
        self.steps = 0
        self.longest = self.longest_own = 0.0
        # The same, in CPU time of the loop's thread: what the step itself computed, without the time
        # the machine gave to other processes meanwhile (a shared machine preempts long steps).
        self.longest_own_cpu = 0.0
        self.own_over_100ms = 0


@dataclass
class PhaseResult:
    name: str
    latencies: list[float] = field(default_factory=list)
    undetected: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    stall: float = 0.0
    stall_without_gc: float = 0.0
    longest_gc: float = 0.0
    full_collections: int = 0
    full_garbage: int = 0
    long_lived: int = 0  # objects in the oldest generation after the collection before the phase
    promoted: int = 0  # objects promoted into it during the phase (see GcPauses)
    young_collections: int = 0
    steps: int = 0
    longest_step: float = 0.0
    longest_step_own: float = 0.0
    longest_step_own_cpu: float = 0.0
    steps_over_100ms: int = 0
    stalls_over_100ms: int = 0
    gap_p99: float = 0.0
    wakeups: int = 0
    peak_rss: float = 0.0
    requests: int = 0
    polls: int = 0  # job reads (one per poll) for ours and the peer; wake-ups for the baseline
    rss_start: float = 0.0
    request_errors: int = 0
    sim_cpu: float = 0.0
    wall: float = 0.0
    cpu: float = 0.0

    @property
    def memory_per_trigger_kib(self) -> float:
        """Peak RSS during the phase over RSS at its start, per trigger (memory freed by an earlier
        phase and reused counts as none: the first phase, the baseline, is measured on fresh memory)."""
        return max(self.peak_rss - self.rss_start, 0.0) * 1024 / max(len(self.latencies) + self.undetected, 1)

    @property
    def cpu_per_poll_ms(self) -> float:
        """CPU time of the whole process in the phase per poll of one trigger (HTTP, JSON, logging, GC)."""
        return self.cpu / max(self.polls, 1) * 1000

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def idle_full_collection() -> tuple[float, int]:
    """Median time of a full collection of the heap that importing Airflow and the provider leaves,
    no trigger running: what any full collection costs a triggerer on this machine, at least."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        gc.collect()
        times.append(time.perf_counter() - start)
    return sorted(times)[2] * 1000, len(gc.get_objects())


# -- the control: the same follower over a bare HTTP/1.1 connection -------------------------------------


def bare_h11_fetch_class(base_url: str) -> type:
    """The least an HTTP poller can do: h11 (which httpx's own transport uses underneath) over one
    kept-alive asyncio stream, no retries, no TLS, no proxy; called like the async client's fetch."""
    from urllib.parse import urlencode, urlsplit

    import h11

    from airflow_ftevents.core.api import ApiRequest
    from airflow_ftevents.core.responses import loads

    base = urlsplit(base_url)
    host, port, prefix = base.hostname or "127.0.0.1", base.port or 80, base.path.rstrip("/")
    headers = [("Host", f"{host}:{port}"), ("Authorization", f"Bearer {KEY}")]

    class BareH11Fetch:
        def __init__(self) -> None:
            self.stream: tuple[Any, Any, Any] | None = None  # reader, writer, h11 connection

        async def __call__(self, request: ApiRequest) -> Any:
            if self.stream is None:
                reader, writer = await asyncio.open_connection(host, port)
                self.stream = (reader, writer, h11.Connection(h11.CLIENT))
            reader, writer, conn = self.stream
            if conn.our_state is h11.DONE:
                conn.start_next_cycle()
            query = urlencode({k: v for k, v in request.params.items() if v is not None})
            target = prefix + "/" + "/".join(request.segments) + ("?" + query if query else "")
            writer.write(conn.send(h11.Request(method="GET", target=target, headers=headers)))
            writer.write(conn.send(h11.EndOfMessage()))
            chunks, status = [], 0
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    chunks.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
            if status != 200:
                raise RuntimeError(f"HTTP {status} for {target}")
            return loads(b"".join(chunks))

        def close(self) -> None:
            if self.stream is not None:
                self.stream[1].close()

    return BareH11Fetch


def bare_h11_trigger_class(base_url: str) -> type:
    """Ours with httpx swapped for :func:`bare_h11_fetch_class`: the same sans-I/O follower, sleeps
    and logging, so the difference between the two phases is what httpx's stack keeps alive while a
    request is in flight."""
    from airflow.triggers.base import TriggerEvent

    from airflow_ftevents.core.drivers import run_async
    from airflow_ftevents.core.follow import Finished, NewEvent
    from airflow_ftevents.core.jobstate import SUCCEEDED, log_event
    from airflow_ftevents.triggers import FineTuneJobTrigger, trigger_event_payload

    fetch_class = bare_h11_fetch_class(base_url)

    class BareH11Trigger(FineTuneJobTrigger):
        async def run(self):  # type: ignore[override]
            fetch = fetch_class()
            plan = self.follower.follow(self.poll_interval, self.end_time, tolerate_errors=True)
            try:
                async for outcome in run_async(plan, fetch):
                    if isinstance(outcome, NewEvent) and self.log_events:
                        log_event(self.log, outcome.event)
                    elif isinstance(outcome, Finished):
                        status = "success" if outcome.status == SUCCEEDED else outcome.status
                        yield TriggerEvent(trigger_event_payload(status, outcome.message, outcome.summary))
                        return
            finally:
                fetch.close()

    return BareH11Trigger


async def objects_in_flight(
    fetches: list[Callable[[Any], Any]],
    halfway: float,
    between_polls: Callable[[], Awaitable[None]] | None = None,
) -> float:
    """Collector-tracked objects more while requests are in flight than before they were sent, per
    request: each fetch (a client with its own kept-alive connection) reads the same job at once,
    counted with the collector off, ``halfway`` through the simulator's delay. It includes the task
    that runs each request (a task, its coroutine, a future), as every poll has one too.
    ``between_polls`` first drops what a client drops between two polls, so the count includes
    what each poll builds again."""
    from airflow_ftevents.core.api import job_request

    request = job_request("fine_tuning", "ftjob-warmup")
    for _ in range(2):  # connect, and build what a client builds at its first requests
        await asyncio.gather(*(fetch(request) for fetch in fetches))
    if between_polls is not None:
        await between_polls()
    await asyncio.sleep(0)  # a new step: the last gather's results are no longer held by this one
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        pending = [asyncio.ensure_future(fetch(request)) for fetch in fetches]
        await asyncio.sleep(halfway)
        during = len(gc.get_objects())
        await asyncio.gather(*pending)
    finally:
        gc.enable()
    return (during - before) / len(fetches)


def httpcore_pool_fetch(base_url: str) -> Callable[[Any], Any]:
    """A GET of the warm-up job through httpcore's connection pool, called directly: httpx's
    transport without httpx's own request and response objects around it."""
    import httpcore

    url = base_url + "/fine_tuning/jobs/ftjob-warmup"
    host = url.split("/")[2].encode()
    pool = httpcore.AsyncConnectionPool(keepalive_expiry=60)
    request = httpcore.Request(
        "GET",
        url,
        headers=[(b"Host", host), (b"Authorization", b"Bearer " + KEY.encode())],
        extensions={"timeout": {"connect": 10, "read": 30, "write": 30, "pool": 30}},
    )

    async def fetch(_: Any) -> Any:
        response = await pool.handle_async_request(request)
        try:
            return json.loads(await response.aread())
        finally:
            await response.aclose()

    fetch.aclose = pool.aclose  # type: ignore[attr-defined]
    return fetch


async def in_flight(base_url: str, halfway: float, poll_interval: float, n: int = 20) -> dict[str, float]:
    """Tracked objects per request in flight: through our client (tenacity's retry policy, the
    prepared request and httpx's transport, as a poll builds them again after ``release_idle``),
    through httpcore's pool called directly, and through the control's bare h11."""
    from airflow_ftevents.async_client import AsyncFineTuneEventsClient

    clients = [await AsyncFineTuneEventsClient.from_connection("openai_default") for _ in range(n)]

    async def release_idle() -> None:
        for client in clients:
            await client.release_idle(poll_interval)

    found = {"ours": await objects_in_flight([client._fetch for client in clients], halfway, release_idle)}
    for client in clients:
        await client.aclose()
    pools = [httpcore_pool_fetch(base_url) for _ in range(n)]
    found["httpcore"] = await objects_in_flight(pools, halfway)
    for pool in pools:
        await pool.aclose()  # type: ignore[attr-defined]
    fetch_class = bare_h11_fetch_class(base_url)
    bare = [fetch_class() for _ in range(n)]
    found["h11"] = await objects_in_flight(bare, halfway)
    for fetch in bare:
        fetch.close()
    return found


# -- the peer: the blocking hook inside the async trigger ---------------------------------------------


def blocking_trigger_class() -> type:
    from airflow.triggers.base import TriggerEvent

    from airflow_ftevents.core.follow import Finished, NewEvent
    from airflow_ftevents.core.jobstate import SUCCEEDED, log_event
    from airflow_ftevents.triggers import FineTuneJobTrigger, trigger_event_payload

    class BlockingPollTrigger(FineTuneJobTrigger):
        """The naive way: the same follower and hook, but every HTTP call blocks the loop."""

        async def run(self):  # type: ignore[override]
            from airflow_ftevents.hooks import FineTuneEventsHook

            hook = FineTuneEventsHook(self.conn_id, self.api)
            try:
                while True:
                    if self.end_time is not None and time.time() >= self.end_time:
                        yield TriggerEvent(trigger_event_payload("timeout", "deadline", None))
                        return
                    for outcome in hook.poll_job(self.follower):
                        if isinstance(outcome, NewEvent) and self.log_events:
                            log_event(self.log, outcome.event)
                        elif isinstance(outcome, Finished):
                            status = "success" if outcome.status == SUCCEEDED else outcome.status
                            payload = trigger_event_payload(status, outcome.message, outcome.summary)
                            yield TriggerEvent(payload)
                            return
                    await asyncio.sleep(self.poll_interval)
            finally:
                hook.close()

    return BlockingPollTrigger


class WakeUps:
    """How often the baseline's triggers woke up (its "polls")."""

    count = 0


def sleeping_trigger_class(finish: dict[str, float]) -> type:
    from airflow.triggers.base import BaseTrigger, TriggerEvent

    class SleepingTrigger(BaseTrigger):
        """The floor: sleeps ``poll_interval`` until its job's finish time, then fires; no I/O at all."""

        def __init__(self, job_id: str, poll_interval: float, end_time: float | None = None) -> None:
            super().__init__()
            self.job_id, self.poll_interval, self.end_time = job_id, poll_interval, end_time

        def serialize(self) -> tuple[str, dict[str, Any]]:
            return ("bench_triggers.SleepingTrigger", {"job_id": self.job_id})

        async def run(self):  # type: ignore[override]
            while time.time() < finish[self.job_id]:
                await asyncio.sleep(self.poll_interval)
                WakeUps.count += 1
            yield TriggerEvent({"status": "success"})

    return SleepingTrigger


# -- one phase: N triggers in one loop ------------------------------------------------------------------


async def run_phase(
    name: str,
    make_trigger: Callable[[str], Any],
    finish: dict[str, float],
    start_spread: float,
    cap: float,
    gc_pauses: GcPauses,
    step_timer: StepTimer,
) -> PhaseResult:
    result = PhaseResult(name)
    detected: dict[str, float] = {}
    stop = asyncio.Event()
    gaps: list[tuple[float, float]] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append((last, now))
            last = now

    async def watch(index: int, job_id: str) -> None:
        await asyncio.sleep(start_spread * index / len(finish))  # deferrals arrive over time
        trigger = make_trigger(job_id)
        async for event in trigger.run():
            status = event.payload["status"]
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status != "timeout":  # a trigger that gave up at the deadline detected nothing
                detected[job_id] = time.time()

    # Every phase starts from the same collector state: a full collection, outside the measured
    # time, so no phase pays for what an earlier one left pending.
    gc.collect()
    result.long_lived = len(gc.get_objects(2))
    await asyncio.sleep(0)  # ends this step, so the step timer's reset below leaves the collection out
    promoted_before, young_before = gc_pauses.promoted, gc_pauses.young_collections
    result.rss_start = rss_mb()
    sampler = RssSampler()
    sampler.start()
    gc_before, full_before = len(gc_pauses.pauses), len(gc_pauses.full)
    step_timer.reset()
    wall, cpu = time.perf_counter(), time.process_time()
    tick = asyncio.ensure_future(ticker())
    tasks = [asyncio.ensure_future(watch(n, job_id)) for n, job_id in enumerate(finish)]
    done, pending = await asyncio.wait(tasks, timeout=cap)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            raise task.exception()
    stop.set()
    await tick
    result.wall, result.cpu = time.perf_counter() - wall, time.process_time() - cpu
    result.steps, result.steps_over_100ms = step_timer.steps, step_timer.own_over_100ms
    result.longest_step, result.longest_step_own = step_timer.longest, step_timer.longest_own
    result.longest_step_own_cpu = step_timer.longest_own_cpu
    sampler.running = False
    sampler.join()
    result.peak_rss = sampler.peak
    result.latencies = [detected[j] - finish[j] for j in finish if j in detected]
    result.undetected = len(finish) - len(detected)
    ends = [b for _, b in gc_pauses.pauses]
    stalls = [(b - a, b - a - gc_pauses.within(a, b, ends)) for a, b in gaps]
    result.stall = max(s for s, _ in stalls) - 0.01
    result.stall_without_gc = max(s for _, s in stalls) - 0.01
    result.stalls_over_100ms = sum(1 for s, _ in stalls if s - 0.01 > 0.1)
    ordered = sorted(s for s, _ in stalls)
    result.gap_p99 = ordered[int(0.99 * (len(ordered) - 1))] - 0.01
    result.wakeups = len(ordered)
    new_pauses = gc_pauses.pauses[gc_before:]
    result.longest_gc = max((b - a for a, b in new_pauses), default=0.0)
    full = gc_pauses.full[full_before:]
    result.full_collections = len(full)
    result.full_garbage = sum(collected for _, collected in full)
    result.promoted = gc_pauses.promoted - promoted_before
    result.young_collections = gc_pauses.young_collections - young_before
    return result


def describe(result: PhaseResult) -> dict[str, str]:
    return {
        "p50": f"{result.pct(0.50):.2f} s",
        "p99": f"{result.pct(0.99):.2f} s",
        "max": f"{max(result.latencies):.2f} s" if result.latencies else "n/a",
        "detected": f"{len(result.latencies)}/{len(result.latencies) + result.undetected}",
        "stall": f"{result.stall * 1000:.0f} ms",
        "stall_nogc": f"{result.stall_without_gc * 1000:.0f} ms",
        "over100": f"{result.stalls_over_100ms} of {result.wakeups:,}",
        "step": f"{result.longest_step * 1000:.0f} ms",
        "step_own": f"{result.longest_step_own * 1000:.1f} ms ({result.steps_over_100ms} of "
        f"{result.steps:,} over 100 ms)",
        "step_cpu": f"{result.longest_step_own_cpu * 1000:.1f} ms",
        "gap_p99": f"{max(result.gap_p99, 0) * 1000:.0f} ms",
        "gc": f"{result.longest_gc * 1000:.0f} ms",
        "full_gc": f"{result.full_collections} (garbage found: {result.full_garbage:,} objects)",
        "promoted": f"{result.promoted:,} ({result.promoted / max(result.polls, 1):.1f} per poll; "
        f"{result.young_collections:,} collections of generation 1)",
        "due": f"{result.long_lived // 4:,} ({result.promoted / max(result.long_lived / 4, 1):.1f}x)",
        "rss": f"{result.peak_rss:.0f} MB",
        "mem_per": f"{result.memory_per_trigger_kib:.1f} KiB",
        "cpu_per_poll": f"{result.cpu_per_poll_ms:.2f} ms ({result.polls:,} polls)",
        "requests": f"{result.requests:,}",
        "cpu": f"{result.cpu:.1f} s in {result.wall:.0f} s",
        "sim_cpu": f"{result.sim_cpu:.1f} s",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--poll", type=float, default=5.0, help="poll_interval of every trigger (s)")
    parser.add_argument("--min-duration", type=float, default=20.0, help="first job finishes after (s)")
    parser.add_argument("--max-duration", type=float, default=40.0, help="last job finishes after (s)")
    parser.add_argument("--events", type=int, default=60, help="events per job")
    parser.add_argument(
        "--server-delay",
        type=float,
        default=0.1,
        help="seconds the simulator waits before every answer, as a real API's round trip (default 0.1)",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip the blocking peer")
    parser.add_argument(
        "--no-control", action="store_true", help="skip the control: ours over a bare h11 connection"
    )
    parser.add_argument(
        "--freeze-phase",
        action="store_true",
        help="add a last phase: ours again after gc.freeze(), to show what the collector costs",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = parser.parse_args()
    section_title = SECTION if args.poll == 5 else f"{SECTION}, poll_interval {args.poll:g} s"

    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * args.jobs + 256)), hard))
    sim = SimProcess()  # before Airflow is imported: the child inherits the raised file limit only
    os.environ["AIRFLOW_CONN_OPENAI_DEFAULT"] = json.dumps(
        {
            "conn_type": "openai_ftevents",
            "host": sim.base_url,
            "password": KEY,
            "extra": {"max_retries": 3, "timeout": 30},
        }
    )
    from airflow_ftevents.triggers import FineTuneJobTrigger

    baseline = rss_mb()
    full_gc_ms, heap_objects = idle_full_collection()
    if args.server_delay > 0:
        sim.control(
            "POST",
            "/_sim/random_faults",
            {"rate": 1.0, "kinds": ["slow"], "seed": 1, "params": {"delay": args.server_delay}},
        )
    log_dir = Path(tempfile.mkdtemp(prefix="bench-triggers-"))
    event_log = logging.getLogger("bench.trigger")
    event_log.setLevel(logging.INFO)
    event_log.propagate = False
    handler = logging.FileHandler(log_dir / "events.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    event_log.addHandler(handler)
    gc_pauses = GcPauses()
    step_timer = StepTimer(gc_pauses)
    span = args.max_duration - args.min_duration
    durations = [args.min_duration + span * n / max(1, args.jobs - 1) for n in range(args.jobs)]
    cap = args.max_duration + 2 * args.poll + 30

    def make(cls: type, deadline: float) -> Callable[[str], Any]:
        def build(job_id: str) -> Any:
            trigger = cls(job_id, poll_interval=args.poll, end_time=deadline)
            trigger._log = event_log
            return trigger

        return build

    async def warm_up(cls: type) -> None:
        """First use imports and builds lazily (TLS context, anyio backend): pay it outside the phases."""
        async for _ in make(cls, time.time() + 60)("ftjob-warmup").run():
            pass

    ours_name = "airflow_ftevents FineTuneJobTrigger (async httpx)"
    baseline_name = "baseline: triggers that only sleep poll_interval"
    baseline_finish: dict[str, float] = {}
    baseline_cls = sleeping_trigger_class(baseline_finish)
    phases = [(baseline_name, "z", baseline_cls, False), (ours_name, "a", FineTuneJobTrigger, False)]
    if not args.no_control:
        phases.append((CONTROL_NAME, "h", bare_h11_trigger_class(sim.base_url), False))
    if not args.no_peer:
        peer_cls = blocking_trigger_class()
        phases.append(("peer: same polling, blocking hook (requests) in run()", "b", peer_cls, False))
    if args.freeze_phase:
        phases.append((ours_name + ", after gc.freeze()", "c", FineTuneJobTrigger, True))
    for _, _, cls, _ in phases[1:]:
        asyncio.run(warm_up(cls))
    found = (
        asyncio.run(in_flight(sim.base_url, args.server_delay / 2, args.poll)) if args.server_delay else None
    )
    results = []
    for name, prefix, cls, freeze in phases:
        if freeze:
            gc.collect()
            gc.freeze()
        sim.clear_requests()
        if cls is baseline_cls:  # no job on the simulator: the same schedule, kept here
            now = time.time()
            finish = {f"ftjob-{prefix}-{n:04d}": now + d for n, d in enumerate(durations)}
            baseline_finish.update(finish)
            WakeUps.count = 0
        else:
            finish = sim.add_jobs(prefix, durations, args.events)
        sim_cpu = sim.cpu_seconds()
        print(f"{name}: {args.jobs} jobs finishing in {args.min_duration:g}-{args.max_duration:g} s ...")
        phase = run_phase(
            name, make(cls, time.time() + cap), finish, args.poll, cap + 15, gc_pauses, step_timer
        )
        result = asyncio.run(phase)
        log = sim.requests()
        result.requests = len(log)
        result.request_errors = sum(1 for _, _, status in log if status >= 400 or status == 0)
        result.polls = (
            WakeUps.count
            if cls is baseline_cls
            else sum(1 for method, path, _ in log if method == "GET" and JOB_PATH.search(path))
        )
        result.sim_cpu = sim.cpu_seconds() - sim_cpu
        results.append(result)
        print(f"  {describe(result)} statuses={result.statuses}")
    sim.stop()
    with open(log_dir / "events.log") as logged:
        lines_logged = sum(1 for _ in logged)
    peak_lifetime = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    floor, ours = results[0], results[1]
    target_p99 = args.poll + 2
    command = "python bench/bench_triggers.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    rows = [
        "| | " + " | ".join(r.name for r in results) + " |",
        "|---|" + "---:|" * len(results),
    ]
    labels = [
        ("detected / jobs", "detected"),
        ("detection latency p50", "p50"),
        ("detection latency p99", "p99"),
        ("detection latency max", "max"),
        ("longest event-loop stall", "stall"),
        ("longest stall, GC pauses taken out", "stall_nogc"),
        ("wake-ups late by over 100 ms", "over100"),
        ("longest single step (one callback of the loop)", "step"),
        ("longest single step, GC pauses inside it taken out", "step_own"),
        ("longest single step in CPU time of the loop's thread, GC taken out", "step_cpu"),
        ("wake-up lateness p99", "gap_p99"),
        ("longest GC pause", "gc"),
        ("full collections during the phase", "full_gc"),
        ("objects promoted to the oldest generation (survivors of generation-1 collections)", "promoted"),
        (
            "promotions that make a full collection due (a quarter of the oldest generation at the "
            "phase's start), and the phase's promotions over that",
            "due",
        ),
        ("peak RSS (sampled)", "rss"),
        ("memory per trigger (peak RSS over RSS at the phase's start)", "mem_per"),
        ("CPU per poll per trigger (process CPU / polls; baseline: / wake-ups)", "cpu_per_poll"),
        ("HTTP requests made", "requests"),
        ("CPU time of this process, in the phase's wall time", "cpu"),
        ("CPU time of the simulator process", "sim_cpu"),
    ]
    described = [describe(r) for r in results]
    rows += [f"| {label} | " + " | ".join(d[key] for d in described) + " |" for label, key in labels]
    stall_ratio = ours.stall / max(floor.stall, 1e-3)
    verdicts = [
        f"longest stall, GC included: ours {ours.stall * 1000:.0f} ms, baseline {floor.stall * 1000:.0f} ms, "
        f"ours / baseline **{stall_ratio:.2f}x** vs goal <= 1.2x: "
        + ("met" if stall_ratio <= 1.2 else "MISSED")
        + f" (full collections in the phase: ours {ours.full_collections}, the longest GC pause "
        f"{ours.longest_gc * 1000:.0f} ms; baseline {floor.full_collections}, "
        f"{floor.longest_gc * 1000:.0f} ms; a full collection of the heap before any trigger exists takes "
        f"{full_gc_ms:.0f} ms here, {heap_objects:,} objects)",
        f"longest single step of the loop, GC pauses inside it taken out: ours **"
        f"{ours.longest_step_own * 1000:.1f} ms** vs goal < 20 ms: "
        + ("met" if ours.longest_step_own < 0.02 else "MISSED")
        + f" (baseline {floor.longest_step_own * 1000:.1f} ms; in CPU time of the loop's thread, which "
        f"leaves out the time the shared machine gave other processes during a step: ours "
        f"{ours.longest_step_own_cpu * 1000:.1f} ms, baseline {floor.longest_step_own_cpu * 1000:.1f} ms)",
        f"p99 detection latency: ours **{ours.pct(0.99):.2f} s** vs goal < {target_p99:g} s: "
        + ("met" if ours.pct(0.99) < target_p99 and not ours.undetected else "MISSED")
        + f" (the baseline, which knows the finish time and only has to wake up: {floor.pct(0.99):.2f} s)",
        f"memory per trigger: ours {ours.memory_per_trigger_kib:.1f} KiB, baseline "
        f"{floor.memory_per_trigger_kib:.1f} KiB; CPU per poll per trigger: ours "
        f"{ours.cpu_per_poll_ms:.2f} ms, baseline {floor.cpu_per_poll_ms:.3f} ms per wake-up "
        f"(ours - baseline: {ours.cpu_per_poll_ms - floor.cpu_per_poll_ms:.2f} ms, the cost of a poll: "
        f"{ours.requests / max(ours.polls, 1):.2f} HTTP requests, the JSON, the logging of its events)",
        f"peak RSS {ours.peak_rss:.0f} MB vs target < 300 MB: "
        + ("met" if ours.peak_rss < 300 else "MISSED")
        + f" (Airflow + provider imported before any trigger: {baseline:.0f} MB)",
    ]
    controls = [r for r in results if r.name == CONTROL_NAME]
    verdicts.append(
        "what sets off the full collections (CPython 3.11 runs one at the eleventh collection of "
        "generation 1 since the last, and only once the objects they promoted pass a quarter of the "
        "oldest generation, which ours passes within 4-5 of them): baseline "
        f"{floor.young_collections} of generation 1, {floor.promoted:,} promoted "
        f"({floor.promoted / max(floor.long_lived / 4, 1):.1f}x the quarter); ours "
        f"{ours.young_collections}, {ours.promoted:,} ({ours.promoted / max(ours.long_lived / 4, 1):.1f}x)"
        + (
            f"; the control (the same follower, sleeps and logging, with httpx swapped for bare h11, "
            "and without ours' retries, timeouts, connection lookup, checkpoint set-up and error "
            "mapping) "
            f"{controls[0].young_collections}, {controls[0].promoted:,} "
            f"({controls[0].promoted / max(controls[0].long_lived / 4, 1):.1f}x), "
            f"{controls[0].full_collections} full, longest stall {controls[0].stall * 1000:.0f} ms "
            f"({controls[0].stall / max(floor.stall, 1e-3):.2f}x the baseline's), CPU per poll "
            f"{controls[0].cpu_per_poll_ms:.2f} ms"
            if controls
            else ""
        )
        + (
            f"; a request in flight keeps {found['ours']:.0f} more tracked objects alive through our "
            f"client (tenacity, the request built again after release_idle, httpx's transport), "
            f"{found['httpcore']:.0f} through httpcore's pool called directly, {found['h11']:.0f} "
            "through bare h11 (20 at once, each on its own kept-alive connection, counted half-way "
            "through the simulator's delay, each with the task that runs it)"
            if found
            else ""
        )
    )
    frozen = [r for r in results if r.name.endswith("gc.freeze()")]
    if frozen:
        verdicts.append(
            f"after gc.freeze(): longest stall {frozen[0].stall * 1000:.0f} ms, "
            f"{frozen[0].stalls_over_100ms} over 100 ms, p99 latency {frozen[0].pct(0.99):.2f} s"
        )
    verdicts.append(
        f"ours used {ours.cpu / max(ours.requests, 1) * 1000:.1f} ms of CPU per HTTP request (the whole "
        "process: httpx, JSON, logging every event, GC), "
        f"i.e. {ours.cpu / ours.wall * 100:.0f}% of one core for {ours.requests / ours.wall:.0f} requests/s"
    )
    peers = [r for r in results if r.name.startswith("peer")]
    if peers:
        peer = peers[0]
        verdicts.append(
            f"peer / ours: p99 latency {peer.pct(0.99) / ours.pct(0.99):.1f}x, longest stall "
            f"{peer.stall / max(ours.stall, 1e-3):.1f}x, jobs detected {len(peer.latencies)} vs "
            f"{len(ours.latencies)}"
        )
    section = "\n".join(
        [
            section_title,
            "",
            f"Command: `{command}` ({date.today().isoformat()}, Python {platform.python_version()} "
            f"{platform.machine()}, {os.cpu_count()} CPUs shared with other work).",
            "",
            f"Load average when it started: {load_start}. "
            f"{args.jobs} jobs of {args.events} events each on one simulator (its own process, every "
            f"answer delayed {args.server_delay * 1000:.0f} ms like a real API's round trip), finishing "
            f"{args.min_duration:g}-{args.max_duration:g} s after they are added (evenly staggered); "
            f"{args.jobs} triggers in ONE asyncio loop, poll_interval {args.poll:g} s, started spread over "
            f"the first poll interval (deferrals arrive over time), every event logged to a file "
            f"({lines_logged:,} lines in all). Latency = trigger event time minus the job's finish time. "
            "Stall = longest gap between wake-ups of a coroutine sleeping 10 ms, minus the 10 ms. RSS is "
            "sampled every 50 ms by a thread (lifetime ru_maxrss of the process, all phases: "
            f"{peak_lifetime:.0f} MB). Each phase has fresh jobs with the same schedule and a deadline "
            f"of {cap:g} s; the phases run one after the other in the same process, each after a full "
            "collection outside its measured time (so none pays for what an earlier one left): the "
            "baseline (triggers that only sleep poll_interval until their job's finish time, no I/O), "
            "ours, the control (ours with httpx swapped for bare h11 on one kept-alive asyncio stream "
            "per trigger: the same follower, sleeps and logging, no retries, TLS or proxy), the peer, "
            "and with --freeze-phase ours again after gc.freeze() (the objects made by importing "
            "Airflow are then left out of collections). The machine is shared and noisy: compare each "
            "figure with the baseline's from the same run.",
            "",
            "Two measures of the loop's health: the stall (above), which counts everything that kept "
            "the loop away, garbage collection included, and the longest single step (every callback "
            "the loop runs is timed: one trigger's work from one await to the next), which is what a "
            "trigger that blocks the loop would show. CPython's full collections stop the whole "
            "process for a time that grows with the heap, which Airflow's imports alone make large. "
            "CPython 3.11 runs one at the eleventh collection of generation 1 since the last, once "
            "those have promoted more than a quarter of the oldest generation's objects; so what "
            "decides how often they run is how often the young generations fill up, which the "
            "allocations of requests in flight drive. Garbage cycles, which our triggers no longer "
            "create (the test suite checks that polling leaves none), would add to it.",
            "",
            *rows,
            "",
            *[f"- {v}" for v in verdicts],
            "",
        ]
    )
    publish(section_title, section, write=not args.no_write)


if __name__ == "__main__":
    main()
