"""The Airflow plugin: the ``/ftevents`` FastAPI app and the "Fine-tune" tab on task instance pages.

Airflow loads provider plugins in every component (scheduler, workers, triggerer, dag-processor), but
only the api-server serves the app, so the FastAPI app is built on its first request, not at import:
the other components never import FastAPI or the api-server's security code for it.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlparse

from airflow.plugins_manager import AirflowPlugin

try:
    from airflow.sdk.configuration import conf
except ImportError:  # Airflow 3.1
    from airflow.configuration import conf  # type: ignore[no-redef]

URL_PREFIX = "/ftevents"
VIEW_ROUTE = "fine-tune"


def base_path() -> str:
    """The path part of ``[api] base_url`` (``""`` at the root): hrefs the browser follows need it."""
    base_url = conf.get("api", "base_url", fallback="/") or "/"
    path = urlparse(base_url).path if base_url.startswith(("http://", "https://")) else base_url
    return path.rstrip("/")


def view_href() -> str:
    """The iframe URL; the UI fills the placeholders (and leaves ``{MAP_INDEX}`` for unmapped tasks)."""
    return f"{base_path()}{URL_PREFIX}/view/{{DAG_ID}}/{{RUN_ID}}/{{TASK_ID}}?map_index={{MAP_INDEX}}"


class LazyApp:
    """An ASGI app that builds the real FastAPI app on its first call (in the api-server only)."""

    def __init__(self) -> None:
        self._app: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from airflow_ftevents.ui.app import create_app

                    self._app = create_app()
        return self._app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._get()(scope, receive, send)


class FineTuneViewPlugin(AirflowPlugin):
    """Live view of a fine-tuning job (status, loss chart, checkpoints, events) on its task instance."""

    name = "airflow_ftevents_ui"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "Fine-tune view (airflow-ftevents)"}]
    external_views = [
        {
            "name": "Fine-tune",
            "href": view_href(),
            "destination": "task_instance",
            "url_route": VIEW_ROUTE,
            "icon": f"{base_path()}{URL_PREFIX}/static/icon.svg",
        }
    ]
