"""Which fine-tuning job (and connection) a task instance is about, read from Airflow's metadata DB.

The job id, first found wins:

1. the task's return value (XCom ``return_value``) ``job_id``: what the finished task reported;
2. the dashboard link the task stored when it started (XCom of ``FineTuneJobLink``): the id it used;
3. the rendered ``job_id`` template field (written when the task started);
4. the ``job_id`` of the DAG's serialized task, when it is a plain string (no Jinja).

The connection id: the rendered ``conn_id`` field, then the serialized task's ``conn_id`` (both exist
only when ``conn_id`` is a template field), else the operators' default ``openai_default``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from airflow_ftevents.links import FineTuneJobLink, dashboard_url

DEFAULT_CONN_ID = "openai_default"
TASK_TYPES = frozenset({"FineTuneJobSensor", "FineTuneJobOperator", "FineTuneEventsExportOperator"})
RETURN_KEY = "return_value"
LINK_KEY = FineTuneJobLink().xcom_key
LINK_PREFIX = dashboard_url("")


class ViewError(Exception):
    """An answer other than 200, with a code the page can act on and a message for the user."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class TaskJob:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    task_type: str
    state: str | None
    job_id: str
    job_id_source: str
    conn_id: str
    conn_id_source: str


def parse_map_index(value: str | None) -> int:
    """The UI leaves ``{MAP_INDEX}`` unreplaced for unmapped tasks: anything not an integer is -1."""
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return -1


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip() and value.strip() != "None":
        return value.strip()
    return None


def _static(value: Any) -> str | None:
    text = _text(value)
    if text is None or "{{" in text or "{%" in text:
        return None
    return text


def job_id_from_link(url: Any) -> str | None:
    if isinstance(url, str) and url.startswith(LINK_PREFIX) and len(url) > len(LINK_PREFIX):
        return _text(unquote(url[len(LINK_PREFIX) :]))
    return None


def is_fine_tune_task(task: dict[str, Any] | None, operator: str | None) -> bool:
    """One of our operators, or a subclass (it inherits our extra link)."""
    if operator in TASK_TYPES:
        return True
    if not task:
        return False
    if task.get("task_type") in TASK_TYPES or task.get("_task_type") in TASK_TYPES:
        return True
    links = task.get("_operator_extra_links") or {}
    names = [*links.keys(), *links.values()] if isinstance(links, dict) else [str(x) for x in links]
    return any(FineTuneJobLink.name == n or "FineTuneJobLink" in str(n) for n in names)


def choose_job_id(
    return_value: Any, link: Any, rendered: dict[str, Any], task: dict[str, Any] | None
) -> tuple[str, str] | None:
    """(job id, where it came from), in the order of the module docstring."""
    if isinstance(return_value, dict) and _text(return_value.get("job_id")):
        return str(_text(return_value.get("job_id"))), "the task's return value"
    if job_id := job_id_from_link(link):
        return job_id, "the task's job link"
    if job_id := _text(rendered.get("job_id")):
        return job_id, "the rendered job_id field"
    if task and (job_id := _static(task.get("job_id"))):
        return job_id, "the DAG's job_id"
    return None


def choose_conn_id(rendered: dict[str, Any], task: dict[str, Any] | None) -> tuple[str, str]:
    if conn_id := _text(rendered.get("conn_id")):
        return conn_id, "the rendered conn_id field"
    if task and (conn_id := _static(task.get("conn_id"))):
        return conn_id, "the DAG's conn_id"
    return DEFAULT_CONN_ID, "the default"


def _serialized_task(session: Any, ti: Any) -> dict[str, Any] | None:
    """The task as serialized in the DAG version the task instance ran with (raw JSON, no import)."""
    from airflow.models.serialized_dag import SerializedDagModel
    from sqlalchemy import select

    query = select(SerializedDagModel)
    version_id = getattr(ti, "dag_version_id", None)
    if version_id is not None:
        query = query.where(SerializedDagModel.dag_version_id == version_id)
    else:
        query = query.where(SerializedDagModel.dag_id == ti.dag_id)
    model = session.scalars(query.order_by(SerializedDagModel.created_at.desc()).limit(1)).first()
    data = model.data if model is not None else None
    for item in ((data or {}).get("dag") or {}).get("tasks") or []:
        fields = item.get("__var", item) if isinstance(item, dict) else None
        if isinstance(fields, dict) and fields.get("task_id") == ti.task_id:
            return fields
    return None


def _xcoms(session: Any, ti: Any) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    rows = session.execute(
        select(XComModel.key, XComModel.value).where(
            XComModel.dag_id == ti.dag_id,
            XComModel.run_id == ti.run_id,
            XComModel.task_id == ti.task_id,
            XComModel.map_index == ti.map_index,
            XComModel.key.in_([RETURN_KEY, LINK_KEY]),
        )
    ).all()
    values = {}
    for row in rows:
        try:
            values[row.key] = XComModel.deserialize_value(row)
        except Exception:  # an XCom we cannot read is one source less, not a broken page
            continue
    return values


def resolve_task_job(dag_id: str, run_id: str, task_id: str, map_index: int) -> TaskJob:
    """The task instance's job and connection, or a ViewError that says why there is none."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    where = f"{dag_id} / {run_id} / {task_id}" + (f" [{map_index}]" if map_index >= 0 else "")
    with create_session() as session:
        ti = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_id,
                TaskInstance.run_id == run_id,
                TaskInstance.task_id == task_id,
                TaskInstance.map_index == map_index,
            )
        ).first()
        if ti is None:
            raise ViewError(404, "task_instance_not_found", f"No task instance {where}")
        task = _serialized_task(session, ti)
        task_type = str((task or {}).get("task_type") or ti.operator or "unknown")
        if not is_fine_tune_task(task, ti.operator):
            raise ViewError(
                404,
                "not_a_fine_tune_task",
                f"Task {task_id} is of type {task_type}; the Fine-tune view shows FineTuneJobSensor, "
                "FineTuneJobOperator and FineTuneEventsExportOperator tasks",
            )
        xcoms = _xcoms(session, ti)
        rendered = RenderedTaskInstanceFields.get_templated_fields(ti, session=session) or {}
        state = str(ti.state.value if hasattr(ti.state, "value") else ti.state) if ti.state else None
    found = choose_job_id(xcoms.get(RETURN_KEY), xcoms.get(LINK_KEY), rendered, task)
    if found is None:
        raise ViewError(
            404,
            "job_id_unknown",
            f"The job of {where} is not known yet: its job_id is a template, rendered when the task "
            "runs; open this view again once the task has started",
        )
    conn_id, conn_source = choose_conn_id(rendered, task)
    return TaskJob(
        dag_id, run_id, task_id, map_index, task_type, state, found[0], found[1], conn_id, conn_source
    )
