"""Reading throughput and peak memory: the export's path and ``hook.iter_events`` against bare loops.

An export of a big job is a long walk back through pages of 100 events, so the client's cost per event
decides how long a worker slot is held. One simulator runs in its own process (so it does not share the
GIL with the client) holding a 100,000-event and a 1,000,000-event finished job, and in the same run,
rounds interleaved, each case runs in a fresh subprocess:

- ``ours: export``: the export operator's path, ``FineTuneEventsHook.iter_event_blocks`` streamed into
  ``export.export_events`` (atomic local file of JSON Lines, oldest first);
- ``bare: export``: a ``requests.Session`` loop following ``after``, ``json.loads`` of each body and the
  same compact ``json`` encoding per event written to a file (newest first, no retries, no checks);
- ``ours: iter_events``: ``for event in hook.iter_events(job_id)`` (oldest first, each once);
- ``bare: iter``: the same ``requests`` + ``json.loads`` loop handing out the events (newest first);
- ``openai``: the official client's auto-paging ``client.fine_tuning.jobs.list_events(job_id,
  limit=100)``, each event written with ``to_json(indent=None)`` (first round only: it is slow).

The iterating cases write each event's id to a file as it comes (the same work on each side); before
anything is reported, every case must have read the same events (ours, oldest
first, equal the bare loops' reversed), and the export's file must be the bare export's reversed line by
line. Peak memory is the child's high-water RSS (the whole interpreter, with its imports), reading
100,000 and 1,000,000 events.

    python bench/bench_export.py [--events 100000] [--big 1000000] [--rounds 3] [--no-write]
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

from results_md import publish

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Reading throughput and memory"
API_KEY = "sk-bench-export-7Qm2"
PAGE = 100
OURS_EXPORT, BARE_EXPORT = "ours: export", "bare: export"
OURS_ITER, BARE_ITER = "ours: iter_events", "bare: iter"
OPENAI = "openai"
ROUND_CASES = (OURS_EXPORT, BARE_EXPORT, OURS_ITER, BARE_ITER)
PEER = {OURS_EXPORT: BARE_EXPORT, OURS_ITER: BARE_ITER}


# -- the child processes: one read each -----------------------------------------------------------


def _our_hook(base_url: str) -> Any:
    os.environ["AIRFLOW_CONN_BENCH_OPENAI"] = json.dumps(
        {"conn_type": "openai_ftevents", "host": base_url, "password": API_KEY, "extra": {"timeout": 60}}
    )
    from airflow_ftevents.hooks import FineTuneEventsHook

    hook = FineTuneEventsHook(conn_id="bench_openai")
    hook.get_conn()  # the connection lookup is set-up, like building the other clients
    return hook


def run_ours_export(base_url: str, job_id: str, out: str) -> int:
    import fsspec

    from airflow_ftevents.export import export_events, resolve_destination

    hook = _our_hook(base_url)
    dest = resolve_destination("file://" + out, job_id, lambda protocol, conn_id: fsspec.filesystem(protocol))
    start, cpu_start = time.perf_counter(), time.process_time()
    manifest = export_events(hook.iter_event_blocks(job_id, PAGE), dest, job_id=job_id, status="succeeded")
    _report(start, cpu_start, manifest["count"])
    return 0


def run_ours_iter(base_url: str, job_id: str, out: str) -> int:
    hook = _our_hook(base_url)
    count = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    with open(out, "w") as ids:
        for event in hook.iter_events(job_id, PAGE):
            ids.write(event["id"] + "\n")
            count += 1
    _report(start, cpu_start, count)
    return 0


def _bare_pages(base_url: str, job_id: str) -> Any:
    """The bare loop: ``requests`` as it comes, ``json.loads`` of each body, follow ``after``."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {API_KEY}"
    url = f"{base_url}/fine_tuning/jobs/{job_id}/events"
    after = None
    while True:
        params: dict[str, Any] = {"limit": PAGE}
        if after:
            params["after"] = after
        page = json.loads(session.get(url, params=params, timeout=60).content)
        data = page["data"]
        yield data
        if not page.get("has_more") or not data:
            return
        after = data[-1]["id"]


def run_bare_export(base_url: str, job_id: str, out: str) -> int:
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    start, cpu_start = time.perf_counter(), time.process_time()
    count = 0
    with open(out, "wb") as handle:
        for data in _bare_pages(base_url, job_id):
            for event in data:
                handle.write(encode(event).encode("utf-8") + b"\n")
            count += len(data)
    _report(start, cpu_start, count)
    return 0


def run_bare_iter(base_url: str, job_id: str, out: str) -> int:
    def events() -> Any:
        for data in _bare_pages(base_url, job_id):
            yield from data

    count = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    with open(out, "w") as ids:
        for event in events():
            ids.write(event["id"] + "\n")
            count += 1
    _report(start, cpu_start, count)
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


