"""Export throughput and peak memory: the export operator's path against the official client and a bare loop.

An export of a big job is a long walk back through pages of 100 events, so the client's cost per event
decides how long a worker slot is held. One simulator runs in its own process (so it does not share the
GIL with the client) holding a 100,000-event and a 1,000,000-event finished job, and in the same run,
rounds interleaved, each case runs in a fresh subprocess and writes JSON Lines to a local file:

- ``airflow_ftevents``: the export operator's path, ``FineTuneEventsHook.iter_event_blocks`` streamed into
  ``export.export_events`` (atomic local file, oldest first);
- ``openai``: the official client's auto-paging ``client.fine_tuning.jobs.list_events(job_id, limit=100)``,
  each event written with ``to_json(indent=None)`` (newest first: it does not reorder);
- ``bare requests+json``: a ``requests.Session`` loop following ``after`` with ``json.dumps`` per event
  (newest first, no retries, no checks): the practical limit.

Before anything is reported, the three files must hold the same events (ours reversed line by line
equals the bare loop's file). Peak memory is the child's ``ru_maxrss`` (the whole interpreter, with its
imports), exporting 100,000 and 1,000,000 events.

    python bench/bench_export.py [--events 100000] [--big 1000000] [--rounds 5] [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from results_md import replace_section

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Export throughput and memory"
API_KEY = "sk-bench-export-7Qm2"
PAGE = 100
OURS, OPENAI, BARE = "airflow_ftevents", "openai", "bare requests+json"
CASES = (OURS, OPENAI, BARE)


# -- the child processes: one export each --------------------------------------------------------


def run_ours(base_url: str, job_id: str, out: str) -> int:
    import fsspec

    os.environ["AIRFLOW_CONN_BENCH_OPENAI"] = json.dumps(
        {"conn_type": "openai_ftevents", "host": base_url, "password": API_KEY, "extra": {"timeout": 60}}
    )
    from airflow_ftevents.export import export_events, resolve_destination
    from airflow_ftevents.hooks import FineTuneEventsHook

    hook = FineTuneEventsHook(conn_id="bench_openai")
    hook.get_conn()  # the connection lookup is set-up, like building the other two clients
    dest = resolve_destination("file://" + out, job_id, lambda protocol, conn_id: fsspec.filesystem(protocol))
    start, cpu_start = time.perf_counter(), time.process_time()
    manifest = export_events(hook.iter_event_blocks(job_id, PAGE), dest, job_id=job_id, status="succeeded")
    _report(start, cpu_start, manifest["count"])
    return 0


def run_openai(base_url: str, job_id: str, out: str) -> int:
    from openai import OpenAI

    client = OpenAI(api_key=API_KEY, base_url=base_url, max_retries=2, timeout=60)
    start, cpu_start = time.perf_counter(), time.process_time()
    count = 0
    with open(out, "w", encoding="utf-8") as handle:
        for event in client.fine_tuning.jobs.list_events(job_id, limit=PAGE):
            handle.write(event.to_json(indent=None) + "\n")
            count += 1
    _report(start, cpu_start, count)
    return 0


def run_bare(base_url: str, job_id: str, out: str) -> int:
    import requests

    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {API_KEY}"
    url = f"{base_url}/fine_tuning/jobs/{job_id}/events"
    start, cpu_start = time.perf_counter(), time.process_time()
    count = 0
    after = None
    with open(out, "wb") as handle:
        while True:
            params: dict[str, Any] = {"limit": PAGE}
            if after:
                params["after"] = after
            page = session.get(url, params=params, timeout=60).json()
            data = page["data"]
            for event in data:
                handle.write(encode(event).encode("utf-8") + b"\n")
            count += len(data)
            if not page.get("has_more") or not data:
                break
            after = data[-1]["id"]
    _report(start, cpu_start, count)
    return 0


def peak_rss_kib() -> int:
    """This process's peak resident set size (VmHWM; ``ru_maxrss`` would include the parent's pages
    from before ``exec``, as Linux carries that high-water mark across it)."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for text in status:
            if text.startswith("VmHWM:"):
                return int(text.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _report(start: float, cpu_start: float, count: int) -> None:
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    print(
        json.dumps({"seconds": seconds, "cpu": cpu, "events": count, "peak_kib": peak_rss_kib()}), flush=True
    )


CHILDREN = {OURS: run_ours, OPENAI: run_openai, BARE: run_bare}


# -- the parent: simulator, rounds, checks, report -------------------------------------------------


def start_simulator(jobs: list[tuple[str, int]]) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "airflow_ftevents.simulator", "--port", "0", "--api-key", API_KEY]
    for job_id, n_events in jobs:
        command += ["--job", f"{job_id}:{n_events}:0:succeeded"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
    )
    base_url = process.stdout.readline().strip()
    if not base_url.startswith("http"):
        process.kill()
        raise SystemExit(f"the simulator did not start (said {base_url!r})")
    return process, base_url


