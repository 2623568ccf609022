"""``ftevents``: follow, list and export the events of a fine-tuning job from a shell.

Thin over :class:`~airflow_ftevents.hooks.FineTuneEventsHook`: paging, retries and the legacy stream's
reconnects are the hook's. This module adds what a terminal needs: credentials without an Airflow
metadata database, one readable line per event, exit codes a script can branch on, and a ``follow``
that outlives dropped connections and says how to resume after Ctrl-C. Airflow is imported only once a
command runs, so ``ftevents --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_ftevents.core.api import ApiFamily
from airflow_ftevents.errors import FineTuneEventsConnectionError, FineTuneEventsError

if TYPE_CHECKING:
    from airflow_ftevents.hooks import FineTuneEventsHook

PROG = "ftevents"
DEFAULT_CONN_ID = "openai_default"
CURRENT_API = ApiFamily.CURRENT.value
LEGACY_API = ApiFamily.LEGACY.value
DEFAULT_POLL_INTERVAL = 10.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 2
EXIT_USAGE = 2
EXIT_ERROR = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

KEY_VAR = "OPENAI_API_KEY"
BASE_URL_VAR = "OPENAI_BASE_URL"
ORG_VAR = "OPENAI_ORG_ID"
PROJECT_VAR = "OPENAI_PROJECT_ID"
LOG_LEVEL_VAR = "AIRFLOW__LOGGING__LOGGING_LEVEL"

_LOG = logging.getLogger(__name__)

CREDENTIALS_HELP = f"""\
credentials (no Airflow metadata database is needed):
  --conn-id ID        that Airflow connection only: AIRFLOW_CONN_<ID in upper case> (JSON or
                      URI form), or a secrets backend configured for Airflow
  without --conn-id   the first that is set: AIRFLOW_CONN_OPENAI_DEFAULT; {KEY_VAR} (with
                      {BASE_URL_VAR}, default https://api.openai.com/v1, and optionally {ORG_VAR},
                      {PROJECT_VAR}); the connection {DEFAULT_CONN_ID} in a secrets backend
  The key is never printed."""

EXIT_CODES_HELP = f"""\
exit codes:
  {EXIT_OK}    done (follow: the job succeeded)
  {EXIT_FAILED}    follow: the job failed
  {EXIT_CANCELLED}    follow: the job was cancelled; any command: bad usage (arguments, credentials,
       destination)
  {EXIT_ERROR}    an error that retrying cannot cure (job not found, key refused, a broken response,
       the destination cannot be written)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); follow prints the command that resumes
  {EXIT_BROKEN_PIPE}  the output was closed early (e.g. piped into head)"""

MAIN_EPILOG = f"""\
examples:
  export {KEY_VAR}=sk-...
  {PROG} follow ftjob-abc123                    # every event as it happens, then the outcome
  {PROG} events ftjob-abc123 --jsonl > events.jsonl
  {PROG} export ftjob-abc123 ./exports/         # ./exports/ftjob-abc123.jsonl, manifest on stdout
  {PROG} follow ft-AbC123 --api fine_tunes --conn-id azure_ft

{CREDENTIALS_HELP}

