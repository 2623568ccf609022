"""``python -m airflow_ftevents.simulator``: run the simulator until SIGINT or SIGTERM.

The first line on stdout is the base URL (so a script can read it, even with ``--port 0``); what the
simulator holds is described on stderr.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from airflow_ftevents.simulator.facade import Simulator
from airflow_ftevents.simulator.faults import FAULT_KINDS
from airflow_ftevents.simulator.model import OUTCOMES, JobSpec

DEFAULT_PORT = 8765  # not 8080: that is the Airflow api-server's port
DEMO_JOB = JobSpec(job_id="ftjob-demo", n_events=300, duration=60.0, outcome="succeeded")


def parse_job(text: str) -> JobSpec:
    """``ID:EVENTS:SECONDS:OUTCOME`` (the id may contain ``:``); shorter forms use the defaults."""
    parts = text.split(":")
    if len(parts) >= 4:
        parts = [":".join(parts[:-3]), *parts[-3:]]
    try:
        kwargs: dict[str, Any] = {"job_id": parts[0]}
        if len(parts) > 1 and parts[1]:
            kwargs["n_events"] = int(parts[1])
        if len(parts) > 2 and parts[2]:
            kwargs["duration"] = float(parts[2])
        if len(parts) > 3 and parts[3]:
            kwargs["outcome"] = parts[3]
        return JobSpec(**kwargs)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad --job {text!r}: {exc}") from None


def _value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_fault(text: str) -> tuple[str, int, str | None, dict[str, Any]]:
    """``KIND:COUNT[:PATH[:key=value,key=value]]``, e.g. ``429:3:/events:retry_after=1``."""
    parts = text.split(":", 3)
    try:
        count = int(parts[1]) if len(parts) > 1 and parts[1] else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --fault {text!r}: COUNT must be an int") from None
    path = parts[2] if len(parts) > 2 and parts[2] else None
    params: dict[str, Any] = {}
    if len(parts) > 3 and parts[3]:
        for item in parts[3].split(","):
            key, sep, value = item.partition("=")
            if not sep:
                raise argparse.ArgumentTypeError(f"bad --fault {text!r}: parameters are key=value")
            params[key.strip()] = _value(value.strip())
    return parts[0], count, path, params


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_ftevents.simulator",
        description="Local simulator of the OpenAI fine-tuning events API (current and legacy endpoints).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT}, off Airflow's 8080; 0 picks a free port)",
    )
    parser.add_argument(
        "--api-key", default="sk-sim-test", help="key clients must send (default: sk-sim-test)"
    )
    parser.add_argument(
        "--job",
        action="append",
        type=parse_job,
        default=[],
        metavar="ID:EVENTS:SECONDS:OUTCOME",
        help=f"add a job (repeatable); OUTCOME in {', '.join(OUTCOMES)}; without --job a demo job is added",
    )
    parser.add_argument(
        "--realistic", action="store_true", help="shapes beyond the schema (data: null, paused)"
    )
    parser.add_argument(
        "--keepalive", type=float, default=15.0, help="seconds between SSE keep-alive comments"
    )
    parser.add_argument(
        "--fault",
        action="append",
        type=parse_fault,
        default=[],
        metavar="KIND:COUNT[:PATH[:k=v,...]]",
        help=f"queue a fault (repeatable); KIND in {', '.join(FAULT_KINDS)} or an HTTP status",
    )
    parser.add_argument(
        "--random-faults", type=float, default=0.0, metavar="RATE", help="chance of a random fault"
    )
    parser.add_argument("--random-kinds", default=None, help="comma-separated kinds for --random-faults")
    parser.add_argument("--random-seed", type=int, default=None)
    parser.add_argument("--default-events", type=int, default=200, help="events of jobs created over HTTP")
    parser.add_argument(
        "--default-seconds", type=float, default=10.0, help="duration of jobs created over HTTP"
    )
    parser.add_argument("--default-outcome", default="succeeded", choices=OUTCOMES)
    parser.add_argument(
        "--cancel-finished",
        default="error",
        choices=("error", "unchanged"),
        help="answer to cancelling a finished job: a 400 (default) or the job unchanged",
    )
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        metavar="N",
        help="add N old jobs to the account (see --history-running)",
    )
    parser.add_argument(
        "--history-running", type=int, default=0, metavar="M", help="of the --history jobs, M still run"
    )
    parser.add_argument("--verbose", action="store_true", help="log each request on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sim = Simulator(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        realistic=args.realistic,
        keepalive_interval=args.keepalive,
        default_events=args.default_events,
        default_duration=args.default_seconds,
        default_outcome=args.default_outcome,
        verbose=args.verbose,
        cancel_finished=args.cancel_finished,
    )
    try:
        for kind, count, path, params in args.fault:
            sim.inject(kind, count, path, **params)
        if args.random_faults:
            kinds = args.random_kinds.split(",") if args.random_kinds else None
            sim.set_random_faults(args.random_faults, kinds, args.random_seed)
        if args.history or args.history_running:
            sim.add_history(args.history, args.history_running)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for spec in args.job or [DEMO_JOB]:
        sim.add_job(spec)

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        sim.start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(sim.base_url, flush=True)
    for job_id in sim.job_ids():
        job = sim.job_spec(job_id)
        print(
            f"job {job_id}: {job.n_events} events over {job.duration:g} s, ends {job.outcome}",
            file=sys.stderr,
            flush=True,
        )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
