"""The :class:`Simulator` facade: start and stop the server, add and steer jobs, queue faults.

It wires the pieces together (framing serves, the route table answers the API, the control API answers
``/_sim/``) and is the one object tests, benchmarks and the command line talk to.
"""

from __future__ import annotations

from typing import Any

from airflow_ftevents.simulator.control import PREFIX as CONTROL_PREFIX
from airflow_ftevents.simulator.control import ControlApi
from airflow_ftevents.simulator.faults import FaultPlan
from airflow_ftevents.simulator.framing import Exchange, HttpServer
from airflow_ftevents.simulator.jobs import JobStore
from airflow_ftevents.simulator.model import DEFAULT_MODEL, Job, JobSpec, NotAllowed
from airflow_ftevents.simulator.routes import CANCEL_FINISHED, ApiRoutes


class Simulator:
    """A local stand-in for the fine-tuning API, over real HTTP; start it, add jobs, point clients at it.

    ``realistic=True`` adds shapes the real service sends beyond the schema (``data: null`` on the
    "Fine-tuning job started" event, an extra event field, a ``paused`` moment while running). Jobs created
    with ``POST /fine_tuning/jobs`` use ``default_events``/``default_duration``/``default_outcome`` unless
    their metadata sets ``sim_events``/``sim_seconds``/``sim_outcome``. ``raw_utf8=True`` sends non-ASCII
    text in JSON bodies and streams as raw UTF-8 instead of ``\\u`` escapes (clients must read both).
    ``cancel_finished`` is how ``POST .../cancel`` answers for a finished job: ``"error"`` (a 400
    ``job_not_cancellable``, the default) or ``"unchanged"`` (200 with the job as it is); the API does not
    document which, so clients are tested against both.
    """

    def __init__(
        self,
        api_key: str | None = "sk-sim-test",
        host: str = "127.0.0.1",
        port: int = 0,
        realistic: bool = False,
        keepalive_interval: float = 15.0,
        default_events: int = 200,
        default_duration: float = 10.0,
        default_outcome: str = "succeeded",
        verbose: bool = False,
        raw_utf8: bool = False,
        cancel_finished: str = "error",
    ) -> None:
        JobSpec(n_events=default_events, duration=default_duration, outcome=default_outcome)  # validates them
        if cancel_finished not in CANCEL_FINISHED:
            raise ValueError(f"cancel_finished must be one of {CANCEL_FINISHED}, got {cancel_finished!r}")
        self.api_key = api_key
        self.host = host
        self.port = port
        self.realistic = realistic
        self.keepalive_interval = float(keepalive_interval)
        self.default_events = default_events
        self.default_duration = float(default_duration)
        self.default_outcome = default_outcome
        self.verbose = verbose
        self.raw_utf8 = raw_utf8
        self.cancel_finished = cancel_finished
        self.request_log: list[tuple[str, str, int]] = []
        self._store = JobStore()
        self._faults = FaultPlan()
        self._api = ApiRoutes(self, self._store, self._faults)
        self._control = ControlApi(self)
        self._server: HttpServer | None = None
        self._past_connections = 0

    # ----------------------------------------------------------------- lifecycle
    def _app(self, exchange: Exchange) -> None:
        if exchange.path.startswith(CONTROL_PREFIX):
            self._control(exchange)
        else:
            self._api(exchange)

    def start(self) -> Simulator:
        """Bind (a free port when ``port=0``) and serve in a daemon thread; returns ``self``."""
        if self._server is None:
            self._server = HttpServer(self.host, self.port, self._app, self.verbose)
            self.port = self._server.port
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close every connection (ending open streams) and wait for all threads; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.stop(timeout)
            self._past_connections += server.connections_accepted

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """Base URL of the current API family, e.g. ``http://127.0.0.1:PORT/v1``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted so far (keep-alive reuse shows as one)."""
        current = self._server.connections_accepted if self._server is not None else 0
        return self._past_connections + current

    # ----------------------------------------------------------------- jobs
    def add_job(self, spec: JobSpec) -> str:
        """Add a job (its lifecycle starts now) and return its id (random when ``spec.job_id`` is None)."""
        return self._store.add(spec).job_id

    def add_history(
        self,
        n: int,
        running: int = 0,
        metadata: dict[str, str] | None = None,
        n_events: int = 60,
        model: str = DEFAULT_MODEL,
    ) -> list[str]:
        """Add ``n`` old jobs (older than all others), the newest ``running`` of them still running.

        Cheap: history jobs are built only when a request touches them, so an account of 10,000 jobs
        costs milliseconds, and a jobs-list page costs the same as with 10 jobs. Returns the ids, oldest
        first.
        """
        return self._store.add_history(n, running, metadata, n_events, model)

    def _require(self, job_id: str) -> Job:
        job = self._store.get(job_id)
        if job is None:
            raise KeyError(f"no simulated job {job_id!r}")
        return job

    def _job_object(self, job: Job) -> dict[str, Any]:
        return job.job_object(job.snapshot(realistic=self.realistic), self.realistic)

    def finish_job(self, job_id: str, outcome: str = "succeeded") -> dict[str, Any]:
        """End a job now with ``outcome`` (so jobs finish out of creation order); returns the job object.

        ``succeeded``/``failed`` play every remaining event at once; ``cancelled`` cuts like a cancel.
        :class:`~airflow_ftevents.simulator.model.NotAllowed` (a ``ValueError``) once it has finished.
        """
        job = self._require(job_id)
        job.finish(outcome)
        return self._job_object(job)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a job that has not finished; its visible events stay, two closing events follow.

        ``ValueError`` when it has already finished (whatever ``cancel_finished`` says for HTTP).
        """
        job = self._require(job_id)
        try:
            job.cancel()
        except NotAllowed:
            raise ValueError(f"job {job_id!r} has already finished") from None
        return self._job_object(job)

    def pause_job(self, job_id: str) -> dict[str, Any]:
        """Pause a running job (``POST .../pause``): status ``paused``, its clock stops."""
        job = self._require(job_id)
        job.pause()
        return self._job_object(job)

    def resume_job(self, job_id: str) -> dict[str, Any]:
        """Resume a paused job (``POST .../resume``): the events still to come move later by the pause."""
        job = self._require(job_id)
        job.resume()
        return self._job_object(job)

    def job_ids(self) -> list[str]:
        """Ids of all jobs, oldest first."""
        return self._store.ids()

    def job_spec(self, job_id: str) -> JobSpec:
        """The spec a job was added or created with."""
        spec = self._store.spec(job_id)
        if spec is None:
            raise KeyError(f"no simulated job {job_id!r}")
        return spec

    def job(self, job_id: str) -> dict[str, Any]:
        """Current-API job object as ``GET /fine_tuning/jobs/{id}`` would return it now."""
        return self._job_object(self._require(job_id))

    def legacy_job(self, job_id: str) -> dict[str, Any]:
        """Legacy job object as ``GET /fine-tunes/{id}`` would return it now."""
        job = self._require(job_id)
        return job.legacy_object(job.snapshot())

    def event_count(self, job_id: str) -> int:
        """Number of events visible now."""
        return self._require(job_id).snapshot().visible

    def event_total(self, job_id: str) -> int:
        """Number of events the job will have in the end (as it stands: a cancel shortens it)."""
        return self._require(job_id).total()

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """Current-API events visible now, oldest first, exactly as the server serializes them."""
        job = self._require(job_id)
        return [job.event(i, self.realistic) for i in range(job.snapshot().visible)]

    def legacy_events(self, job_id: str) -> list[dict[str, Any]]:
        """The same events in the legacy shape (no id), oldest first."""
        job = self._require(job_id)
        return [job.legacy_event(i) for i in range(job.snapshot().visible)]

    def event_at(self, job_id: str, index: int) -> dict[str, Any]:
        """Event ``index`` (0 = oldest) in O(1), visible yet or not: cursors into the middle of big jobs."""
        job = self._require(job_id)
        total = job.total()
        if not 0 <= index < total:
            raise IndexError(f"job {job_id!r} has {total} events, no index {index}")
        return job.event(index, self.realistic)

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        """Checkpoints reached so far, newest first, as ``GET .../checkpoints`` lists them."""
        job = self._require(job_id)
        return job.checkpoints(job.snapshot())

    # ----------------------------------------------------------------- faults
    def inject(self, kind: str, count: int = 1, path: str | None = None, **params: Any) -> None:
        """Queue a fault for the next ``count`` requests it applies to whose path contains ``path``."""
        self._faults.inject(kind, count, path, params)

    def set_random_faults(
        self,
        rate: float = 0.05,
        kinds: list[str] | tuple[str, ...] | None = None,
        seed: int | None = None,
        path: str | None = None,
        **params: Any,
    ) -> None:
        """Give each request a ``rate`` chance of a fault drawn from ``kinds`` (seeded); 0 turns it off."""
        self._faults.set_random(rate, kinds, seed, path, params)

    def clear_faults(self) -> None:
        """Drop queued faults and turn the random mode off."""
        self._faults.clear()

    def pending_faults(self) -> list[dict[str, Any]]:
        return self._faults.pending()

    def applied_faults(self) -> dict[str, int]:
        """How many requests each fault kind has hit so far."""
        return self._faults.applied()
