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
