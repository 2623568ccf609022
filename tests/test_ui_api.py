"""The Fine-tune view's JSON API, served by a real ``airflow api-server`` with the plugin installed.

One api-server per module (SimpleAuthManager with three users: ``admin``, ``viewer`` (read-only, may
read every DAG) and ``nobody`` (no role: SimpleAuthManager grants it nothing)), on a private
AIRFLOW_HOME whose DAG runs come from ``airflow dags test`` against the simulator. The harness
(``UiAirflow``) is shared with ``tests/test_ui_browser.py``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import API_KEY, airflow_env, connection_json
from deployment import Service, free_port, wait_until

from airflow_ftevents.links import dashboard_url
from airflow_ftevents.simulator import JobSpec, Simulator
from airflow_ftevents.ui.app import metric_point
from airflow_ftevents.ui.resolve import choose_conn_id, choose_job_id, is_fine_tune_task, parse_map_index

pytestmark = pytest.mark.airflow

DAG_ID = "ftevents_ui"
USERS = "admin:admin,viewer:viewer,nobody:"
WRONG_KEY = "sk-wrong-ftevents-ui-Hq2Vx8"  # the key of a second connection, refused by the simulator
DAG_FILE = textwrap.dedent(
    """
    import datetime

    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from airflow_ftevents.sensors import FineTuneJobSensor



    class OtherConnSensor(FineTuneJobSensor):
        # A subclass whose conn_id is a template field, as a user may write.
        template_fields = (*FineTuneJobSensor.template_fields, "conn_id")


    with DAG("ftevents_ui", schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False):
        wait = FineTuneJobSensor(
            task_id="wait",
            job_id="{{ dag_run.conf['job_id'] }}",
            mode="poke",
            poke_interval=1,
            timeout=600,
            retries=0,
        )
        other = OtherConnSensor(
            task_id="wait_other_conn",
            job_id="{{ dag_run.conf['job_id'] }}",
            conn_id="{{ 'ftevents_ui_' + 'wrong_key' }}",
            mode="poke",
            poke_interval=1,
            timeout=600,
            retries=0,
        )
        wait >> other >> EmptyOperator(task_id="after", trigger_rule="all_done")
    """
)


class UiAirflow:
    """``airflow api-server`` on a fresh home (migrated SQLite, the test DAG), stopped by PID."""

    def __init__(self, home: Path, db_template: Path, sim_url: str) -> None:
        self.home = home
        self.dags = home / "dags"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.airflow = str(Path(sys.executable).with_name("airflow"))
        home.mkdir(parents=True, exist_ok=True)
        self.dags.mkdir(exist_ok=True)
        (self.dags / "ftevents_ui_dag.py").write_text(DAG_FILE)
        shutil.copy(db_template, home / "airflow.db")
        self.env = airflow_env(
            home,
            AIRFLOW__CORE__DAGS_FOLDER=str(self.dags),
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=USERS,
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
            AIRFLOW__API_AUTH__JWT_SECRET="ftevents-ui-test-jwt-secret-0123456789abcdef",
            AIRFLOW__API__SECRET_KEY="ftevents-ui-test-secret-key-0123456789",
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.port),
            AIRFLOW__API__BASE_URL=self.base_url,
            AIRFLOW__API__WORKERS="1",
            AIRFLOW_CONN_OPENAI_DEFAULT=connection_json(sim_url),
            AIRFLOW_CONN_FTEVENTS_UI_WRONG_KEY=connection_json(sim_url, api_key=WRONG_KEY),
        )
        self.api: Service | None = None
        self.runs: list[subprocess.Popen[bytes]] = []
        self._tokens: dict[str, str] = {}

    def start(self, timeout: float = 180.0) -> UiAirflow:
        argv = [self.airflow, "api-server", "--port", str(self.port), "--host", "127.0.0.1"]
        self.api = Service("api-server", argv, self.home / "api-server.log", self.env, self.home)

        def healthy() -> bool:
            if self.api is not None and not self.api.alive():
                raise RuntimeError(f"api-server exited:\n{self.api.tail()}")
            try:
                return requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).ok
            except requests.RequestException:
                return False

        wait_until("the api-server to answer", healthy, timeout)
        return self

    def stop(self) -> None:
        for proc in self.runs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        if self.api is not None:
            self.api.stop()

    # -- DAG runs ----------------------------------------------------------------------------------

    def start_run(self, job_id: str) -> subprocess.Popen[bytes]:
        """``airflow dags test`` of the DAG for ``job_id`` in the background (the sensor polls live)."""
        log = open(self.home / f"dags-test-{job_id}.log", "wb")  # noqa: SIM115 (the child keeps it)
        proc = subprocess.Popen(
            [self.airflow, "dags", "test", DAG_ID, "-c", json.dumps({"job_id": job_id})],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.home,
        )
        log.close()
        self.runs.append(proc)
        return proc

    def run_id_for(self, job_id: str, timeout: float = 180.0) -> str:
        """The run of ``job_id`` once ``airflow dags test`` created it (its tasks may not have started)."""

        def check() -> str | None:
            response = self.get(f"/api/v2/dags/{DAG_ID}/dagRuns", "admin", limit=100)
            if response.status_code != 200:
                return None
            for run in response.json()["dag_runs"]:
                if run["dag_id"] == DAG_ID and (run.get("conf") or {}).get("job_id") == job_id:
                    return run["dag_run_id"]
            return None

        return wait_until(f"the DAG run of {job_id}", check, timeout, interval=1.0)

    def run_to_end(self, job_id: str, timeout: float = 240.0) -> str:
        proc = self.start_run(job_id)
        proc.wait(timeout=timeout)
        return self.run_id_for(job_id, timeout=10)

    # -- HTTP --------------------------------------------------------------------------------------

    def password(self, user: str) -> str:
        return json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())[user]

    def token(self, user: str) -> str:
        if user not in self._tokens:
            response = requests.post(
                f"{self.base_url}/auth/token",
                json={"username": user, "password": self.password(user)},
                timeout=30,
            )
            response.raise_for_status()
            self._tokens[user] = response.json()["access_token"]
        return self._tokens[user]

    def get(self, path: str, user: str | None = None, token: str | None = None, **params: Any) -> Any:
        if user is not None:
            token = self.token(user)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(f"{self.base_url}{path}", headers=headers, params=params, timeout=60)

    def task_path(self, run_id: str, task_id: str = "wait") -> str:
        from urllib.parse import quote

        return f"/ftevents/api/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/{task_id}"


@pytest.fixture(scope="module")
def ui_sim() -> Iterator[Simulator]:
    with Simulator(api_key=API_KEY) as simulator:
        yield simulator


@contextlib.contextmanager
def running_ui_airflow(home: Path, db_template: Path, sim_url: str) -> Iterator[UiAirflow]:
    """A started ``UiAirflow``; everything it started is stopped by PID, its log shown on failure."""
    airflow = UiAirflow(home, db_template, sim_url)
    try:
        airflow.start()
        yield airflow
    except BaseException:
        if airflow.api is not None:
            print(airflow.api.tail(80))
        raise
    finally:
        airflow.stop()


@pytest.fixture(scope="module")
def ui_airflow(
    tmp_path_factory: pytest.TempPathFactory, migrated_airflow_db: Path, ui_sim: Simulator
) -> Iterator[UiAirflow]:
    with running_ui_airflow(
        tmp_path_factory.mktemp("ui-airflow"), migrated_airflow_db, ui_sim.base_url
    ) as airflow:
        yield airflow


@pytest.fixture(scope="module")
def finished_run(ui_airflow: UiAirflow, ui_sim: Simulator) -> tuple[str, str]:
    """(job_id, run_id) of a job that had finished before its sensor started."""
    job_id = ui_sim.add_job(JobSpec(job_id="ftjob-ui-finished", n_events=240, duration=0))
    return job_id, ui_airflow.run_to_end(job_id)


@pytest.fixture(scope="module")
def missing_run(ui_airflow: UiAirflow) -> tuple[str, str]:
    """(job_id, run_id) of a run whose job does not exist (the sensor fails, its link stays)."""
    job_id = "ftjob-ui-does-not-exist"
    return job_id, ui_airflow.run_to_end(job_id)


ENDPOINTS = ("/job", "/events")


def test_plugin_is_listed_with_its_task_instance_view(ui_airflow: UiAirflow) -> None:
    response = ui_airflow.get("/api/v2/plugins", "admin")
    assert response.status_code == 200
    plugin = next(p for p in response.json()["plugins"] if p["name"] == "airflow_ftevents_ui")
    assert [(v["name"], v["destination"], v["url_route"]) for v in plugin["external_views"]] == [
        ("Fine-tune", "task_instance", "fine-tune")
    ]
    assert plugin["external_views"][0]["href"] == (
        "/ftevents/view/{DAG_ID}/{RUN_ID}/{TASK_ID}?map_index={MAP_INDEX}"
    )
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/ftevents"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_no_token_is_401(ui_airflow: UiAirflow, finished_run: tuple[str, str], endpoint: str) -> None:
    response = ui_airflow.get(ui_airflow.task_path(finished_run[1]) + endpoint)
    assert response.status_code == 401
    assert response.json() == {"detail": "Not authenticated"}


def test_page_and_static_files_need_a_user(ui_airflow: UiAirflow, finished_run: tuple[str, str]) -> None:
    page = f"/ftevents/view/{DAG_ID}/{finished_run[1]}/wait"
    assert ui_airflow.get(page).status_code == 401
    assert ui_airflow.get("/ftevents/static/view.js").status_code == 401
    assert ui_airflow.get("/ftevents/static/view.js", "nobody").status_code == 200


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_forged_token_is_403(ui_airflow: UiAirflow, finished_run: tuple[str, str], endpoint: str) -> None:
    forged = ui_airflow.token("admin")[:-4] + "AAAA"
    response = ui_airflow.get(ui_airflow.task_path(finished_run[1]) + endpoint, token=forged)
    assert response.status_code == 403


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_user_without_dag_access_is_403(
    ui_airflow: UiAirflow, finished_run: tuple[str, str], endpoint: str
) -> None:
    path = ui_airflow.task_path(finished_run[1])
    assert ui_airflow.get("/api/v2/dags/" + DAG_ID, "nobody").status_code == 403  # Airflow's own answer
    response = ui_airflow.get(path + endpoint, "nobody")
    assert response.status_code == 403
    assert response.json() == {"detail": "Forbidden"}
    assert ui_airflow.get(f"/ftevents/view/{DAG_ID}/{finished_run[1]}/wait", "nobody").status_code == 403


@pytest.mark.parametrize("user", ["admin", "viewer"])
def test_readers_get_the_job(
    ui_airflow: UiAirflow, ui_sim: Simulator, finished_run: tuple[str, str], user: str
) -> None:
    job_id, run_id = finished_run
    response = ui_airflow.get(ui_airflow.task_path(run_id) + "/job", user)
    assert response.status_code == 200, response.text
    body = response.json()
    expected_job = ui_sim.job(job_id)
    assert body["task"] == {
        "dag_id": DAG_ID,
        "run_id": run_id,
        "task_id": "wait",
        "map_index": -1,
        "task_type": "FineTuneJobSensor",
        "state": "success",
        "job_id": job_id,
        "job_id_source": "the task's return value",
        "conn_id": "openai_default",
        "conn_id_source": "the rendered conn_id field",  # conn_id is a template field of the sensor
    }
    assert body["job"]["id"] == job_id
    assert body["job"]["status"] == "succeeded"
    assert body["job"]["terminal"] is True
    assert body["job"]["model"] == expected_job["model"]
    assert body["job"]["fine_tuned_model"] == expected_job["fine_tuned_model"]
    assert body["elapsed_seconds"] == expected_job["finished_at"] - expected_job["created_at"]


def test_chart_points_are_the_jobs_metrics_events(
    ui_airflow: UiAirflow, ui_sim: Simulator, finished_run: tuple[str, str]
) -> None:
    job_id, run_id = finished_run
    response = ui_airflow.get(ui_airflow.task_path(run_id) + "/events", "viewer")
    assert response.status_code == 200, response.text
    body = response.json()
    events = ui_sim.events(job_id)  # oldest first
    metrics = [e for e in events if e["type"] == "metrics"]
    expected = [
        {
            "step": e["data"]["step"],
            **{k: e["data"][k] for k in ("train_loss", "valid_loss", "full_valid_loss") if k in e["data"]},
        }
        for e in metrics
    ]
    assert body["points"] == expected
    assert body["total_steps"] == metrics[-1]["data"]["total_steps"] == len(expected)
    assert "full_valid_loss" in expected[-1]
    assert sum("valid_loss" in p for p in expected) >= 2
    newest = events[::-1][:50]
    assert body["events"] == [
        {k: e[k] for k in ("id", "created_at", "level", "message", "type")} for e in newest
    ]
    assert body["cursor"] == {
        "last_id": events[-1]["id"],
        "last_created_at": events[-1]["created_at"],
        "count": len(events),
    }


def test_a_cursor_at_the_end_gives_nothing_new(ui_airflow: UiAirflow, finished_run: tuple[str, str]) -> None:
    path = ui_airflow.task_path(finished_run[1]) + "/events"
    first = ui_airflow.get(path, "admin").json()
    again = ui_airflow.get(path, "admin", **{k: v for k, v in first["cursor"].items()}).json()
    assert again == {
        "job_id": finished_run[0],
        "points": [],
        "total_steps": None,
        "events": [],
        "cursor": first["cursor"],
    }


def test_no_secret_in_any_response(
    ui_airflow: UiAirflow, finished_run: tuple[str, str], missing_run: tuple[str, str]
) -> None:
    pages = []
    for run_id in (finished_run[1], missing_run[1]):
        for endpoint in ENDPOINTS:
            for user in ("admin", "viewer", "nobody", None):
                pages.append(ui_airflow.get(ui_airflow.task_path(run_id) + endpoint, user))
        pages.append(ui_airflow.get(f"/ftevents/view/{DAG_ID}/{run_id}/wait", "admin"))
    for name in ("view.js", "view.css", "view.html", "icon.svg"):
        pages.append(ui_airflow.get(f"/ftevents/static/{name}", "admin"))
    assert len(pages) == 2 * (2 * 4 + 1) + 4
    assert {p.status_code for p in pages} == {200, 401, 403, 404}
    for page in pages:
        assert API_KEY not in page.text
        assert API_KEY not in json.dumps(dict(page.headers))


def test_a_job_that_does_not_exist_is_a_clear_404(
    ui_airflow: UiAirflow, missing_run: tuple[str, str]
) -> None:
    job_id, run_id = missing_run
    for endpoint in ENDPOINTS:
        response = ui_airflow.get(ui_airflow.task_path(run_id) + endpoint, "admin")
        assert response.status_code == 404
        body = response.json()
        assert body["code"] == "job_not_found"
        assert body["detail"].startswith(
            f"Fine-tuning job '{job_id}' was not found through connection 'openai_default' "
            "(job id from the task's job link)"
        )


def test_other_tasks_and_unknown_task_instances_are_404(
    ui_airflow: UiAirflow, finished_run: tuple[str, str]
) -> None:
    run_id = finished_run[1]
    other = ui_airflow.get(ui_airflow.task_path(run_id, "after") + "/job", "admin")
    assert other.status_code == 404
    assert other.json() == {
        "detail": "Task after is of type EmptyOperator; the Fine-tune view shows FineTuneJobSensor, "
        "FineTuneJobOperator and FineTuneEventsExportOperator tasks",
        "code": "not_a_fine_tune_task",
    }
    unknown = ui_airflow.get(ui_airflow.task_path("no-such-run") + "/events", "admin")
    assert unknown.status_code == 404
    assert unknown.json() == {
        "detail": f"No task instance {DAG_ID} / no-such-run / wait",
        "code": "task_instance_not_found",
    }
    mapped = ui_airflow.get(ui_airflow.task_path(run_id) + "/job", "admin", map_index="3")
    assert mapped.status_code == 404
    assert mapped.json()["detail"] == f"No task instance {DAG_ID} / {run_id} / wait [3]"


def test_the_page_carries_only_its_task_and_routes(
    ui_airflow: UiAirflow, finished_run: tuple[str, str]
) -> None:
    run_id = finished_run[1]
    # Airflow 3.1 leaves {MAP_INDEX} as it is for unmapped tasks: the page reads it as -1.
    response = ui_airflow.get(f"/ftevents/view/{DAG_ID}/{run_id}/wait", "viewer", map_index="{MAP_INDEX}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    config = json.loads(response.text.split('id="ftevents-config">', 1)[1].split("</script>", 1)[0])
    assert config == {
        "api": "/ftevents/api",
        "static": "/ftevents/static",
        "dag_id": DAG_ID,
        "run_id": run_id,
        "task_id": "wait",
        "map_index": -1,
    }
    assert "http://" not in response.text and "https://" not in response.text  # nothing from elsewhere
    script = ui_airflow.get("/ftevents/static/view.js", "viewer").text
    assert "http://" not in script.replace("http://www.w3.org/2000/svg", "") and "https://" not in script


def test_metric_point_ignores_other_events() -> None:
    assert metric_point({"type": "message", "data": {"step": 3}}) is None
    assert metric_point({"type": "metrics", "data": None}) is None
    assert metric_point({"type": "metrics", "data": {"step": "3", "train_loss": 1.0}}) is None
    assert metric_point({"type": "metrics", "data": {"step": 3, "train_loss": 1.5, "valid_loss": True}}) == {
        "step": 3,
        "train_loss": 1.5,
    }


def test_a_subclass_with_a_templated_conn_id_is_read_through_that_connection(
    ui_airflow: UiAirflow, finished_run: tuple[str, str]
) -> None:
    run_id = finished_run[1]
    response = ui_airflow.get(ui_airflow.task_path(run_id, "wait_other_conn") + "/job", "admin")
    assert response.status_code == 502
    body = response.json()
    assert body["code"] == "upstream_auth"
    assert body["detail"].startswith(
        "The API refused the credentials of connection 'ftevents_ui_wrong_key'; fix its key: "
    )
    assert WRONG_KEY not in response.text and API_KEY not in response.text


def test_job_id_sources_in_order() -> None:
    link = dashboard_url("ftjob-from link")
    task = {"job_id": "ftjob-static", "conn_id": "static_conn"}
    rendered = {"job_id": "ftjob-rendered", "conn_id": "rendered_conn"}
    assert choose_job_id({"job_id": "ftjob-done"}, link, rendered, task) == (
        "ftjob-done",
        "the task's return value",
    )
    assert choose_job_id(None, link, rendered, task) == ("ftjob-from link", "the task's job link")
    assert choose_job_id(None, "https://elsewhere/x", rendered, task) == (
        "ftjob-rendered",
        "the rendered job_id field",
    )
    assert choose_job_id(None, None, {"job_id": "None"}, task) == ("ftjob-static", "the DAG's job_id")
    assert choose_job_id(None, None, {}, {"job_id": "{{ ti.xcom_pull('create') }}"}) is None
    assert choose_conn_id(rendered, task) == ("rendered_conn", "the rendered conn_id field")
    assert choose_conn_id({}, task) == ("static_conn", "the DAG's conn_id")
    assert choose_conn_id({}, {"conn_id": "{{ var.value.c }}"}) == ("openai_default", "the default")


def test_map_index_and_task_kinds() -> None:
    assert [parse_map_index(v) for v in ("-1", "4", "{MAP_INDEX}", "", None)] == [-1, 4, -1, -1, -1]
    assert is_fine_tune_task(None, "FineTuneJobOperator")
    subclass = {
        "task_type": "Mine",
        "_operator_extra_links": {"OpenAI fine-tuning job": "_link_FineTuneJobLink"},
    }
    assert is_fine_tune_task(subclass, "Mine")
    assert not is_fine_tune_task({"task_type": "BashOperator", "_operator_extra_links": {}}, "BashOperator")
    assert not is_fine_tune_task(None, "BashOperator")