CHILDREN = {
    OURS_EXPORT: run_ours_export,
    BARE_EXPORT: run_bare_export,
    OURS_ITER: run_ours_iter,
    BARE_ITER: run_bare_iter,
    OPENAI: run_openai,
}


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
        process.wait(10)
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


def _lines(path: str) -> list[bytes]:
    with open(path, "rb") as handle:
        return handle.read().splitlines()


def check_same_events(files: dict[str, str], n_events: int, with_openai: bool) -> None:
    """Ours, oldest first, must be the bare loops' output reversed; the official client's, the same ids."""
    ours, bare = _lines(files[OURS_EXPORT]), _lines(files[BARE_EXPORT])
    if len(ours) != n_events or ours != bare[::-1]:
        raise SystemExit(f"exports differ: ours {len(ours)} lines, bare {len(bare)} lines")
    newest_first = [json.loads(line)["id"].encode() for line in bare]
    if _lines(files[OURS_ITER]) != newest_first[::-1] or _lines(files[BARE_ITER]) != newest_first:
        raise SystemExit("iter_events or the bare iteration handed out other events than the exports hold")
    if with_openai and [json.loads(line)["id"].encode() for line in _lines(files[OPENAI])] != newest_first:
        raise SystemExit("the official client's output holds other events")


def round_order(round_no: int, with_openai: bool) -> tuple[str, ...]:
    """Each of ours right beside its peer, the pair's order swapped every round (so a load that rises
    or falls during a round does not always favour the same side); the official client in round 1."""
    pairs = [(OURS_EXPORT, BARE_EXPORT), (OURS_ITER, BARE_ITER)]
    order = tuple(case for pair in pairs for case in (pair if round_no % 2 else pair[::-1]))
    return order + ((OPENAI,) if with_openai and round_no == 1 else ())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events of the throughput job")
    parser.add_argument("--big", type=int, default=1_000_000, help="events of the memory job")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per case (interleaved)")
    parser.add_argument("--no-openai", action="store_true", help="leave out the official client")
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
    started = time.monotonic()
    simulator, base_url = start_simulator([(small, args.events), (big, args.big)])
    cases = (*ROUND_CASES, *(() if args.no_openai else (OPENAI,)))
    rates: dict[str, list[float]] = {case: [] for case in cases}
    cpu_us: dict[str, list[float]] = {case: [] for case in cases}
    peaks: dict[str, dict[str, int]] = {case: {} for case in cases}
    big_rates: dict[str, float] = {}
    big_cpu: dict[str, float] = {}

    def one(case: str, job_id: str, n_events: int, out: str) -> dict[str, Any]:
        result = run_case(case, base_url, job_id, out)
        if result["events"] != n_events:
            raise SystemExit(f"{case} read {result['events']} events, not {n_events}")
        return result

    try:
        with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
            files = {case: os.path.join(tmp, f"{i}.out") for i, case in enumerate(cases)}
            for round_no in range(1, args.rounds + 1):
                for case in round_order(round_no, with_openai=not args.no_openai):
                    result = one(case, small, args.events, files[case])
                    rates[case].append(result["events"] / result["seconds"])
                    cpu_us[case].append(result["cpu"] / result["events"] * 1e6)
                    peaks[case]["small"] = max(peaks[case].get("small", 0), result["peak_kib"])
                    print(
                        f"round {round_no} {case:>18}: {rates[case][-1]:9.0f} events/s, "
                        f"{cpu_us[case][-1]:5.1f} us CPU/event, peak {result['peak_kib'] / 1024:.0f} MiB",
                        flush=True,
                    )
                if round_no == 1:
                    check_same_events(files, args.events, not args.no_openai)
            for case in ROUND_CASES:
                result = one(case, big, args.big, files[case])
                peaks[case]["big"] = result["peak_kib"]
                big_rates[case] = result["events"] / result["seconds"]
                big_cpu[case] = result["cpu"] / result["events"] * 1e6
                print(
                    f"{args.big} events {case:>18}: {big_rates[case]:9.0f} events/s, "
                    f"{big_cpu[case]:5.1f} us CPU/event, peak {result['peak_kib'] / 1024:.0f} MiB",
                    flush=True,
                )
            check_same_events(files, args.big, False)
    finally:
        simulator.terminate()
        simulator.wait(10)

    load_after = os.getloadavg()[0]
    minutes = (time.monotonic() - started) / 60
    median = {case: statistics.median(values) for case, values in rates.items()}
    cpu_median = {case: statistics.median(values) for case, values in cpu_us.items()}

    def mib(kib: int | None) -> str:
        return "-" if kib is None else f"{kib / 1024:.0f} MiB"

    labels = {
        OURS_EXPORT: "airflow_ftevents export (`iter_event_blocks` -> `export_events`)",
        BARE_EXPORT: f"bare export: requests {version('requests')} + json.loads + json encode",
        OURS_ITER: "airflow_ftevents `hook.iter_events`",
        BARE_ITER: f"bare iteration: requests {version('requests')} + json.loads",
        OPENAI: f"openai {version('openai')} auto-paging, writing each event (first round only)",
    }
    rows = []
    for case in cases:
        peer = PEER.get(case, BARE_EXPORT if case == OPENAI else case)
        ratio = f"{median[case] / median[peer]:.2f}x"
        cpu_ratio = f"{cpu_median[peer] / cpu_median[case]:.2f}x"
        big = (
            f"{big_rates[case]:,.0f} | {big_rates[case] / big_rates[peer]:.2f}x"
            if case in big_rates
            else "- | -"
        )
        values = ", ".join(f"{v:,.0f}" for v in rates[case])
        shown_peer = "-" if peer == case else peer
        rows.append(
            f"| {labels[case]} | {shown_peer} | {median[case]:,.0f} | {values} | {ratio} | "
            f"{cpu_median[case]:.1f} | {cpu_ratio} | {mib(peaks[case].get('small'))} | "
            f"{mib(peaks[case].get('big'))} | {big} |"
        )

    verdicts = []
    for ours, goal_small, goal_big in ((OURS_EXPORT, 1.0, 0.8), (OURS_ITER, 1.0, 0.8)):
        peer = PEER[ours]
        small_ratio = median[ours] / median[peer]
        paired = statistics.median(a / b for a, b in zip(rates[ours], rates[peer], strict=True))
        best = max(rates[ours]) / max(rates[peer])
        big_ratio = big_rates[ours] / big_rates[peer]
        growth = peaks[ours]["big"] / peaks[ours]["small"]
        verdicts.append(
            f"- {ours} vs {peer}: **{small_ratio:.3f}x** at {args.events:,} events (medians; goal >= "
            f"{goal_small:g}x: {'met' if small_ratio >= goal_small else 'MISSED'}; median of the rounds' "
            f"side-by-side ratios {paired:.3f}x, best round against best round {best:.3f}x; the peer's "
            f"client CPU per event is {cpu_median[peer] / cpu_median[ours]:.2f}x ours), "
            f"**{big_ratio:.3f}x** at {args.big:,} "
            f"(goal >= {goal_big:g}x: {'met' if big_ratio >= goal_big else 'MISSED'}); peak RSS at "
            f"{args.big:,} / at {args.events:,}: **{growth:.2f}x** (flat: "
            f"{'met' if growth <= 1.2 else 'MISSED'})"
        )
    if not args.no_openai:
        verdicts.append(
            f"- {OURS_EXPORT} vs the official client: **{median[OURS_EXPORT] / median[OPENAI]:.2f}x** "
            f"(goal >= 1.5x: {'met' if median[OURS_EXPORT] / median[OPENAI] >= 1.5 else 'MISSED'})"
        )
    defaults = (args.events, args.big, args.rounds, args.no_openai) == (100_000, 1_000_000, 3, False)
    command = "python bench/bench_export.py" + ("" if defaults else " " + " ".join(sys.argv[1:]))
    section = (
        f"{SECTION}\n\n"
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}, Python {platform.python_version()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs, {minutes:.1f} minutes). The machine is shared "
        f"with other work and noisy (1-minute load average {load_before:.1f} before, {load_after:.1f} "
        "after), so compare each figure with its peer from the same run, not with other runs. The "
        "simulator runs in its own process on loopback and answers every case; page size "
        f"{PAGE}; each case is a fresh subprocess; {args.rounds} interleaved rounds of {args.events:,} "
        f"events (median reported), then one read of {args.big:,} events per case. The wall-clock rate "
        "includes the simulator's own time per page, the same for every case; client CPU per event is "
        "the client's alone.\n\n"
        f"| case | peer | events/s (median) | rounds | vs peer | client CPU us/event | peer's CPU / "
        f"this | peak RSS {args.events:,} | peak RSS {args.big:,} | events/s at {args.big:,} | vs peer at "
        f"{args.big:,} |\n"
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        + "\n".join(rows)
        + "\n\n"
        + "\n".join(verdicts)
        + "\n\nPeak RSS is the whole child interpreter (Airflow's imports included for ours). Ours hands "
        "out and writes the events oldest first: the pages are read newest first, spooled (past 5,000 "
        "events to a temporary file: the export's lines for the export, each page's response body for "
        "`iter_events`), and replayed; the bare loops keep the API's newest-first order and hold "
        "nothing. Ours decodes with msgspec (an Airflow dependency) where the bare loops use "
        "`json.loads`, and resolves proxy settings once per session where a bare `requests` session "
        "does it on every request.\n"
    )
    publish(SECTION, section, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
