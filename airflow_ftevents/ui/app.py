"""The FastAPI app of the "Fine-tune" view, mounted by the api-server under ``/ftevents``.

Every route needs an authenticated Airflow user; the page and its data also need read access to the
task instances of the DAG, checked by the api-server's own ``requires_access_dag`` dependency (so the
configured auth manager decides, not this package). The browser only ever talks to these routes: the
API key stays in the api-server, where the hook reads the task's connection.

Endpoints are plain ``def`` functions: FastAPI runs them in its threadpool, so the blocking hook and
database calls never stall the api-server's event loop.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import get_user, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

try:  # Airflow >= 3.2: the Task SDK raises its own
    from airflow.sdk.exceptions import AirflowNotFoundException
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowNotFoundException  # type: ignore[no-redef]

from airflow_ftevents.core.jobstate import is_terminal
from airflow_ftevents.core.paging import TailState
from airflow_ftevents.errors import (
    FineTuneEventsAuthError,
    FineTuneEventsConnectionError,
    FineTuneEventsError,
    FineTuneEventsNotFoundError,
)
from airflow_ftevents.ui.plugin import URL_PREFIX, base_path
from airflow_ftevents.ui.resolve import TaskJob, ViewError, parse_map_index, resolve_task_job

STATIC = Path(__file__).with_name("static")
MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".html": "text/html"}
NEWEST_EVENTS = 50  # events listed on the page; the chart gets every metrics point
HOOK_TIMEOUT = 20.0  # seconds per API request: someone is waiting for the page
HOOK_RETRIES = 1
LOSS_KEYS = ("train_loss", "valid_loss", "full_valid_loss")
JOB_FIELDS = (
    "id",
    "status",
    "model",
    "fine_tuned_model",
    "created_at",
    "finished_at",
    "estimated_finish",
    "trained_tokens",
    "error",
)
CHECKPOINT_FIELDS = ("id", "step_number", "fine_tuned_model_checkpoint", "created_at", "metrics")
EVENT_FIELDS = ("id", "created_at", "level", "message", "type")
NO_STORE = {"Cache-Control": "no-store"}
# Reading the connection: not defined, or its fields refused by ApiConfig (a clear ValueError).
CONNECTION_ERRORS = (AirflowNotFoundException, ValueError)

read_task_instance = Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE))


def metric_point(event: dict[str, Any]) -> dict[str, Any] | None:
    """The chart's point of a ``metrics`` event (step and the losses it reports), else None."""
    data = event.get("data")
    if event.get("type") != "metrics" or not isinstance(data, dict) or not isinstance(data.get("step"), int):
        return None
    point: dict[str, Any] = {"step": data["step"]}
    for key in LOSS_KEYS:
        value = data.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            point[key] = value
    return point


def total_steps(events: list[dict[str, Any]]) -> int | None:
    """The step count the newest metrics event announces: the chart's x axis spans the whole job."""
    for event in reversed(events):
        data = event.get("data")
        if (
            event.get("type") == "metrics"
            and isinstance(data, dict)
            and isinstance(data.get("total_steps"), int)
        ):
            return data["total_steps"]
    return None


def _event_row(event: dict[str, Any]) -> dict[str, Any]:
    return {key: event.get(key) for key in EVENT_FIELDS}


def _hook(task: TaskJob) -> Any:
    from airflow_ftevents.hooks import FineTuneEventsHook

    return FineTuneEventsHook(conn_id=task.conn_id, timeout=HOOK_TIMEOUT, max_retries=HOOK_RETRIES)


def _secret_of(hook: Any) -> str | None:
    """The connection's key, only to cut it out of answers; None when the connection cannot be read."""
    try:
        return hook.config.api_key or None
    except CONNECTION_ERRORS:
        return None