{EXIT_CODES_HELP}
"""

FOLLOW_EPILOG = f"""\
Reconnects after dropped connections and server errors (after the hook's own retries) and goes on
from the last event printed: no event is printed twice, none is skipped. Ends with the job's outcome.

examples:
  {PROG} follow ftjob-abc123
  {PROG} follow ftjob-abc123 --poll-interval 30 --conn-id openai_prod
  {PROG} follow ftjob-abc123 --after ftevent-XyZ   # resume: only the events after that one
  {PROG} follow ft-AbC123 --api fine_tunes --skip 120

{CREDENTIALS_HELP}

{EXIT_CODES_HELP}
"""

EVENTS_EPILOG = f"""\
Reads every event the job has now, oldest first, each once (also for a job still running).

examples:
  {PROG} events ftjob-abc123
  {PROG} events ftjob-abc123 --jsonl | jq -c 'select(.type == "metrics") | .data'

{CREDENTIALS_HELP}

{EXIT_CODES_HELP}
"""

EXPORT_EPILOG = f"""\
Writes what the Airflow export operator writes: one JSON Lines file, compact events oldest first,
published atomically; prints the manifest (uri, count, first/last event, status, bytes) as JSON.
DEST is a file, or a folder ending in '/' (then <job_id>.jsonl inside): a local path, a file:// URL,
or an object store URL (s3://CONN_ID@bucket/prefix/, gs://..., with the Airflow connection CONN_ID).

examples:
  {PROG} export ftjob-abc123 ./exports/
  {PROG} export ftjob-abc123 file:///data/ft/run-7.jsonl --metrics-csv --loss-plot
  {PROG} export ftjob-abc123 s3://aws_default@my-bucket/fine-tunes/

{CREDENTIALS_HELP}

{EXIT_CODES_HELP}
"""


class UsageError(Exception):
    """Bad input or missing credentials: the message says what to do; exit code 2."""


# ---------------------------------------------------------------------------------------- arguments


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds greater than 0, got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return int(text)


def _job_id(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty; give the job's id, e.g. ftjob-abc123")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; cheap (no Airflow import), so ``--help`` answers at once."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Follow, list and export the events of OpenAI (and Azure OpenAI) fine-tuning jobs.",
        epilog=MAIN_EPILOG,
        formatter_class=formatter,
    )
    from airflow_ftevents import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "job_id", metavar="JOB_ID", type=_job_id, help="the fine-tuning job, e.g. ftjob-abc123"
    )
    common.add_argument(
        "--conn-id",
        metavar="ID",
        default=None,
        help=f"Airflow connection to use (default: {DEFAULT_CONN_ID}, else {KEY_VAR}; see credentials)",
    )
    common.add_argument(
        "--api",
        choices=(CURRENT_API, LEGACY_API),
        default=CURRENT_API,
        help=f"{CURRENT_API} (current API, default) or {LEGACY_API} (legacy /fine-tunes API)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show the hook's progress and Airflow's start-up log",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    follow = commands.add_parser(
        "follow",
        parents=[common],
        help="print each event as it happens until the job ends; exit code = outcome",
        description="Print each event of a job as it happens, until the job ends.\n"
        "The exit code is the job's outcome: 0 succeeded, 1 failed, 2 cancelled.",
        epilog=FOLLOW_EPILOG,
        formatter_class=formatter,
    )
    follow.add_argument(
        "--poll-interval",
        metavar="SECONDS",
        type=_positive_seconds,
        default=DEFAULT_POLL_INTERVAL,
        help=f"seconds between looks at a running job (default {DEFAULT_POLL_INTERVAL:g}; current API)",
    )
    start = follow.add_mutually_exclusive_group()
    start.add_argument(
        "--after",
        metavar="EVENT_ID",
        help="current API: print only the events newer than this one (what Ctrl-C suggests)",
    )
    start.add_argument(
        "--skip",
        metavar="N",
        type=_count,
        default=0,
        help="legacy API (no event ids): skip the first N events (what Ctrl-C suggests)",
    )
    follow.set_defaults(run=_follow)

    events = commands.add_parser(
        "events",
        parents=[common],
        help="print every event of a job, oldest first",
        description="Print every event of a job, oldest first, each once.",
        epilog=EVENTS_EPILOG,
        formatter_class=formatter,
    )
    events.add_argument(
        "--jsonl",
        action="store_true",
        help="one compact JSON object per line, as the API sent it, instead of formatted lines",
    )
    events.set_defaults(run=_events)

    export = commands.add_parser(
        "export",
        parents=[common],
        help="export every event of a job to a JSON Lines file, like the export operator",
        description="Export every event of a job to a JSON Lines file or object, like\n"
        "FineTuneEventsExportOperator, and print the manifest as JSON.",
        epilog=EXPORT_EPILOG,
        formatter_class=formatter,
    )
    export.add_argument(
        "dest", metavar="DEST", help="file or folder/ (local path, file://, s3://, gs://, ...)"
    )
    export.add_argument(
        "--metrics-csv", action="store_true", help="also write <name>.metrics.csv (one row per metrics event)"
    )
    export.add_argument(
        "--loss-plot", action="store_true", help="also write <name>.loss.png (needs matplotlib)"
    )
    export.set_defaults(run=_export)
    return parser


# ---------------------------------------------------------------------------------------- credentials


def _env_var(conn_id: str) -> str:
    return "AIRFLOW_CONN_" + conn_id.upper()


def _parse_connection(conn_id: str, var: str, value: str) -> Any:
    """An ``AIRFLOW_CONN_*`` value (JSON or URI) read with the Task SDK's own parser.

    ``BaseHook.get_connection`` reads these too without a database (Airflow 3.1.8 and 3.3.2), but on
    3.1 it goes through the ORM models: a third of a second more and deprecation warnings on stderr.
    Parse errors are reported without the value, which holds the key.
    """
    from airflow.sdk import Connection

    text = value.strip()
    try:
        if text.startswith("{"):
            return Connection.from_json(text, conn_id=conn_id)
        return Connection.from_uri(text, conn_id=conn_id)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{var} is not valid connection JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            'use e.g. {"conn_type": "openai_ftevents", "password": "sk-...", "host": "..."}'
        ) from None
    except Exception as exc:  # the SDK's messages quote the URI, key included: never show them
        raise UsageError(
            f"{var} is neither connection JSON nor a connection URI ({type(exc).__name__}); use e.g. "
            '{"conn_type": "openai_ftevents", "password": "sk-..."} or openai-ftevents://:KEY@HOST/v1'
        ) from None


def _environment_connection(environ: Mapping[str, str]) -> Any:
    """``OPENAI_API_KEY`` and friends (the official client's variables) as a connection."""
    from airflow.sdk import Connection

    extra = {
        name: environ[var]
        for name, var in (("organization", ORG_VAR), ("project", PROJECT_VAR))
        if environ.get(var)
    }
    return Connection(
        conn_id="environment",
        conn_type="openai_ftevents",
        host=environ.get(BASE_URL_VAR) or None,
        password=environ[KEY_VAR],
        extra=json.dumps(extra),
    )


def _backend_connection(conn_id: str) -> Any | None:
    """The connection from Airflow's secrets backends; outside a task Airflow skips the metadata DB."""
    from airflow.sdk import BaseHook

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Airflow 3.1 warns about its own deprecated imports here
        try:
            return BaseHook.get_connection(conn_id)
        except Exception as exc:
            if type(exc).__name__ == "AirflowNotFoundException":
                return None
            raise UsageError(
                f"reading Airflow connection {conn_id!r} failed ({type(exc).__name__}); set "
                f"{_env_var(conn_id)} or {KEY_VAR} instead"
            ) from None


def _missing_credentials(conn_id: str | None) -> UsageError:
    if conn_id is not None:
        return UsageError(
            f"Airflow connection {conn_id!r} is not defined: set {_env_var(conn_id)} to its JSON or URI, "
            'e.g. {"conn_type": "openai_ftevents", "password": "sk-..."}, or configure a secrets backend; '
            f"or drop --conn-id and set {KEY_VAR}"
        )
    return UsageError(
        f"no credentials for the API. Either set {KEY_VAR} (and {BASE_URL_VAR} for a server other than "
        f"https://api.openai.com/v1), or an Airflow connection: {_env_var(DEFAULT_CONN_ID)} (JSON or URI, "
        'e.g. {"conn_type": "openai_ftevents", "password": "sk-..."}), or --conn-id ID with '
        "AIRFLOW_CONN_<ID>"
    )


def find_connection(conn_id: str | None, environ: Mapping[str, str]) -> tuple[Any, str]:
    """The connection to use and where it came from (for error messages), in the documented order."""
    name = conn_id if conn_id is not None else DEFAULT_CONN_ID
    var = _env_var(name)
    if environ.get(var, "").strip():
        return _parse_connection(name, var, environ[var]), var
    if conn_id is None and environ.get(KEY_VAR, "").strip():
        return _environment_connection(environ), KEY_VAR
    conn = _backend_connection(name)
    if conn is None:
        raise _missing_credentials(conn_id)
    return conn, f"Airflow connection {name!r}"


def make_hook(conn_id: str | None, api: str, environ: Mapping[str, str]) -> FineTuneEventsHook:
    """A hook on the chosen credentials, built with no Airflow connection lookup of its own."""
    from airflow_ftevents.hooks import FineTuneEventsHook

    conn, source = find_connection(conn_id, environ)
    try:
        config = FineTuneEventsHook.config_from_connection(conn)
    except FineTuneEventsError as exc:
        raise UsageError(f"{source}: {exc}") from None
    return FineTuneEventsHook.from_config(config, api)


def _start_airflow(verbose: bool) -> None:
    """Load Airflow with its log on stderr, at WARNING unless ``-v``, before anything logs.

    Only for the command's own process: Python callers of :func:`main` keep their logging as it is.
    Airflow 3.3 logs to stdout, which would mix log lines (a secrets backend's warnings, the hook's
    retries) into the events and into ``--jsonl``. Airflow 3.1 logs its database plugins at INFO while
    it loads, which the variable set here (read once, then removed again) quiets. A level the user set
    in the environment is kept.
    """
    user_level = LOG_LEVEL_VAR in os.environ
    quiet_start = "airflow" not in sys.modules and not (verbose or user_level)
    if quiet_start:
        os.environ[LOG_LEVEL_VAR] = "WARNING"
    try:
        from airflow.sdk.log import configure_logging
    finally:
        if quiet_start:
            os.environ.pop(LOG_LEVEL_VAR, None)
    level = "INFO" if verbose else "DEFAULT" if user_level else "WARNING"
    configure_logging(log_level=level, output=sys.stderr)


# ---------------------------------------------------------------------------------------- output


def event_line(event: Mapping[str, Any]) -> str:
    """``2024-07-23 00:00:05 [metrics] step 5/100 train_loss=1.234``: UTC time, then the compact form."""
    from airflow_ftevents.core.jobstate import format_event

    created = event.get("created_at")
    text = format_event(event)
    if isinstance(created, int) and not isinstance(created, bool):
        return time.strftime("%Y-%m-%d %H:%M:%S ", time.gmtime(created)) + text
    return text


def _say(text: str) -> None:
    print(text, flush=True)


def _warn(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


def outcome_line(job_id: str, job: Mapping[str, Any], error_events: Sequence[Mapping[str, Any]]) -> str:
    """The last line of ``follow``: the fine-tuned model, or why the job did not succeed."""
    from airflow_ftevents.core.jobstate import SUCCEEDED, failure_message, job_status

    if job_status(job) != SUCCEEDED:
        return failure_message(job_id, job, error_events)
    text = f"Fine-tuning job {job_id} succeeded"
    if job.get("fine_tuned_model"):
        text += f"; fine-tuned model {job['fine_tuned_model']}"
    if job.get("trained_tokens") is not None:
        text += f"; {job['trained_tokens']} trained tokens"
    return text


def resume_command(args: argparse.Namespace, last_id: str | None, seen: int) -> str:
    """The exact ``ftevents follow`` that goes on after the last event printed."""
    parts = [PROG, "follow", args.job_id]
    if args.conn_id is not None:
        parts += ["--conn-id", args.conn_id]
    if args.api != CURRENT_API:
        parts += ["--api", args.api]
    if args.poll_interval != DEFAULT_POLL_INTERVAL:
        parts += ["--poll-interval", f"{args.poll_interval:g}"]
    if args.api == LEGACY_API:
        if seen:
            parts += ["--skip", str(seen)]
    elif last_id:
        parts += ["--after", last_id]
    if args.verbose:
        parts.append("--verbose")
    return shlex.join(parts)


# ---------------------------------------------------------------------------------------- commands


class _HeldInterrupts:
    """Ctrl-C that waits for the end of a ``held()`` block, so it lands between two events.

    Without it, a Ctrl-C right after an event was written but before it was counted would make the
    resume hint repeat that event. Outside the main thread (where no handler can be set) it does nothing.
    """

    def __init__(self) -> None:
        self._holding = False
        self._pending = False
        self._installed = False
        self._previous: Any = signal.default_int_handler

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self._holding:
            self._pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._pending:
            self._pending = False
            raise KeyboardInterrupt


def _follow(args: argparse.Namespace, hook: FineTuneEventsHook) -> int:
    """Follow until the job ends; retryable errors (after the hook's retries) only pause it.

    One ``TailState`` lives across reconnects, so a resumed ``stream_events`` reads on from the last
    event it handed out: nothing twice, nothing lost.
    """
    from airflow_ftevents.core.jobstate import (
        CANCELLED,
        FAILED,
        SUCCEEDED,
        is_terminal,
        job_status,
        remember_error_event,
    )
    from airflow_ftevents.core.paging import TailState
    from airflow_ftevents.core.retry_rules import backoff_delay

    if args.api == LEGACY_API and args.after:
        raise UsageError("--after needs event ids, which the legacy fine_tunes API has not; use --skip N")
    if args.api == CURRENT_API and args.skip:
        raise UsageError("--skip is for the legacy fine_tunes API; use --after EVENT_ID")
    state = TailState(last_id=args.after, count=args.skip)
    last_id: str | None = args.after
    seen = args.skip  # legacy: the position in the stream
    printed = 0
    error_events: list[dict[str, Any]] = []
    failures = 0
    ctrl_c = _HeldInterrupts()
    try:
        ctrl_c.install()
        while True:
            try:
                for event in hook.stream_events(args.job_id, args.poll_interval, state=state):
                    with ctrl_c.held():  # printed and counted, or neither: the resume hint is exact
                        _say(event_line(event))
                        printed += 1
                        seen += 1
                        last_id = event.get("id") or last_id
                    error_events = remember_error_event(error_events, event)
                    failures = 0
                job = hook.get_job(args.job_id)
            except FineTuneEventsError as exc:
                # A connection error says nothing about the job, even when the hook gave up on it (the
                # legacy stream's "failed N times in a row"): following is what was asked for.
                if not (exc.retryable or isinstance(exc, FineTuneEventsConnectionError)):
                    raise
                failures += 1
                delay = exc.retry_after if exc.retry_after is not None else backoff_delay(failures)
                _warn(f"{exc}\n  still following job {args.job_id}: trying again in {delay:.1f} s")
                time.sleep(delay)
                continue
            status = job_status(job)
            if is_terminal(status):
                break
    except KeyboardInterrupt:
        _warn(
            f"interrupted after {printed} events; the job itself goes on. To follow on from here:\n"
            f"  {resume_command(args, last_id, seen)}"
        )
        return EXIT_INTERRUPTED
    finally:
        ctrl_c.uninstall()
    _say(outcome_line(args.job_id, job, error_events))
    return {SUCCEEDED: EXIT_OK, FAILED: EXIT_FAILED, CANCELLED: EXIT_CANCELLED}[status]


def _events(args: argparse.Namespace, hook: FineTuneEventsHook) -> int:
    if args.jsonl:
        out = sys.stdout
        buffer = getattr(out, "buffer", None)
        out.flush()
        for block in hook.iter_event_blocks(args.job_id):  # already compact JSON Lines, oldest first
            if buffer is not None:
                buffer.write(block)
            else:  # a text-only stream (an embedding application)
                out.write(block.decode("utf-8"))
        (buffer or out).flush()
        return EXIT_OK
    for event in hook.iter_events(args.job_id):
        print(event_line(event))
    sys.stdout.flush()
    return EXIT_OK


def _local_absolute(dest: str) -> str:
    """A relative or ``~`` local path made absolute (the export wants one); URLs are left alone."""
    if "://" in dest or dest.startswith("/"):
        return dest
    folder = dest.endswith(("/", os.sep))
    path = os.path.abspath(os.path.expanduser(dest))
    return path + "/" if folder else path


def _export(args: argparse.Namespace, hook: FineTuneEventsHook) -> int:
    """What ``FineTuneEventsExportOperator`` does with a destination, minus Airflow's task machinery."""
    from airflow.sdk.io import attach

    from airflow_ftevents.core.jobstate import job_status
    from airflow_ftevents.export import export_events, require_matplotlib, resolve_destination

    if args.loss_plot:
        try:
            require_matplotlib()
        except RuntimeError as exc:
            raise UsageError(f"--loss-plot: {exc}") from None

    def filesystem(protocol: str, conn_id: str | None) -> Any:
        try:
            return attach(protocol, conn_id=conn_id).fs
        except Exception as exc:
            via = f" with connection {conn_id!r}" if conn_id else ""
            raise UsageError(
                f"destination: cannot open the {protocol}:// store{via} ({type(exc).__name__}: {exc})"
            ) from None

    try:
        dest = resolve_destination(_local_absolute(args.dest), args.job_id, filesystem)
    except ValueError as exc:
        raise UsageError(f"destination: {exc}") from None
    # The status is read before the events: when it is terminal, the export holds every event.
    status = job_status(hook.get_job(args.job_id))
    manifest = export_events(
        hook.iter_event_blocks(args.job_id),
        dest,
        job_id=args.job_id,
        status=status,
        metrics_csv=args.metrics_csv,
        loss_plot=args.loss_plot,
        log=_LOG,
    )
    _say(json.dumps(manifest, indent=2))
    return EXIT_OK


# ---------------------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (the console script passes it to ``sys.exit``).

    ``argv=None`` means this process's own command line: Airflow's log is then sent to stderr. With
    ``argv`` given (a Python caller, the tests), the caller's logging setup is left alone.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse already explained
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    hook = None
    try:
        if argv is None:
            _start_airflow(args.verbose)
        hook = make_hook(args.conn_id, args.api, os.environ)
        return args.run(args, hook)
    except UsageError as exc:
        _warn(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _warn("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python's exit flush from failing too.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except ValueError as exc:  # a job id no URL can carry (".", "..")
        _warn(f"error: {exc}")
        return EXIT_USAGE
    except FineTuneEventsError as exc:
        _warn(f"error: {exc}")
        return EXIT_ERROR
    except OSError as exc:
        _warn(f"error: {exc}")
        return EXIT_ERROR
    finally:
        if hook is not None:
            hook.close()


if __name__ == "__main__":  # pragma: no cover - python -m airflow_ftevents.cli
    sys.exit(main())
