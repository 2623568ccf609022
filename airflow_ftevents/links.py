"""Extra link from the sensor and the export operator to the job's page in the OpenAI dashboard."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

DASHBOARD_URL = "https://platform.openai.com/finetune/{job_id}"


def dashboard_url(job_id: str) -> str:
    return DASHBOARD_URL.format(job_id=quote(str(job_id), safe=""))


class FineTuneJobLink(BaseOperatorLink):
    """The "OpenAI fine-tuning job" button; the URL is stored in XCom when the task runs."""

    name = "OpenAI fine-tuning job"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key=self.xcom_key) or ""

    @classmethod
    def persist(cls, context: Any, job_id: str) -> None:
        """Store the link for this task instance (the UI reads it from XCom)."""
        context["ti"].xcom_push(key=cls().xcom_key, value=dashboard_url(job_id))