def _upstream_error(exc: FineTuneEventsError, task: TaskJob) -> ViewError:
    """What the browser is told when the API fails: status and a message, never the key."""
    if isinstance(exc, FineTuneEventsNotFoundError):
        return ViewError(
            404,
            "job_not_found",
            f"Fine-tuning job {task.job_id!r} was not found through connection {task.conn_id!r} "
            f"(job id from {task.job_id_source}): {exc.message}",
        )
    if isinstance(exc, FineTuneEventsAuthError):
        return ViewError(
            502,
            "upstream_auth",
            f"The API refused the credentials of connection {task.conn_id!r}; fix its key: {exc.message}",
        )
    if isinstance(exc, FineTuneEventsConnectionError):
        return ViewError(502, "upstream_unreachable", f"The API could not be reached: {exc.message}")
    return ViewError(502, "upstream_error", f"The API answered with an error: {exc}")


def _connection_error(exc: Exception, task: TaskJob) -> ViewError:
    if isinstance(exc, AirflowNotFoundException):
        return ViewError(
            500,
            "connection_not_found",
            f"Connection {task.conn_id!r} (from {task.conn_id_source}) is not defined on the api-server; "
            f"define it where the api-server can read it (metadata DB or a secrets backend): {exc}",
        )
    return ViewError(500, "connection_invalid", f"Connection {task.conn_id!r} cannot be used: {exc}")


def _scrubbed(error: ViewError, secret: str | None) -> ViewError:
    if secret and secret in error.detail:
        error.detail = error.detail.replace(secret, "***")
    return error


def _respond(body: dict[str, Any], secret: str | None) -> Response:
    """JSON, with a last guard: the connection's key is cut out if anything ever carried it."""
    text = json.dumps(body, default=str)
    if secret and secret in text:
        text = text.replace(secret, "***")
    return Response(text, media_type="application/json", headers=NO_STORE)


def _error_response(error: ViewError) -> JSONResponse:
    return JSONResponse(
        {"detail": error.detail, "code": error.code}, status_code=error.status, headers=NO_STORE
    )


def _task_dict(task: TaskJob) -> dict[str, Any]:
    return {
        "dag_id": task.dag_id,
        "run_id": task.run_id,
        "task_id": task.task_id,
        "map_index": task.map_index,
        "task_type": task.task_type,
        "state": task.state,
        "job_id": task.job_id,
        "job_id_source": task.job_id_source,
        "conn_id": task.conn_id,
        "conn_id_source": task.conn_id_source,
    }


def _checkpoints(hook: Any, job_id: str) -> tuple[list[dict[str, Any]], str | None]:
    """The job's checkpoints by step; an API without the route gives an empty list and a note."""
    try:
        if hasattr(hook, "iter_checkpoints"):
            found = list(hook.iter_checkpoints(job_id))
        else:  # a hook from before list_checkpoints: one request through its generic fetch
            from airflow_ftevents.core.api import checkpoints_request

            found = list(hook._fetch(checkpoints_request(job_id)).get("data") or [])
    except FineTuneEventsError as exc:
        return [], f"Checkpoints unavailable: {exc.message}"
    rows = [{key: c.get(key) for key in CHECKPOINT_FIELDS} for c in found if isinstance(c, dict)]
    rows.sort(key=lambda c: (c.get("step_number") or 0, str(c.get("id"))))
    return rows, None


def job_summary(task: TaskJob) -> Response:
    hook = _hook(task)
    secret = _secret_of(hook)
    try:
        try:
            job = hook.get_job(task.job_id)
        except FineTuneEventsError as exc:
            raise _scrubbed(_upstream_error(exc, task), secret) from None
        except CONNECTION_ERRORS as exc:
            raise _scrubbed(_connection_error(exc, task), secret) from None
        checkpoints, checkpoints_error = _checkpoints(hook, task.job_id)
    finally:
        hook.close()
    fields = {key: job.get(key) for key in JOB_FIELDS}
    fields["terminal"] = is_terminal(job.get("status"))
    created = job.get("created_at")
    end = job.get("finished_at") if fields["terminal"] else None
    elapsed = None
    if isinstance(created, (int, float)):
        elapsed = max(0, int((end if isinstance(end, (int, float)) else time.time()) - created))
    body = {
        "task": _task_dict(task),
        "job": fields,
        "elapsed_seconds": elapsed,
        "server_time": int(time.time()),
        "checkpoints": checkpoints,
        "checkpoints_error": checkpoints_error,
    }
    return _respond(body, secret)


