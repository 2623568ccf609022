"""The fault matrix of ``test_faults.py``: which fault is tried on which component, and what must happen.

Kept apart from the test module so that ``docs/reliability.md`` can be checked against it without running
anything: the table in that file lists exactly the (fault, component) pairs declared here, and its
"observed" column is written by the suite itself (``FTEVENTS_WRITE_RELIABILITY=1``).

Every case expects one of:

- ``exact``: the component delivers exactly the simulator's events (same content, oldest first, no
  duplicate, none lost); for ``get_job`` the job object, for ``list_events`` the one page as sent;
- ``error``: a given exception class with a given ``status_code`` / ``code`` and message fragments;
- ``event``: the trigger's one event with a given status and message fragments.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from conftest import API_KEY

# Component keys and the names the table shows.
COMPONENTS: dict[str, str] = {
    "get_job": "hook.get_job",
    "list_events": "hook.list_events",
    "iter_events": "hook.iter_events",
    "stream": "hook.stream_events (current API, polling)",
    "stream_legacy": "hook.stream_events (legacy SSE)",
    "trigger": "FineTuneJobTrigger.run",
    "sensor": "FineTuneJobSensor (poke mode)",
    "sensor_deferred": "FineTuneJobSensor (deferrable: poke, trigger, execute_complete)",
    "export": "FineTuneEventsExportOperator (file destination)",
}
HOOK = ("get_job", "list_events", "iter_events", "stream", "stream_legacy")
ALL = (*HOOK, "trigger", "sensor", "export")

# Which request a fault is aimed at when the fault says "the component's default": mid-paging for the
# readers of whole jobs, the events read (after the status read) for the followers, the stream itself.
DEFAULT_PATH: dict[str, str | None] = {
    "get_job": None,
    "list_events": None,
    "iter_events": "after=",
    "stream": "/events",
    "stream_legacy": "stream=true",
    "trigger": "/events",
    "sensor": "/events",
    "sensor_deferred": "/events",
    "export": "after=",
}
DEFAULT = "<default>"  # Injection.path: the component's default path

UNKNOWN_STATUS = "hibernating"
LONG_TEXT = ("file-ünïcødé-日本語-🚀-Ωμέγα-" * 4000)[:100_000]  # 100,000 characters, 1-4 bytes each
NON_ASCII_ID = "ftjob-ünï-日本語-🚀"
WEIRD_ID = "../ftjob x/../?after=1&limit=1#frag%2F"
KEY_ECHO = f"Incorrect API key provided: {API_KEY}."


@dataclass(frozen=True)
class Injection:
    """One ``sim.inject(kind, count, path, **params)``."""

    kind: str
    count: int = 1
    path: str | None = DEFAULT
    params: dict[str, Any] = field(default_factory=dict)

    def resolve(self, component: str) -> tuple[str, int, str | None, dict[str, Any]]:
        path = DEFAULT_PATH[component] if self.path == DEFAULT else self.path
        return self.kind, self.count, path, dict(self.params)


@dataclass(frozen=True)
class Expect:
    outcome: str  # "exact" | "error" | "event"
    error: str | None = None  # exception class name (exact type)
    status_code: int | None = None
    code: str | None = None
    contains: tuple[str, ...] = ()
    event_status: str | None = None  # trigger event status for outcome "event"

    def describe(self) -> str:
        if self.outcome == "exact":
            return "exact events"
        if self.outcome == "event":
            return f"one trigger event `{self.event_status}`"
        attrs = []
        if self.status_code is not None:
            attrs.append(f"status_code={self.status_code}")
        if self.code is not None:
            attrs.append(f"code={self.code}")
        return f"`{self.error}`" + (f" ({', '.join(attrs)})" if attrs else "")


EXACT = Expect("exact")


def error(cls: str, status_code: int | None = None, code: str | None = None, *contains: str) -> Expect:
    return Expect("error", cls, status_code, code, tuple(contains))


def event(status: str, *contains: str) -> Expect:
    return Expect("event", contains=tuple(contains), event_status=status)


@dataclass(frozen=True)
class Fault:
    """One kind of trouble and, per component, what must come of it."""

    key: str
    label: str
    expect: dict[str, Expect]
    inject: tuple[Injection, ...] = ()
    conn: dict[str, Any] = field(default_factory=dict)  # connection extras on top of the defaults
    refused: bool = False  # point the connection at a closed port instead of the simulator
    no_requests: bool = False  # the simulator must see no request at all
    job_id: str | None = None  # instead of a generated id
    n_events: int = 250
    duration: float = 0.0  # > 0: a live job
    training_file: str | None = None
    raw_utf8: bool = False  # the simulator sends non-ASCII text as raw UTF-8 instead of \u escapes
    transform: str | None = None  # what the fault changes in the answers: see Run.expected_* in test_faults
    deadline: float = 20.0  # trigger end_time / sensor and export timeout, seconds from the start
    bound: float = 8.0  # the case must end within this many seconds
    min_elapsed: float = 0.0  # and not before (a server-requested delay was honoured)
    leftover_ok: bool = False  # the fault was queued with a large count on purpose
    count_for: dict[str, int] = field(default_factory=dict)  # per-component count of every injection

    def cases(self) -> list[Case]:
        return [Case(self, component, expect) for component, expect in self.expect.items()]


@dataclass(frozen=True)
class Case:
    fault: Fault
    component: str
    expect: Expect

    @property
    def id(self) -> str:
        return f"{self.fault.key}-{self.component}"

    @property
    def row(self) -> tuple[str, str]:
        return self.fault.label, COMPONENTS[self.component]

    def describe(self) -> str:
        if self.expect.outcome == "exact" and self.component == "get_job":
            return "the job object as sent"
        if self.expect.outcome == "exact" and self.component == "list_events":
            return "the one page as sent"
        return self.expect.describe()

    def injections(self) -> list[tuple[str, int, str | None, dict[str, Any]]]:
        resolved = [inj.resolve(self.component) for inj in self.fault.inject]
        count = self.fault.count_for.get(self.component)
        return [(k, count or n, path, params) for k, n, path, params in resolved]


def _all(expect: Expect, components: Iterable[str] = ALL) -> dict[str, Expect]:
    return dict.fromkeys(components, expect)


def _with(base: dict[str, Expect], **changes: Expect) -> dict[str, Expect]:
    return {**base, **changes}


MS = {"headers": {"retry-after-ms": "20"}}  # keeps the bursts short; the backoff itself has its own rows

FAULTS: tuple[Fault, ...] = (
    Fault(
        "429-seconds",
        "429 with `Retry-After: 1` (seconds)",
        _all(EXACT, ("get_job", "iter_events", "stream_legacy", "trigger", "export")),
        (Injection("429", 1, params={"retry_after": 1}),),
        min_elapsed=0.95,
    ),
    Fault(
        "429-ms",
        "429 x2 with `retry-after-ms: 50`",
        _all(EXACT),
        (Injection("429", 2, params={"retry_after_ms": 50}),),
        min_elapsed=0.095,
    ),
    Fault(
        "429-date",
        "429 with `Retry-After` as an HTTP date 2 s ahead",
        _all(EXACT, ("get_job", "stream_legacy", "trigger")),
        (Injection("429", 1, params={"retry_after_date": 2}),),
        min_elapsed=0.95,  # the date has whole seconds: the wait is in (1, 2] s; the backoff would be 0.5 s
    ),
    Fault(
        "429-exhausted",
        "429 on every try (1 + max_retries = 4)",
        {
            "get_job": error("FineTuneEventsAPIError", 429, "rate_limit_exceeded", "Rate limit reached"),
            "iter_events": error(
                "FineTuneEventsAPIError", 429, "rate_limit_exceeded", "retries were exhausted"
            ),
            "stream_legacy": error(
                "FineTuneEventsConnectionError", 429, "rate_limit_exceeded", "failed 4 times in a row"
            ),
            "trigger": EXACT,  # transient for the trigger: it polls again
            "sensor": error("FineTuneEventsAPIError", 429, "rate_limit_exceeded", "Rate limit reached"),
            "export": error("FineTuneEventsAPIError", 429, "rate_limit_exceeded", "Rate limit reached"),
        },
        (Injection("429", 4, params={"retry_after_ms": 10}),),
    ),
    Fault(
        "500-burst",
        "500 x3 (`retry-after-ms: 20`)",
        _all(EXACT, (*ALL, "sensor_deferred")),
        (Injection("500", 3, params=MS),),
        duration=0.0,
    ),
    Fault(
        "502-backoff",
        "502 x2 without Retry-After (exponential backoff 0.5 s, 1 s)",
        _all(EXACT, ("iter_events", "trigger")),
        (Injection("502", 2),),
        min_elapsed=1.1,  # 0.5 s + 1 s, times a jitter factor >= 0.75
    ),
    Fault(
        "503-burst",
        "503 x3 (`retry-after-ms: 20`)",
        _all(EXACT, ("get_job", "iter_events", "stream", "stream_legacy", "trigger", "sensor", "export")),
        (Injection("503", 3, params=MS),),
    ),
    Fault(
        "500-exhausted",
        "500 on every try (1 + max_retries = 4)",
        {
            **_all(
                error("FineTuneEventsAPIError", 500, "server_error", "The server had an error"),
                ("get_job", "list_events", "iter_events", "stream", "sensor", "export"),
            ),
            "stream_legacy": error(
                "FineTuneEventsConnectionError", 500, "server_error", "failed 4 times in a row"
            ),
            "trigger": EXACT,
        },
        (Injection("500", 4, params=MS),),
    ),
    Fault(
        "refused",
        "connection refused (closed port), max_retries=1",
        {
            **_all(
                error("FineTuneEventsConnectionError", None, "connection_error", "Connection refused"),
                ("get_job", "list_events", "iter_events", "stream", "sensor", "sensor_deferred", "export"),
            ),
            "stream_legacy": error(
                "FineTuneEventsConnectionError", None, "connection_error", "failed 2 times in a row"
            ),
            "trigger": event("timeout", "did not finish before the deadline"),
        },
        conn={"max_retries": 1},
        refused=True,
        no_requests=True,
        deadline=1.5,
    ),
    Fault(
        "reset",
        "TCP reset before the response",
        _all(EXACT),
        (Injection("reset", 1),),
    ),
    Fault(
        "reset-exhausted",
        "TCP reset on every try (max_retries=1)",
        _all(
            error("FineTuneEventsConnectionError", None, "connection_error", "ConnectionResetError"),
            ("get_job", "iter_events", "export"),
        ),
        (Injection("reset", 2),),
        conn={"max_retries": 1},
    ),
    Fault(
        "drop-body",
        "connection dropped mid-body (half the Content-Length sent)",
        _all(EXACT, ("get_job", "list_events", "iter_events", "stream", "trigger", "sensor", "export")),
        (Injection("drop_body", 1),),
    ),
    Fault(
        "drop-body-exhausted",
        "connection dropped mid-body on every try (max_retries=1)",
        _all(
            error("FineTuneEventsConnectionError", None, "connection_error", "IncompleteRead"),
            ("iter_events", "export"),
        ),
        (Injection("drop_body", 2),),
        conn={"max_retries": 1},
    ),
    Fault(
        "drop-sse",
        "SSE stream dropped 3 times while the job runs (after 5, 40 (mid-line) and 120 events)",
        {"stream_legacy": EXACT},
        (
            Injection("drop_stream", 1, params={"after_events": 5}),
            Injection("drop_stream", 1, params={"after_events": 40, "partial": True}),
            Injection("drop_stream", 1, params={"after_events": 120}),
        ),
        n_events=150,
        duration=1.5,
    ),
    Fault(
        "drop-sse-no-progress",
        "SSE stream dropped before any new event on every try (max_retries=1)",
        {
            "stream_legacy": error(
                "FineTuneEventsConnectionError",
                None,
                "stream_dropped",
                "failed 2 times in a row without new events",
            )
        },
        (Injection("drop_stream", 2, params={"after_events": 0}),),
        conn={"max_retries": 1},
    ),
    Fault(
        "slow",
        "response 2 s slower than the 0.5 s read timeout",
        _all(EXACT),
        (Injection("slow", 1, params={"delay": 2.0}),),
        conn={"timeout": 0.5},
        min_elapsed=0.5,
    ),
    Fault(
        "slow-exhausted",
        "response slower than the 0.5 s read timeout on every try (max_retries=1)",
        {
            **_all(
                error("FineTuneEventsConnectionError", None, "timeout", "timed out", "within 0.5 s"),
                ("get_job", "sensor", "export"),
            ),
            "trigger": EXACT,
        },
        (Injection("slow", 2, params={"delay": 2.0}),),
        conn={"timeout": 0.5, "max_retries": 1},
        min_elapsed=1.0,
    ),
    Fault(
        "malformed",
        "truncated JSON body with status 200",
        _all(EXACT, ("get_job", "list_events", "iter_events", "stream", "trigger", "sensor", "export")),
        (Injection("malformed_json", 1),),
    ),
    Fault(
        "malformed-exhausted",
        "truncated JSON body on every try (max_retries=1)",
        _all(
            error("FineTuneEventsResponseError", 200, "invalid_json", "not JSON (application/json)"),
            ("get_job", "iter_events", "export"),
        ),
        (Injection("malformed_json", 2),),
        conn={"max_retries": 1},
    ),
    Fault(
        "html",
        "HTML error page with status 200",
        _all(EXACT, (*ALL, "sensor_deferred")),
        (Injection("html", 1),),
    ),
    Fault(
        "html-exhausted",
        "HTML error page on every try (max_retries=1)",
        {
            **_all(
                error("FineTuneEventsResponseError", 200, "invalid_json", "text/html", "502 Bad Gateway"),
                ("get_job", "iter_events", "export"),
            ),
            "stream_legacy": error(
                "FineTuneEventsConnectionError", 200, "not_event_stream", "text/html", "502 Bad Gateway"
            ),
        },
        (Injection("html", 2),),
        conn={"max_retries": 1},
    ),
    Fault(
        "empty-has-more",
        "empty page with `has_more: true`",
        {
            "list_events": EXACT,
            **_all(
                error(
                    "FineTuneEventsPagingError", None, "empty_page_has_more", "came back empty with has_more"
                ),
                ("iter_events", "stream", "sensor", "export"),
            ),
            "trigger": event("error", "came back empty with has_more=true"),
            "sensor_deferred": error(
                "FineTuneEventsPagingError", None, "empty_page_has_more", "came back empty with has_more=true"
            ),
        },
        (Injection("empty_has_more", 1),),
        transform="empty_has_more",
    ),
    Fault(
        "repeated-cursor",
        "repeated cursor (the server ignores `after`)",
        {
            **_all(
                error("FineTuneEventsPagingError", None, "repeated_cursor", "repeated cursor"),
                ("iter_events", "stream", "sensor", "export"),
            ),
            "trigger": event("error", "repeated cursor"),
        },
        (Injection("repeated_cursor", 1, path="after="),),
    ),
    Fault(
        "unknown-fields",
        "unknown fields on events and jobs, unknown event type `checkpoint`",
        _all(EXACT),
        (Injection("unknown_fields", 10_000, path=None),),
        transform="unknown_fields",
        leftover_ok=True,
    ),
    Fault(
        "data-null",
        "`data: null` on every event",
        _all(EXACT, ("list_events", "iter_events", "stream", "trigger", "sensor", "export")),
        (Injection("data_null", 10_000, path=None),),
        transform="data_null",
        leftover_ok=True,
    ),
    Fault(
        "unknown-status",
        f"unknown job status `{UNKNOWN_STATUS}` on the first 2 reads of the job",
        _all(EXACT, ("get_job", "stream", "trigger", "sensor", "sensor_deferred", "export")),
        (Injection("unknown_status", 2, path=None, params={"status": UNKNOWN_STATUS}),),
        transform="status",
        count_for={"get_job": 1},  # it reads the job once
    ),
    Fault(
        "unknown-status-forever",
        f"unknown job status `{UNKNOWN_STATUS}` that never ends (deadline 1 s)",
        {
            "trigger": event("timeout", "did not finish before the deadline", UNKNOWN_STATUS),
            "sensor": error("AirflowSensorTimeout", None, None, "Sensor has timed out"),
            "sensor_deferred": error(
                "AirflowSensorTimeout", None, None, "did not finish before the deadline"
            ),
            "export": error("AirflowException", None, None, "did not finish within timeout=1", "nothing was"),
        },
        (Injection("unknown_status", 10_000, path=None, params={"status": UNKNOWN_STATUS}),),
        deadline=1.0,
        min_elapsed=0.9,
        leftover_ok=True,
    ),
    Fault(
        "non-ascii-long",
        "non-ASCII job id and a 100,000-character non-ASCII message, sent as `\\u` escapes",
        _all(EXACT, (*ALL, "sensor_deferred")),
        job_id=NON_ASCII_ID,
        training_file=LONG_TEXT,
    ),
    Fault(
        "non-ascii-long-utf8",
        "non-ASCII job id and a 100,000-character non-ASCII message, sent as raw UTF-8",
        _all(EXACT, (*ALL, "sensor_deferred")),
        job_id=NON_ASCII_ID,
        training_file=LONG_TEXT,
        raw_utf8=True,
    ),
    Fault(
        "weird-id",
        "job id with `/`, `?`, `..`, `#`, `&`, `%` and spaces",
        _all(EXACT, (*ALL, "sensor_deferred")),
        job_id=WEIRD_ID,
    ),
    Fault(
        "dotdot-id",
        "job id exactly `..` (cannot be sent safely)",
        {
            **_all(
                error(
                    "InvalidJobIdError", None, None, "A job id cannot be '..': it would change the request"
                ),
                ("get_job", "iter_events", "stream_legacy", "sensor", "export"),
            ),
            "trigger": event("error", "A job id cannot be '..': it would change the request path"),
        },
        job_id="..",
        no_requests=True,
    ),
    Fault(
        "key-echo-401",
        "401 whose error message echoes the API key",
        {
            **_all(
                error(
                    "FineTuneEventsAuthError", 401, "invalid_request_error", "Incorrect API key provided: ***"
                ),
                ("get_job", "iter_events", "sensor", "export"),
            ),
            "stream_legacy": error(
                "FineTuneEventsAuthError", 401, "invalid_request_error", "Incorrect API key provided: ***"
            ),
            "trigger": event("error", "HTTP 401", "Incorrect API key provided: ***"),
            "sensor_deferred": error(
                "FineTuneEventsAuthError", 401, "invalid_request_error", "Incorrect API key provided: ***"
            ),
        },
        (Injection("401", 1, params={"message": KEY_ECHO}),),
    ),
    Fault(
        "key-echo-500",
        "500 x3 whose error message echoes the API key (retries logged)",
        _all(EXACT, ("get_job", "stream_legacy", "trigger", "export")),
        (Injection("500", 3, params={"message": f"Internal error for {API_KEY}", **MS}),),
    ),
)

# The deferrable sensor needs a job that is still running when it defers.
LIVE_FOR_DEFERRAL = 1.0

CASES: tuple[Case, ...] = tuple(case for fault in FAULTS for case in fault.cases())
assert len({case.id for case in CASES}) == len(CASES)
assert len({fault.label for fault in FAULTS}) == len(FAULTS)


# -- docs/reliability.md -------------------------------------------------------------------------------

DOC_HEADER = "| fault | component | expected | observed |"


def doc_rows(text: str) -> list[tuple[str, str]]:
    """The (fault, component) pairs of the table in docs/reliability.md, in order."""
    rows: list[tuple[str, str]] = []
    inside = False
    for line in text.splitlines():
        if line.strip() == DOC_HEADER:
            inside = True
            continue
        if inside:
            if not line.startswith("|"):
                inside = False
                continue
            if set(line.strip()) <= {"|", "-", ":"}:  # the separator row
                continue
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            rows.append((cells[0].replace("\\|", "|"), cells[1].replace("\\|", "|")))
    return rows


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def render_doc(observed: dict[str, str], environment: str, seconds: float) -> str:
    """docs/reliability.md from the outcomes one run of the suite observed (case id -> text)."""
    today = dt.date.today().isoformat()
    lines = [
        "# Reliability: faults tried and their outcomes",
        "",
        "Generated by `tests/test_faults.py` from what the suite observed; do not edit by hand. Regenerate:",
        "",
        "```bash",
        "FTEVENTS_WRITE_RELIABILITY=1 .venv/bin/python -m pytest -p no:cacheprovider -q tests/test_faults.py",
        "```",
        "",
        f"Last generated {today} ({environment}); {len(observed)} cases in {seconds:.0f} s.",
        "`tests/test_faults.py::test_reliability_doc_lists_exactly_the_cases_of_the_suite` fails when the",
        "rows below differ from the cases the suite runs.",
        "",
        "How it is run: every case is real HTTP against the simulator (`airflow_ftevents.simulator`)",
        "with its fault switches, no mocks. The connection allows `max_retries=3` and a 5 s read timeout",
        "unless the fault says otherwise. Jobs have 250 events (3 pages of 100) unless the fault says",
        "otherwise; faults are aimed at the second page (`hook.iter_events`, export), at the events read",
        "that follows the status read (`hook.stream_events`, trigger, sensor), at the SSE stream (legacy),",
        "or at the first request (`get_job`, `list_events`). For the deferrable sensor the job is still",
        "running when it defers and the fault is injected after that, so it hits the trigger; its outcome",
        "is what `execute_complete` returns or raises. `hook.stream_events` has no deadline of its own",
        "(its caller, such as the sensor, has one), so it has no row for a status that never ends.",
        "",
        "Every case also asserts, and a case fails otherwise:",
        "",
        "- **exact events**: the events equal the simulator's (`Simulator.events()` / `.legacy_events()`,",
        "  with the fault's own change, e.g. the unknown fields, applied): same content, oldest first, no",
        "  duplicate, none lost. The sensor and trigger are checked on the event lines they log and on the",
        "  summary they return (`event_count`, `last_event`); the export on the bytes of the file and its",
        "  manifest. `hook.get_job` must return the job object as sent, `hook.list_events` the page as sent;",
        "- **errors**: the exact exception class, `status_code`, `code` and message fragments; a failure",
        "  always comes within the case's time bound, never as a hang or an endless loop;",
        "- every injected fault was consumed (the fault really happened), and the case ended within its",
        "  time bound (and no sooner than a server-requested `Retry-After`);",
        "- an export leaves the complete file or nothing at all in its folder (no partial or temporary",
        "  file);",
        "- the API key appears in no log record (caplog), nothing written to stdout/stderr (capfd, which",
        "  also sees the Airflow structlog output), no exception text, repr or chained cause, no return",
        "  value or XCom, and no serialized trigger (`json.dumps(trigger.serialize())`).",
        "",
        "Observed: what the last generating run saw (events delivered, faults that fired, HTTP requests the",
        "simulator answered, wall time); for errors, the exception and the start of its message.",
        "",
        DOC_HEADER,
        "|---|---|---|---|",
    ]
    for case in CASES:
        fault, component = case.row
        lines.append(
            f"| {_cell(fault)} | {_cell(component)} | {_cell(case.describe())} | "
            f"{_cell(observed.get(case.id, 'not run'))} |"
        )
    lines.append("")
    return "\n".join(lines)
