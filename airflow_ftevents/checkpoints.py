"""Where a deferred trigger keeps its checkpoint: an XCom of its own task instance.

The triggerer reads and writes XCom for its triggers through the task SDK, asynchronously, on every
supported release (3.3 has ``XCom.aget_one``/``XCom.aset``; 3.1 and 3.2 take the same messages through
``SUPERVISOR_COMMS.asend``), so nothing blocks the event loop. A trigger run without a task instance
or outside a triggerer (``dag.test()`` runs triggers in process) has no store and keeps no checkpoint.
The XCom is deleted by the task when it resumes, so it never outlives the wait.
"""

from __future__ import annotations

import logging
from typing import Any

CHECKPOINT_KEY = "ftevents_trigger_checkpoint"

log = logging.getLogger(__name__)


def _comms() -> Any:
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:  # pragma: no cover - every supported release has it
        return None
    return getattr(task_runner, "SUPERVISOR_COMMS", None)


class TriggerCheckpointStore:
    """Read and write one JSON value as the XCom ``CHECKPOINT_KEY`` of the trigger's task instance."""

    def __init__(self, task_instance: Any) -> None:
        self._ti = task_instance

    @property
    def available(self) -> bool:
        comms = _comms()
        return (
            self._ti is not None
            and getattr(self._ti, "run_id", None) is not None
            and comms is not None
            and hasattr(comms, "asend")
        )

    def _where(self) -> dict[str, Any]:
        map_index = getattr(self._ti, "map_index", -1)
        return {
            "dag_id": self._ti.dag_id,
            "task_id": self._ti.task_id,
            "run_id": self._ti.run_id,
            "map_index": -1 if map_index is None else map_index,
        }

    async def load(self) -> Any:
        from airflow.sdk.execution_time.xcom import XCom

        where = self._where()
        if hasattr(XCom, "aget_one"):  # Airflow 3.3+
            return await XCom.aget_one(key=CHECKPOINT_KEY, **where)
        from airflow.sdk.execution_time.comms import GetXCom, XComResult

        msg = await _comms().asend(GetXCom(key=CHECKPOINT_KEY, **where))
        if not isinstance(msg, XComResult) or msg.value is None:
            return None
        return XCom.deserialize_value(msg)

    async def save(self, value: Any) -> None:
        from airflow.sdk.execution_time.xcom import XCom

        where = self._where()
        if hasattr(XCom, "aset"):  # Airflow 3.3+
            await XCom.aset(CHECKPOINT_KEY, value, **where)
            return
        from airflow.sdk.execution_time.comms import SetXCom

        serialized = XCom.serialize_value(value=value, key=CHECKPOINT_KEY, **where)
        await _comms().asend(SetXCom(key=CHECKPOINT_KEY, value=serialized, **where))


async def task_instance_state(task_instance: Any) -> str | None:
    """The current state of a trigger's task instance, asked of the triggerer; ``None`` if unknown."""
    comms = _comms()
    if task_instance is None or comms is None or not hasattr(comms, "asend"):
        return None
    try:
        from airflow.sdk.execution_time.comms import GetTaskStates

        map_index = getattr(task_instance, "map_index", -1)
        map_index = -1 if map_index is None else map_index
        result = await comms.asend(
            GetTaskStates(
                dag_id=task_instance.dag_id,
                task_ids=[task_instance.task_id],
                run_ids=[task_instance.run_id],
                map_index=map_index,
            )
        )
        states = getattr(result, "task_states", None) or {}
        # keyed by run id, then task id (``<task_id>_<map_index>`` for a mapped task instance)
        key = task_instance.task_id if map_index < 0 else f"{task_instance.task_id}_{map_index}"
        state = states.get(task_instance.run_id, {}).get(key)
    except Exception as exc:  # unknown is "do not cancel"
        log.warning("Could not read the state of task instance %s: %s", task_instance, exc)
        return None
    return None if state is None else str(getattr(state, "value", state))


def seed_checkpoint(context: Any, progress: Any) -> None:
    """Store the state a trigger starts from as its first checkpoint, as the task defers.

    So the trigger always finds one when it starts: the triggerer logs a missing XCom at error level,
    which would alarm whoever reads its log on every new trigger.
    """
    context["ti"].xcom_push(key=CHECKPOINT_KEY, value=progress)


def delete_checkpoint(context: Any) -> None:
    """Drop the checkpoint once the task resumed (sync: it runs in the task, not the triggerer)."""
    ti = context["ti"]
    try:
        from airflow.sdk.execution_time.xcom import XCom

        map_index = getattr(ti, "map_index", -1)
        XCom.delete(
            key=CHECKPOINT_KEY,
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=-1 if map_index is None else map_index,
        )
    except Exception as exc:  # cleanup must never hide the task's own outcome
        log.debug("Could not delete the trigger checkpoint: %s", exc)
