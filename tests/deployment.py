"""A real Airflow deployment for end-to-end tests: api-server, scheduler, dag-processor and triggerer as
separate processes on one private AIRFLOW_HOME (SQLite, LocalExecutor), every port free and on loopback.

``airflow dags test`` runs a trigger in line and a task in one process; only separate processes show
what a user gets: the DAG parsed by the dag-processor, tasks run by the LocalExecutor, the trigger in a
triggerer that can be killed and replaced, logs where Airflow writes them, and the REST API. Used by
the deployment tests (``tests/test_deployment_e2e.py``) and benchmarks; other tests (Asset events, an
AssetWatcher-scheduled DAG, a browser test of the UI) can use the same class::

    with Deployment(home, connections={"openai_default": connection_json(sim.base_url)}) as airflow:
        airflow.unpause("example_fine_tune_wait_and_export")
        run_id = airflow.trigger("example_fine_tune_wait_and_export", conf={...})
        assert airflow.wait_for_run("example_fine_tune_wait_and_export", run_id) == "success"

Every process is stopped by PID (with its children) when the block ends, also when the block raises,
and then the tail of each log is printed (``logs_on_failure()`` does the same inside a test). The log
servers (``serve-logs``) are not started unless ``serve_logs=True``: Airflow binds them to every
interface, and on one machine the api-server reads the log files itself. Other settings: pass
``env={"AIRFLOW__SECTION__KEY": ...}`` (e.g. a PostgreSQL ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``, as
bench/bench_two_triggerers.py does). Only Airflow's own dependencies are used (requests, psutil).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
T = TypeVar("T")


DB_ERROR_RETRIES = 4  # see Deployment.api


class DeploymentError(RuntimeError):
    """The deployment did not start, or a wait ran out; the message says which process to look at."""


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick for port 0 on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_until(what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Call ``check`` until it returns something other than None/False; DeploymentError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise DeploymentError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def _utc(stamp: str | None) -> dt.datetime | None:
    if not stamp:
        return None
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _task_key(ti: Mapping[str, Any]) -> str:
    """``task_id``, or ``task_id[map_index]`` for a mapped task instance."""
    map_index = ti.get("map_index", -1)
    return ti["task_id"] if map_index in (-1, None) else f"{ti['task_id']}[{map_index}]"


def most_events_within(events: list[dict[str, Any]], seconds: float) -> int:
    """The largest number of events whose created_at falls within any window of ``seconds``: the bound
    on events a restarted trigger logs again (one checkpoint interval plus one poll)."""
    stamps = sorted(e["created_at"] for e in events)
    most, first = 0, 0
    for last, stamp in enumerate(stamps):
        while stamp - stamps[first] > seconds:
            first += 1
        most = max(most, last - first + 1)
    return most


class Service:
    """One ``airflow <command>`` process with its own log file in the home."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: Mapping[str, str], cwd: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.started_at = dt.datetime.now(dt.timezone.utc)
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=dict(env), cwd=cwd, start_new_session=True
        )
        self.pid = self.proc.pid
        self.job_id: int | None = None  # the Airflow job id, where the deployment looked it up

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tree(self) -> list[psutil.Process]:
        """The process and all its descendants, parent first (empty when it is gone)."""
        try:
            parent = psutil.Process(self.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def signal_tree(self, sig: int) -> list[int]:
        """Send ``sig`` to the process and each descendant, by PID; the PIDs signalled."""
        signalled = []
        for proc in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)
                signalled.append(proc.pid)
        return signalled

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the whole tree, SIGKILL to whatever is left after ``grace`` seconds."""
        stop_all([self], grace)

    def reap(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(cannot read {self.log_path}: {exc})"
        return "\n".join(text.splitlines()[-lines:])


def stop_all(services: list[Service], grace: float = 10.0) -> None:
    """SIGTERM to every process of every service at once (by PID), SIGKILL to what is left after
    ``grace`` seconds: stopping them one after the other would add up their shutdown times."""
    procs = [proc for service in services for proc in service.tree()]
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    for service in services:
        service.reap()


class Deployment:
    """api-server + scheduler + dag-processor + triggerer on a fresh AIRFLOW_HOME; a context manager.

    :param home: an empty (or not yet existing) directory for AIRFLOW_HOME; logs go to ``home/logs``
        (Airflow's task logs) and ``home/<service>.log`` (each process's own output).
    :param connections: conn_id -> connection JSON, passed as ``AIRFLOW_CONN_<ID>`` to every process.
    :param env: more environment variables for every process (``AIRFLOW__SECTION__KEY`` config too).
    :param dags_folder: default ``example_dags/``.
    :param db_template: a migrated ``airflow.db`` to copy instead of running ``airflow db migrate``.
    :param airflow: the ``airflow`` executable; default the one next to this Python.
    :param startup_timeout: seconds to wait for all four processes to report healthy.
    :param serve_logs: also start the scheduler's and the triggerer's ``serve-logs`` children on their
        free ports. Off by default: Airflow binds them to every interface, not loopback, and on one
        machine the api-server reads the log files directly.
    """

    def __init__(
        self,
        home: Path,
        *,
        connections: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        dags_folder: Path | None = None,
        db_template: Path | None = None,
        airflow: str | None = None,
        startup_timeout: float = 180.0,
        serve_logs: bool = False,
    ) -> None:
        self.home = Path(home)
        self.dags_folder = Path(dags_folder or ROOT / "example_dags")
        self.db_template = db_template
        self.airflow = airflow or str(Path(sys.executable).with_name("airflow"))
        self.startup_timeout = startup_timeout
        self.serve_logs = serve_logs
        self._skip_serve_logs = [] if serve_logs else ["--skip-serve-logs"]
        self.api_port = free_port()
        self.worker_log_port = free_port()
        self.trigger_log_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.services: dict[str, Service] = {}
        self.stopped: list[Service] = []  # services already stopped or killed (their logs stay readable)
        self._triggerers = 0
        self._token: str | None = None
        self._http = requests.Session()
        self.env = self._environment(connections or {}, env or {})

    # -- configuration -----------------------------------------------------------------------------

    def _environment(self, connections: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
        """Everything by environment variable, nothing inherited from the caller's Airflow settings."""
        from cryptography.fernet import Fernet

        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
        env.update(
            AIRFLOW_HOME=str(self.home),
            PYTHONWARNINGS="ignore",
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_FOLDER=str(self.dags_folder),
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{self.home / 'airflow.db'}",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.base_url}/execution/",
            AIRFLOW__CORE__FERNET_KEY=Fernet.generate_key().decode(),
            # The default SimpleAuthManager, every caller an admin: GET /auth/token hands out a JWT
            # (works on 3.1 and 3.3) and the UI needs no login.
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            # One secret for every process: the scheduler signs the workers' tokens, the api-server checks.
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
            AIRFLOW__API__SECRET_KEY=secrets.token_hex(32),
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.api_port),
            AIRFLOW__API__BASE_URL=self.base_url,
            AIRFLOW__API__WORKERS="1",
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(self.worker_log_port),
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(self.trigger_log_port),
            AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
            # A killed triggerer's triggers move to a live one once its heartbeat is this old.
            AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC="1",
            AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD="8",
            # New DAG files (written by a test) are found within seconds; one parsing process on 2 cores.
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES="1",
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
        )
        for conn_id, value in connections.items():
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = value
        env.update(extra)
        return env

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> Deployment:
        try:
            self.start()
        except BaseException:
            self.stop(show_logs=True)
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.stop(show_logs=exc is not None)

    def start(self) -> None:
        """Migrate (or copy) the DB, start the four processes, wait until each reports healthy."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.db_template is not None:
            shutil.copy(self.db_template, self.home / "airflow.db")
        else:
            self.cli("db", "migrate", timeout=300)
        self._start("api-server", ["api-server", "--port", str(self.api_port), "--host", "127.0.0.1"])
        self._start("scheduler", ["scheduler", *self._skip_serve_logs])
        self._start("dag-processor", ["dag-processor"])
        triggerer = self.start_triggerer(wait=False)
        self.wait_healthy(("scheduler", "triggerer", "dag_processor"), self.startup_timeout)
        self.wait_for_triggerer_job(triggerer)

    def _start(self, name: str, args: list[str]) -> Service:
        service = Service(name, [self.airflow, *args], self.home / f"{name}.log", self.env, self.home)
        self.services[name] = service
        return service

    def stop(self, show_logs: bool = False) -> None:
        """Stop every process this deployment started (by PID, children too); optionally print log tails."""
        services = list(self.services.values())
        self.services.clear()
        stop_all(services)
        self.stopped.extend(services)
        self._http.close()
        if show_logs:
            self.print_log_tails()

    def print_log_tails(self, lines: int = 40) -> None:
        """The end of each process's log (and each task log), to see why something did not happen."""
        for service in [*self.services.values(), *self.stopped]:
            print(f"----- {service.name} (pid {service.pid}) {service.log_path} -----\n{service.tail(lines)}")
        for path in sorted((self.home / "logs").rglob("dag_id=*/**/*.log")):
            text = path.read_text(errors="replace").splitlines()
            print(f"----- {path.relative_to(self.home)} -----\n" + "\n".join(text[-lines:]))

    @contextlib.contextmanager
    def logs_on_failure(self, lines: int = 40) -> Iterator[None]:
        """Print every log tail if the block raises (pytest shows it with the failure), then re-raise."""
        try:
            yield
        except BaseException:
            self.print_log_tails(lines)
            raise

    def check_alive(self) -> None:
        for service in self.services.values():
            if not service.alive():
                raise DeploymentError(
                    f"airflow {service.name} exited with {service.proc.returncode}; "
                    f"log {service.log_path}:\n{service.tail()}"
                )

    # -- triggerers ------------------------------------------------------------------------------

    @property
    def triggerers(self) -> list[Service]:
        """The running triggerers, oldest first."""
        return [s for name, s in self.services.items() if name.startswith("triggerer")]

    @property
    def triggerer(self) -> Service:
        """The newest running triggerer."""
        running = self.triggerers
        if not running:
            raise DeploymentError("no triggerer is running; start one with start_triggerer()")
        return running[-1]

    def start_triggerer(self, wait: bool = True, timeout: float = 90.0) -> Service:
        """Start one more triggerer (log ``triggerer.log``, then ``triggerer-2.log``, ...). With ``wait``,
        until its job is alive; ``service.job_id`` is then its triggerer job id, the ``<id>`` of the
        ``attempt=N.log.trigger.<id>.log`` files it writes."""
        if self.serve_logs:
            if self.triggerers:
                raise DeploymentError("with serve_logs=True two triggerers would share one log server port")
            wait_until(  # a killed triggerer's serve-logs child must be gone first
                f"trigger log server port {self.trigger_log_port} to be free",
                lambda: port_is_free(self.trigger_log_port),
                timeout=30,
            )
        self._triggerers += 1
        name = "triggerer" if self._triggerers == 1 else f"triggerer-{self._triggerers}"
        argv = [self.airflow, "triggerer", *self._skip_serve_logs]
        service = Service(name, argv, self.home / f"{name}.log", self.env, self.home)
        self.services[name] = service
        if wait:
            self.wait_for_triggerer_job(service, timeout)
        return service

    def wait_for_triggerer_job(self, service: Service, timeout: float = 90.0) -> int:
        """Until a TriggererJob started after ``service`` and not claimed by another is alive; its id."""
        claimed = {s.job_id for s in [*self.services.values(), *self.stopped] if s.job_id is not None}

        def check() -> int | None:
            self.check_alive()
            jobs = self.api("GET", "/jobs", params={"job_type": "TriggererJob", "limit": 100})["jobs"]
            for job in sorted(jobs, key=lambda j: j["id"]):
                started, beat = _utc(job.get("start_date")), _utc(job.get("latest_heartbeat"))
                if job["id"] in claimed or job.get("state") != "running" or started is None:
                    continue
                if started >= service.started_at and beat is not None:
                    return int(job["id"])
            return None

        service.job_id = wait_until(f"{service.name} to heartbeat", check, timeout)
        return service.job_id

    def kill_triggerer(self, service: Service | None = None, sig: int = signal.SIGKILL) -> list[int]:
        """Send ``sig`` to a triggerer (default the newest) and every child it has (its trigger runner,
        and the ``serve-logs`` process that would keep the log port), by PID, as a crash would; returns
        the PIDs signalled."""
        service = service or self.triggerer
        self.services.pop(service.name)
        pids = service.signal_tree(sig)
        gone = [psutil.Process(pid) for pid in pids if psutil.pid_exists(pid)]
        psutil.wait_procs(gone, timeout=30)
        service.reap()
        self.stopped.append(service)
        return pids

    # -- health ------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        response = self._http.get(f"{self.base_url}/api/v2/monitor/health", timeout=10)
        response.raise_for_status()
        return response.json()

    def wait_healthy(self, components: tuple[str, ...], timeout: float) -> dict[str, Any]:
        """Until the api-server answers and each component (``scheduler``, ``triggerer``,
        ``dag_processor``, ``metadatabase``) reports healthy; the health document."""

        def check() -> dict[str, Any] | None:
            self.check_alive()
            try:
                health = self.health()
            except (requests.RequestException, ValueError):
                return None
            ok = all((health.get(c) or {}).get("status") == "healthy" for c in components)
            return health if ok else None

        return wait_until(f"{', '.join(components)} to be healthy", check, timeout)

    # -- REST API ----------------------------------------------------------------------------------

    def token(self) -> str:
        """A JWT for the REST API (SimpleAuthManager with all_admins: GET /auth/token needs no login)."""
        if self._token is None:
            response = self._http.get(f"{self.base_url}/auth/token", timeout=30)
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST API call (``path`` after ``/api/v2``); the decoded JSON, or DeploymentError.

        SQLite serialises the writes of four processes: a write the api-server makes beside the call
        (its audit log row) can find the database locked and answer 500 "Database error". An idempotent
        call (GET, PATCH) is sent again then, a few times; a POST never is.
        """
        kwargs.setdefault("timeout", 30)
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        url = f"{self.base_url}/api/v2{path}"
        for attempt in range(DB_ERROR_RETRIES + 1):
            response = self._http.request(method, url, headers=headers, **kwargs)
            locked = response.status_code == 500 and "Database error" in response.text
            if not (locked and method in ("GET", "PATCH") and attempt < DB_ERROR_RETRIES):
                break
            time.sleep(1.0 + attempt)
        if response.status_code >= 400:
            raise DeploymentError(f"{method} /api/v2{path} -> {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def import_errors(self) -> list[dict[str, Any]]:
        return self.api("GET", "/importErrors")["import_errors"]

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Until the dag-processor has parsed ``dag_id`` (an import error fails at once, with its text)."""

        def check() -> dict[str, Any] | None:
            self.check_alive()
            try:
                return self.api("GET", f"/dags/{dag_id}")
            except DeploymentError:
                errors = self.import_errors()
                if errors:
                    raise DeploymentError(f"DAG files failed to import: {errors}") from None
                return None

        return wait_until(f"DAG {dag_id} to be parsed", check, timeout)

    def unpause(self, dag_id: str) -> None:
        """New DAGs start paused; a paused DAG's runs are created but never scheduled."""
        self.wait_for_dag(dag_id)
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, run_id: str | None = None) -> str:
        """A manual run (no logical date) with ``conf``; its run_id."""
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf or {})}
        if run_id is not None:
            body["dag_run_id"] = run_id
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of ``dag_id`` (state, run_type, conf, ...), oldest first."""
        return self.api("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "id", "limit": 100})["dag_runs"]

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def triggering_asset_events(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The Asset events that created an asset-triggered run (uri, extra, source task, ...)."""
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/upstreamAssetEvents")["asset_events"]

    def asset_events(self, **filters: Any) -> list[dict[str, Any]]:
        """Asset events, e.g. ``asset_events(source_dag_id=..., source_run_id=...)``."""
        return self.api("GET", "/assets/events", params={"limit": 100, **filters})["asset_events"]

    def wait_for_new_run(
        self, dag_id: str, known: set[str] | None = None, timeout: float = 120.0
    ) -> dict[str, Any]:
        """Until a run of ``dag_id`` appears that is not in ``known`` (run_ids), e.g. one an Asset
        event created; the run."""
        known = set(known or ())

        def check() -> dict[str, Any] | None:
            self.check_alive()
            return next((r for r in self.runs(dag_id) if r["dag_run_id"] not in known), None)

        return wait_until(f"a new run of {dag_id}", check, timeout)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 180.0) -> str:
        """Until the run is success or failed; its state."""

        def check() -> str | None:
            self.check_alive()
            state = self.run(dag_id, run_id)["state"]
            return state if state in TERMINAL_RUN_STATES else None

        return wait_until(f"run {run_id} of {dag_id} to finish", check, timeout, interval=1.0)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run (all pages), as the REST API returns them."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        tis: list[dict[str, Any]] = []
        while True:
            page = self.api("GET", path, params={"limit": 100, "offset": len(tis), "order_by": "map_index"})
            tis.extend(page["task_instances"])
            if not page["task_instances"] or len(tis) >= page["total_entries"]:
                return tis

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """task_id (``task_id[map_index]`` for mapped tasks) -> state."""
        return {_task_key(ti): ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def triggerer_ids(self, dag_id: str, run_id: str) -> dict[str, int | None]:
        """task key (as in task_states) -> id of the triggerer job its trigger is assigned to, for the
        task instances that have a trigger (deferred ones); None while unassigned."""
        tis = self.task_instances(dag_id, run_id)
        return {_task_key(ti): ti["trigger"].get("triggerer_id") for ti in tis if ti.get("trigger")}

    def wait_for_task_state(
        self, dag_id: str, run_id: str, task_id: str, state: str, timeout: float = 120.0
    ) -> None:
        def check() -> bool:
            self.check_alive()
            current = self.task_states(dag_id, run_id).get(task_id)
            if current in ("failed", "upstream_failed", "success") and current != state:
                raise DeploymentError(f"task {task_id} of run {run_id} is {current}, never {state}")
            return current == state

        wait_until(f"task {task_id} of run {run_id} to be {state}", check, timeout)

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        """A task's XCom value, as the task pushed it (JSON-decoded)."""
        entry = self.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"map_index": map_index, "deserialize": "true", "stringify": "false"},
        )
        value = entry["value"]
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return json.loads(value)
        return value

    # -- logs --------------------------------------------------------------------------------------

    def task_log_files(
        self, dag_id: str, run_id: str, task_id: str, map_index: int | None = None
    ) -> list[Path]:
        """The task's log files, the trigger's included (one mapped instance's with ``map_index``).

        Airflow 3 writes ``logs/dag_id=D/run_id=R/task_id=T[/map_index=M]/attempt=N.log`` for each try
        (the worker's part), and each triggerer that ran the task's trigger writes its lines next to it,
        in ``attempt=N.log.trigger.<triggerer job id>.log``.
        """
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index is not None and map_index >= 0:
            folder = folder / f"map_index={map_index}"
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.rglob("*.log") if p.is_file())

    def task_log_records(
        self, dag_id: str, run_id: str, task_id: str, map_index: int | None = None
    ) -> list[dict[str, Any]]:
        """Every record of the task's log files (JSON lines), each with ``_file`` (the file's name)."""
        records = []
        for path in self.task_log_files(dag_id, run_id, task_id, map_index):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    record = {"event": line}
                if not isinstance(record, dict):
                    record = {"event": line}
                record["_file"] = path.name
                records.append(record)
        return records

    def task_log_text(self, dag_id: str, run_id: str, task_id: str, map_index: int | None = None) -> str:
        """The task's log files as they are (exceptions included), joined."""
        files = self.task_log_files(dag_id, run_id, task_id, map_index)
        return "\n".join(p.read_text(errors="replace") for p in files)

    def all_log_text(self) -> str:
        """Every log file of the deployment (processes and tasks), to check that a secret is absent."""
        parts = []
        for path in sorted(self.home.rglob("*.log")):
            parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    # -- CLI ---------------------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """``airflow <args>`` with this deployment's environment; DeploymentError (with output) on failure."""
        result = subprocess.run(
            [self.airflow, *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr)[-4000:]
            raise DeploymentError(f"airflow {' '.join(args)} exited with {result.returncode}:\n{output}")
        return result