def job_events(task: TaskJob, cursor: TailState | None) -> Response:
    """All metrics points and the newest events (no cursor), or only what is new since ``cursor``."""
    hook = _hook(task)
    secret = _secret_of(hook)
    try:
        try:
            if cursor is None:
                state = TailState()
                events = list(hook.iter_events(task.job_id))
                if events:
                    state.last_id = events[-1].get("id")
                    state.last_created_at = events[-1].get("created_at")
                    state.count = len(events)
            else:
                state = cursor
                events = list(hook.read_new_events(task.job_id, state))
        except FineTuneEventsError as exc:
            raise _scrubbed(_upstream_error(exc, task), secret) from None
        except CONNECTION_ERRORS as exc:
            raise _scrubbed(_connection_error(exc, task), secret) from None
    finally:
        hook.close()
    points = [p for p in (metric_point(e) for e in events) if p is not None]
    newest = [_event_row(e) for e in reversed(events[-NEWEST_EVENTS:])]
    body = {
        "job_id": task.job_id,
        "points": points,
        "total_steps": total_steps(events),
        "events": newest,
        "cursor": state.to_dict(),
    }
    return _respond(body, secret)


def _cursor(last_id: str | None, last_created_at: int | None, count: int) -> TailState | None:
    if not last_id:
        return None
    return TailState(last_id=last_id, last_created_at=last_created_at, count=count)


def _page(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    config = {
        "api": f"{base_path()}{URL_PREFIX}/api",
        "static": f"{base_path()}{URL_PREFIX}/static",
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
        "map_index": map_index,
    }
    # JSON inside <script>: no "<" may end the element early, whatever the ids contain.
    blob = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    template = (STATIC / "view.html").read_text(encoding="utf-8")
    return template.replace("__FTEVENTS_CONFIG__", blob).replace("__FTEVENTS_STATIC__", config["static"])


def create_app() -> FastAPI:
    """The sub-application; the api-server mounts it (see ``plugin.FineTuneViewPlugin``)."""
    app = FastAPI(
        title="airflow-ftevents fine-tune view",
        description="Data of the Fine-tune tab of task instances (airflow-ftevents).",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    static_files = {path.name: path for path in STATIC.iterdir() if path.suffix in MEDIA_TYPES}

    @app.exception_handler(ViewError)
    def _view_error(request: Any, exc: ViewError) -> JSONResponse:
        return _error_response(exc)

    @app.get("/static/{name}", dependencies=[Depends(get_user)])
    def static(name: str) -> Response:
        path = static_files.get(name)
        if path is None:
            raise HTTPException(404, f"No static file {name!r}")
        return Response(path.read_bytes(), media_type=MEDIA_TYPES[path.suffix])

    @app.get("/view/{dag_id}/{run_id}/{task_id}", dependencies=[read_task_instance])
    def view(dag_id: str, run_id: str, task_id: str, map_index: str = "-1") -> HTMLResponse:
        page = _page(dag_id, run_id, task_id, parse_map_index(map_index))
        return HTMLResponse(page, headers=NO_STORE)

    @app.get("/api/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/job", dependencies=[read_task_instance])
    def job(dag_id: str, run_id: str, task_id: str, map_index: str = "-1") -> Response:
        task = resolve_task_job(dag_id, run_id, task_id, parse_map_index(map_index))
        return job_summary(task)

    @app.get("/api/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/events", dependencies=[read_task_instance])
    def events(
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: str = "-1",
        last_id: str | None = Query(None, description="id of the newest event already shown"),
        last_created_at: int | None = Query(None, description="its created_at"),
        count: int = Query(0, ge=0, description="events shown so far"),
    ) -> Response:
        task = resolve_task_job(dag_id, run_id, task_id, parse_map_index(map_index))
        return job_events(task, _cursor(last_id, last_created_at, count))

    return app