def run_case(case: str, base_url: str, job_id: str, out: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", case, base_url, job_id, out],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{case} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_same_events(files: dict[str, str], n_events: int) -> None:
    """Ours, oldest first, must be the bare loop's file reversed; the official client's, the same events."""
    with open(files[OURS], "rb") as handle:
        ours = handle.read().splitlines()
    with open(files[BARE], "rb") as handle:
        bare = handle.read().splitlines()
    if len(ours) != n_events or ours != bare[::-1]:
        raise SystemExit(f"outputs differ: ours {len(ours)} lines, bare {len(bare)} lines")
    with open(files[OPENAI], "rb") as handle:
        ids = [json.loads(line)["id"] for line in handle]
    if ids != [json.loads(line)["id"] for line in bare]:
        raise SystemExit("the official client's output holds other events")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events of the throughput job")
    parser.add_argument("--big", type=int, default=1_000_000, help="events of the memory job")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per case (interleaved)")
    parser.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    parser.add_argument(
        "--child", nargs=4, metavar=("CASE", "BASE_URL", "JOB", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        case, base_url, job_id, out = args.child
        return CHILDREN[case](base_url, job_id, out)

    small, big = "ftjob-bench-small", "ftjob-bench-big"
    load_before = os.getloadavg()[0]
    simulator, base_url = start_simulator([(small, args.events), (big, args.big)])
    rates: dict[str, list[float]] = {case: [] for case in CASES}
    cpu_us: dict[str, list[float]] = {case: [] for case in CASES}
    peaks: dict[str, dict[str, int]] = {case: {} for case in CASES}
    big_rates: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
            files = {case: os.path.join(tmp, f"{i}.jsonl") for i, case in enumerate(CASES)}
            for round_no in range(1, args.rounds + 1):
                for case in CASES:
                    result = run_case(case, base_url, small, files[case])
                    if result["events"] != args.events:
                        raise SystemExit(f"{case} exported {result['events']} events, not {args.events}")
                    rates[case].append(result["events"] / result["seconds"])
                    cpu_us[case].append(result["cpu"] / result["events"] * 1e6)
                    peaks[case]["small"] = max(peaks[case].get("small", 0), result["peak_kib"])
                    print(
                        f"round {round_no} {case:>20}: {rates[case][-1]:9.0f} events/s, "
                        f"{cpu_us[case][-1]:5.1f} us CPU/event, peak {result['peak_kib'] / 1024:.0f} MiB",
                        flush=True,
                    )
                if round_no == 1:
                    check_same_events(files, args.events)
            for case in (OURS, BARE):
                result = run_case(case, base_url, big, files[case])
                if result["events"] != args.big:
                    raise SystemExit(f"{case} exported {result['events']} events, not {args.big}")
                peaks[case]["big"] = result["peak_kib"]
                big_rates[case] = result["events"] / result["seconds"]
                print(
                    f"{args.big} events {case:>20}: {result['events'] / result['seconds']:9.0f} events/s, "
                    f"peak {result['peak_kib'] / 1024:.0f} MiB",
                    flush=True,
                )
    finally:
        simulator.terminate()
        simulator.wait(10)

    load_after = os.getloadavg()[0]
    median = {case: statistics.median(values) for case, values in rates.items()}
    vs_openai = median[OURS] / median[OPENAI]
    vs_bare = median[OURS] / median[BARE]
    growth = peaks[OURS]["big"] / peaks[OURS]["small"]
    verdict = {
        "vs_openai": "met" if vs_openai >= 1.5 else "MISSED",
        "vs_bare": "met" if vs_bare >= 0.8 else "MISSED",
        "memory": "met" if growth <= 1.2 else "MISSED",
    }

    def mib(kib: int | None) -> str:
        return "-" if kib is None else f"{kib / 1024:.0f} MiB"

    def big_rate(case: str) -> str:
        return f"{big_rates[case]:,.0f}" if case in big_rates else "-"

    rows = []
    for case in CASES:
        label = {
            OURS: "airflow_ftevents (operator's path)",
            OPENAI: f"openai {version('openai')}",
            BARE: f"bare requests {version('requests')} + json",
        }[case]
        values = ", ".join(f"{v:,.0f}" for v in rates[case])
        rows.append(
            f"| {label} | {median[case]:,.0f} | {values} | {statistics.median(cpu_us[case]):.1f} | "
            f"{median[case] / median[OPENAI]:.2f}x | "
            f"{median[case] / median[BARE]:.2f}x | {mib(peaks[case].get('small'))} | "
            f"{mib(peaks[case].get('big'))} | {big_rate(case)} |"
        )
    command = "python bench/bench_export.py" + (
        ""
        if (args.events, args.big, args.rounds) == (100_000, 1_000_000, 5)
        else f" --events {args.events} --big {args.big} --rounds {args.rounds}"
    )
    section = (
        f"{SECTION}\n\n"
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, Python {platform.python_version()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs; the simulator in its own process on loopback; "
        f"page size {PAGE}; each case a fresh subprocess writing JSON Lines to a local file; "
        f"{args.rounds} interleaved rounds of {args.events:,} events, median reported; 1-minute load "
        f"average {load_before:.1f} before and {load_after:.1f} after: the machine is shared, so "
        "events/s vary between rounds, and client CPU per event is the steadier figure).\n\n"
        f"| case | events/s (median) | rounds | client CPU us/event | vs openai | vs bare loop | "
        f"peak RSS {args.events:,} | peak RSS {args.big:,} | events/s at {args.big:,} |\n"
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows) + "\n\n"
        f"Targets: >= 1.5x the official client: **{vs_openai:.2f}x, {verdict['vs_openai']}**; "
        f">= 0.8x the bare loop: **{vs_bare:.2f}x, {verdict['vs_bare']}**; peak memory at {args.big:,} "
        f"events within 1.2x of {args.events:,}: **{growth:.2f}x, {verdict['memory']}**. "
        "Peak RSS is the whole child interpreter (Airflow's imports included for ours); the official "
        "client's is measured at the smaller job only. Ours writes oldest first (the pages are read "
        "newest first, spooled, and replayed); the other two write in the API's newest-first order.\n"
    )
    print("\n" + section)
    if not args.no_write:
        replace_section(SECTION, section)
        print(f"wrote {SECTION!r} in bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
